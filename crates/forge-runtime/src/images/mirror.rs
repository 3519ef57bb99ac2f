//! Which Debian mirror the base is bootstrapped from when the caller names none: the one this
//! host's apt already uses, so image builds reach nothing apt does not.

use std::path::{Path, PathBuf};

use crate::error::RuntimeError;

/// Where a host's apt sources are.
pub const DEFAULT_APT_DIR: &str = "/etc/apt";

/// The Debian mirror apt uses on this host for `suite`: the first `deb` source naming the
/// suite in `apt_dir/sources.list.d/*.sources` (deb822) or `apt_dir/sources.list` (one-line
/// form), else the first `deb` source that is not a security archive.
pub fn detect_mirror(apt_dir: &Path, suite: &str) -> Result<String, RuntimeError> {
    let mut sources: Vec<(String, Vec<String>)> = Vec::new();
    let dir = apt_dir.join("sources.list.d");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => sources.extend(parse_deb822(&text)),
            Some("list") => sources.extend(parse_one_line(&text)),
            _ => {}
        }
    }
    if let Ok(text) = std::fs::read_to_string(apt_dir.join("sources.list")) {
        sources.extend(parse_one_line(&text));
    }
    let usable = |uri: &str| {
        ["http://", "https://", "file:/"]
            .iter()
            .any(|p| uri.starts_with(p))
    };
    let named = sources
        .iter()
        .find(|(uri, suites)| usable(uri) && suites.iter().any(|s| s == suite));
    let any = || {
        sources
            .iter()
            .find(|(uri, _)| usable(uri) && !uri.contains("security"))
    };
    named
        .or_else(any)
        .map(|(uri, _)| uri.trim_end_matches('/').to_owned())
        .ok_or_else(|| RuntimeError::MirrorUnknown {
            apt_dir: apt_dir.display().to_string(),
        })
}

/// `(uri, suites)` of each `Types: deb` stanza (one per URI).
fn parse_deb822(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| -> Vec<String> {
            stanza
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.split_whitespace().map(str::to_owned).collect())
                })
                .unwrap_or_default()
        };
        if field("Enabled").first().is_some_and(|v| v == "no")
            || !field("Types").contains(&"deb".to_owned())
        {
            continue;
        }
        let suites = field("Suites");
        out.extend(field("URIs").into_iter().map(|u| (u, suites.clone())));
    }
    out
}

/// `(uri, [suite])` of each `deb [options] uri suite components…` line.
fn parse_one_line(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let rest = l.strip_prefix("deb ")?.trim_start();
            // Options in brackets may contain spaces: skip past the closing one.
            let rest = match rest.strip_prefix('[') {
                Some(r) => r.split_once(']')?.1,
                None => rest,
            };
            let mut words = rest.split_whitespace();
            Some((words.next()?.to_owned(), vec![words.next()?.to_owned()]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mirror_apt_uses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
             URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\
             Components: main\n\nTypes: deb deb-src\nURIs: http://deb.debian.org/debian/\n\
             Suites: bookworm bookworm-updates\nComponents: main\n",
        )
        .unwrap();
        assert_eq!(
            detect_mirror(dir.path(), "bookworm").unwrap(),
            "http://deb.debian.org/debian"
        );
        let other = tempfile::tempdir().unwrap();
        std::fs::write(
            other.path().join("sources.list"),
            "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            detect_mirror(other.path(), "bookworm").unwrap(),
            "http://mirror.example/debian"
        );
        let none = tempfile::tempdir().unwrap();
        let err = detect_mirror(none.path(), "bookworm").unwrap_err();
        assert!(err.to_string().contains("--debian-mirror"), "{err}");
    }
}
