//! Reading an image directory: its `image.toml` (a small subset of TOML: `key = "string"` and
//! one-line `key = ["a", "b"]`, `#` comments) and, for Dockerfile images, the `FROM` lines of
//! its `Dockerfile` (which catalog images it is built on, so they are built first and their
//! ids go into its digest).

use std::collections::HashMap;
use std::path::Path;

use super::{BaseRecipe, BusyboxSpec, DockerfileSpec, ImageDef, ImageKind};

/// A problem with the image catalog's files, naming the file (and line) that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{file}:{line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("image `{reference}` is defined twice: in {first} and in {second}")]
    Duplicate {
        reference: String,
        first: String,
        second: String,
    },
    #[error("image `{image}` is built on itself: {chain}")]
    Cycle { image: String, chain: String },
}

/// Keys every `image.toml` may have.
const COMMON_KEYS: [&str; 5] = ["name", "tag", "description", "kind", "aliases"];
const BUSYBOX_KEYS: [&str; 3] = ["cmd", "sysctls", "healthcheck"];
const BASE_KEYS: [&str; 3] = ["suite", "variant", "include"];

/// One `key = value` of an `image.toml`, with the line it is on.
struct Value {
    line: usize,
    items: Vec<String>,
}

/// Reads `dir/image.toml` (and `dir/Dockerfile` when there is one) into an [`ImageDef`].
pub(super) fn load_dir(dir: &Path) -> Result<ImageDef, CatalogError> {
    let toml = dir.join("image.toml");
    let file = toml.display().to_string();
    let text = std::fs::read_to_string(&toml).map_err(|e| CatalogError::Read {
        path: file.clone(),
        message: e.to_string(),
    })?;
    let dockerfile = dir.join("Dockerfile");
    let dockerfile_text = if dockerfile.is_file() {
        Some(
            std::fs::read_to_string(&dockerfile).map_err(|e| CatalogError::Read {
                path: dockerfile.display().to_string(),
                message: e.to_string(),
            })?,
        )
    } else {
        None
    };
    parse(&text, &file, dir, dockerfile_text.as_deref())
}

/// Parses an `image.toml` (`file` names it in errors); `dockerfile` is the text of the
/// directory's `Dockerfile`, if it has one.
pub(super) fn parse(
    text: &str,
    file: &str,
    dir: &Path,
    dockerfile: Option<&str>,
) -> Result<ImageDef, CatalogError> {
    let kv = parse_kv(text, file)?;
    let one = |k: &str| kv.get(k).and_then(|v| v.items.first().cloned());
    let list = |k: &str| kv.get(k).map(|v| v.items.clone()).unwrap_or_default();
    let missing = |field: &str| CatalogError::File {
        file: file.to_owned(),
        message: format!("missing `{field}`"),
    };
    let name = one("name").ok_or_else(|| missing("name"))?;
    let tag = one("tag").ok_or_else(|| missing("tag"))?;
    let reference = format!("{name}:{tag}");
    let line_of = |k: &str| kv.get(k).map(|v| v.line).unwrap_or(1);
    check_reference(&reference).map_err(|message| CatalogError::Line {
        file: file.to_owned(),
        line: line_of("name"),
        message,
    })?;
    let aliases = list("aliases");
    for a in &aliases {
        check_reference(a).map_err(|message| CatalogError::Line {
            file: file.to_owned(),
            line: line_of("aliases"),
            message: format!("alias: {message}"),
        })?;
    }
    let kind_name = one("kind");
    let (kind, extra_keys): (ImageKind, &[&str]) = match (kind_name.as_deref(), dockerfile) {
        (Some("debootstrap"), None) => {
            let recipe = BaseRecipe {
                suite: one("suite").ok_or_else(|| missing("suite"))?,
                variant: one("variant").unwrap_or_else(|| "minbase".into()),
                include: list("include"),
            };
            (ImageKind::Base(recipe), &BASE_KEYS)
        }
        (Some("debootstrap"), Some(_)) => {
            return Err(CatalogError::File {
                file: file.to_owned(),
                message: "a `debootstrap` image has no Dockerfile; remove one of them".into(),
            });
        }
        (None | Some("dockerfile"), Some(text)) => {
            let from = dockerfile_parents(text).map_err(|(line, message)| CatalogError::Line {
                file: dir.join("Dockerfile").display().to_string(),
                line,
                message,
            })?;
            (ImageKind::Dockerfile(DockerfileSpec { from }), &[])
        }
        (None | Some("busybox"), None) => {
            let spec = BusyboxSpec {
                cmd: kv
                    .get("cmd")
                    .map(|v| v.items.clone())
                    .unwrap_or_else(|| vec!["/bin/sh".into()]),
                sysctls: list("sysctls"),
                healthcheck: list("healthcheck"),
            };
            (ImageKind::Busybox(spec), &BUSYBOX_KEYS)
        }
        (Some("dockerfile"), None) => {
            return Err(CatalogError::File {
                file: file.to_owned(),
                message: format!(
                    "kind `dockerfile` but no {}",
                    dir.join("Dockerfile").display()
                ),
            });
        }
        (Some(other), _) => {
            return Err(CatalogError::Line {
                file: file.to_owned(),
                line: line_of("kind"),
                message: format!(
                    "unknown kind `{other}` (expected `busybox`, `dockerfile` or `debootstrap`)"
                ),
            });
        }
    };
    for (k, v) in &kv {
        if COMMON_KEYS.contains(&k.as_str()) || extra_keys.contains(&k.as_str()) {
            continue;
        }
        let message =
            if matches!(kind, ImageKind::Dockerfile(_)) && BUSYBOX_KEYS.contains(&k.as_str()) {
                format!(
                    "`{k}` of a Dockerfile image belongs in its Dockerfile ({})",
                    match k.as_str() {
                        "cmd" => "CMD",
                        "healthcheck" => "HEALTHCHECK",
                        _ => "LABEL forge.sysctls=\"...\"",
                    }
                )
            } else {
                format!("unknown key `{k}`")
            };
        return Err(CatalogError::Line {
            file: file.to_owned(),
            line: v.line,
            message,
        });
    }
    Ok(ImageDef {
        reference,
        description: one("description").unwrap_or_default(),
        dir: dir.to_path_buf(),
        aliases,
        kind,
    })
}

fn parse_kv(text: &str, file: &str) -> Result<HashMap<String, Value>, CatalogError> {
    let mut kv: HashMap<String, Value> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |message: String| CatalogError::Line {
            file: file.to_owned(),
            line: n + 1,
            message,
        };
        let line = strip_comment(line).trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| at("expected `key = value`".into()))?;
        let v = v.trim();
        let items = if let Some(inner) = v.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(unquote)
                .collect::<Result<_, _>>()
        } else {
            unquote(v).map(|s| vec![s])
        }
        .map_err(at)?;
        let key = k.trim().to_owned();
        if kv.contains_key(&key) {
            return Err(at(format!("`{key}` is set twice")));
        }
        kv.insert(key, Value { line: n + 1, items });
    }
    Ok(kv)
}

fn strip_comment(line: &str) -> &str {
    let mut in_str = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
    }
    line
}

fn unquote(s: &str) -> Result<String, String> {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map(|s| s.replace("\\\"", "\"").replace("\\\\", "\\"))
        .ok_or(format!("expected a quoted string, got `{s}`"))
}

/// `repository:tag` as Docker accepts it for a local image (lowercase path components).
fn check_reference(reference: &str) -> Result<(), String> {
    let (repo, tag) = reference
        .rsplit_once(':')
        .ok_or(format!("`{reference}` is not `name:tag`"))?;
    let repo_ok = !repo.is_empty()
        && repo.split('/').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        });
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if repo_ok && tag_ok {
        Ok(())
    } else {
        Err(format!(
            "`{reference}` is not a valid image reference (lowercase `name[/name]:tag`)"
        ))
    }
}

/// The images a Dockerfile's stages are built `FROM`, in order, without `scratch` and
/// without references to its own earlier stages. A `FROM` with a build argument is refused:
/// the image's digest must know what it is built on. Errors carry the 1-based line.
pub(super) fn dockerfile_parents(text: &str) -> Result<Vec<String>, (usize, String)> {
    let mut stages: Vec<String> = Vec::new();
    let mut parents: Vec<String> = Vec::new();
    let mut logical = String::new();
    let mut start = 0;
    for (n, raw) in text.lines().enumerate() {
        if logical.is_empty() {
            start = n + 1;
            if raw.trim_start().starts_with('#') {
                continue;
            }
        }
        // Instructions continue over lines that end in a backslash.
        if let Some(head) = raw.trim_end().strip_suffix('\\') {
            logical.push_str(head);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        let line = std::mem::take(&mut logical);
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
        let image = rest
            .first()
            .ok_or((start, "FROM without an image".to_owned()))?;
        if image.contains('$') {
            return Err((
                start,
                format!("FROM `{image}` uses a build argument; name the image"),
            ));
        }
        let image = image.to_ascii_lowercase();
        let from_stage = stages.contains(&image);
        if let [_, as_kw, name] = rest.as_slice()
            && as_kw.eq_ignore_ascii_case("AS")
        {
            stages.push(name.to_ascii_lowercase());
        }
        if image != "scratch" && !from_stage {
            // A reference without a tag means `:latest`, as the builder reads it.
            let full = if image.rsplit('/').next().is_some_and(|l| l.contains(':')) {
                image
            } else {
                format!("{image}:latest")
            };
            if !parents.contains(&full) {
                parents.push(full);
            }
        }
    }
    Ok(parents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busybox(d: &ImageDef) -> &BusyboxSpec {
        match &d.kind {
            ImageKind::Busybox(b) => b,
            other => panic!("not busybox: {other:?}"),
        }
    }

    #[test]
    fn parses_busybox_image_toml() {
        let d = parse(
            "# web\nname = \"forge/web\"\ntag = \"1\" # t\ncmd = [\"/bin/httpd\", \"-f\"]\nsysctls = []\n",
            "web/image.toml",
            Path::new("/x"),
            None,
        )
        .unwrap();
        assert_eq!(d.reference, "forge/web:1");
        assert_eq!(busybox(&d).cmd, ["/bin/httpd", "-f"]);
        assert!(busybox(&d).sysctls.is_empty());
        assert!(busybox(&d).healthcheck.is_empty());
        let err = parse(
            "name = \"a\"\ntag = \"1\"\nfoo = \"x\"",
            "a/image.toml",
            Path::new("/x"),
            None,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "a/image.toml:3: unknown key `foo`");
        let err = parse("name = a", "a/image.toml", Path::new("/x"), None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("a/image.toml:1: expected a quoted"),
            "{err}"
        );
        let err = parse("name = \"A\"\ntag = \"1\"", "f", Path::new("/x"), None).unwrap_err();
        assert!(
            err.to_string().contains("not a valid image reference"),
            "{err}"
        );
    }

    #[test]
    fn parses_dockerfile_and_base_images() {
        let d = parse(
            "name = \"forge/workstation\"\ntag = \"1\"\naliases = [\"forge/learner-alpine:3.19\"]\n",
            "ws/image.toml",
            Path::new("/x"),
            Some("# syntax\nFROM forge/debian-tools:1\nRUN true\n"),
        )
        .unwrap();
        assert_eq!(d.aliases, ["forge/learner-alpine:3.19"]);
        assert!(matches!(&d.kind, ImageKind::Dockerfile(s) if s.from == ["forge/debian-tools:1"]));
        let err = parse(
            "name = \"forge/w\"\ntag = \"1\"\ncmd = [\"sh\"]\n",
            "w/image.toml",
            Path::new("/x"),
            Some("FROM scratch\n"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "w/image.toml:3: `cmd` of a Dockerfile image belongs in its Dockerfile (CMD)"
        );
        let d = parse(
            "kind = \"debootstrap\"\nname = \"forge/debian\"\ntag = \"bookworm\"\nsuite = \"bookworm\"\ninclude = [\"tini\"]\n",
            "debian/image.toml",
            Path::new("/x"),
            None,
        )
        .unwrap();
        let ImageKind::Base(r) = &d.kind else {
            panic!("not a base: {d:?}")
        };
        assert_eq!(
            (r.suite.as_str(), r.variant.as_str()),
            ("bookworm", "minbase")
        );
        assert_eq!(r.include, ["tini"]);
        let err = parse(
            "kind = \"debootstrap\"\nname = \"a\"\ntag = \"1\"\n",
            "f",
            Path::new("/x"),
            None,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "f: missing `suite`");
    }

    #[test]
    fn finds_the_images_a_dockerfile_is_built_on() {
        let text = "FROM --platform=linux/amd64 forge/debian:bookworm AS build\nRUN make\n\
                    FROM build\nFROM scratch\nFROM \\\n  other/img\n";
        assert_eq!(
            dockerfile_parents(text).unwrap(),
            ["forge/debian:bookworm", "other/img:latest"]
        );
        let err = dockerfile_parents("ARG B\nFROM forge/${B}:1\n").unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("build argument"), "{}", err.1);
    }
}
