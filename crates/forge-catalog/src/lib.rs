//! The lab catalog: every scenario template the platform can spawn, validated at load time and
//! indexed by name and track.
//!
//! The bundled templates (the repository's `templates/`) are compiled in, so the binary works
//! from anywhere; an operator directory (`TEMPLATE_DIR`) adds to or replaces them by name.
//!
//! Invariant: a template in the catalog has passed full validation; nothing downstream
//! re-validates, and nothing downstream reads template files itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use forge_core::Track;
use forge_core::template::{
    Diagnostic, MAX_YAML_BYTES, ScenarioTemplate, TemplateErrors, check_input_size, load,
};
use serde::Serialize;

/// The templates shipped with the platform, as `(file name, text)`.
pub const BUNDLED: &[(&str, &str)] = &[
    (
        "netplus-routing.yaml",
        include_str!("../../../templates/netplus-routing.yaml"),
    ),
    (
        "netplus-services.yaml",
        include_str!("../../../templates/netplus-services.yaml"),
    ),
    (
        "ccna-interfaces.yaml",
        include_str!("../../../templates/ccna-interfaces.yaml"),
    ),
    (
        "ccna-static-routing.yaml",
        include_str!("../../../templates/ccna-static-routing.yaml"),
    ),
    (
        "cissp-incident-triage.yaml",
        include_str!("../../../templates/cissp-incident-triage.yaml"),
    ),
    (
        "cissp-segmentation.yaml",
        include_str!("../../../templates/cissp-segmentation.yaml"),
    ),
    (
        "netplus-dns.yaml",
        include_str!("../../../templates/netplus-dns.yaml"),
    ),
    (
        "netplus-packet-capture.yaml",
        include_str!("../../../templates/netplus-packet-capture.yaml"),
    ),
    (
        "ccna-ospf.yaml",
        include_str!("../../../templates/ccna-ospf.yaml"),
    ),
    (
        "ccna-ebgp.yaml",
        include_str!("../../../templates/ccna-ebgp.yaml"),
    ),
    (
        "cissp-ssh-bruteforce.yaml",
        include_str!("../../../templates/cissp-ssh-bruteforce.yaml"),
    ),
    (
        "cissp-live-bruteforce.yaml",
        include_str!("../../../templates/cissp-live-bruteforce.yaml"),
    ),
    (
        "cissp-web-exploit.yaml",
        include_str!("../../../templates/cissp-web-exploit.yaml"),
    ),
    (
        "cissp-defended-host.yaml",
        include_str!("../../../templates/cissp-defended-host.yaml"),
    ),
    (
        "cissp-perimeter-firewall.yaml",
        include_str!("../../../templates/cissp-perimeter-firewall.yaml"),
    ),
    (
        "cissp-file-integrity.yaml",
        include_str!("../../../templates/cissp-file-integrity.yaml"),
    ),
    (
        "ccna-point-to-point.yaml",
        include_str!("../../../templates/ccna-point-to-point.yaml"),
    ),
    (
        "netplus-dhcp.yaml",
        include_str!("../../../templates/netplus-dhcp.yaml"),
    ),
    (
        "netplus-ipv6.yaml",
        include_str!("../../../templates/netplus-ipv6.yaml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read template directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(TemplateErrors),
    #[error("template `{name}` is defined twice ({first} and {second})")]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
    #[error("template {file} has no valid `class:<track>` label")]
    NoTrack { file: String },
}

/// One catalog entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub template: Arc<ScenarioTemplate>,
    pub track: Track,
    /// Where it came from: `bundled:<file>` or a path.
    pub source: String,
    /// The track's default (label `catalog:default`).
    pub default: bool,
    /// SHA-256 of the template's text (hex): warm pools hand out only labs launched from the
    /// same text, so a changed template drains its pool.
    pub digest: String,
}

/// A row of `forge template list`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub track: Track,
    pub tier: String,
    pub default: bool,
    pub description: String,
    pub source: String,
}

/// All templates, by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<String, Entry>,
}

impl Catalog {
    /// The bundled templates only.
    pub fn bundled() -> Result<Self, CatalogError> {
        let mut c = Self::default();
        for (file, text) in BUNDLED {
            c.insert(&format!("bundled:{file}"), text, false)?;
        }
        Ok(c)
    }

    /// The bundled templates plus every `*.yaml`/`*.yml` in `dir`; a template in `dir` with a
    /// bundled template's name replaces it (operators can patch a lab without a rebuild).
    pub fn load(dir: Option<&Path>) -> Result<Self, CatalogError> {
        let mut c = Self::bundled()?;
        if let Some(dir) = dir {
            for path in template_files(dir)? {
                let text = read_yaml_file(&path).map_err(CatalogError::Invalid)?;
                c.insert(&path.display().to_string(), &text, true)?;
            }
        }
        Ok(c)
    }

    fn insert(
        &mut self,
        source: &str,
        text: &str,
        replace_bundled: bool,
    ) -> Result<(), CatalogError> {
        let t = load(source, text).map_err(CatalogError::Invalid)?;
        let track = t.track().ok_or_else(|| CatalogError::NoTrack {
            file: source.to_owned(),
        })?;
        let name = t.metadata.name.clone();
        if let Some(prev) = self.entries.get(&name) {
            let may_replace = replace_bundled && prev.source.starts_with("bundled:");
            if !may_replace {
                return Err(CatalogError::Duplicate {
                    name,
                    first: prev.source.clone(),
                    second: source.to_owned(),
                });
            }
        }
        let default = t.metadata.labels.iter().any(|l| l == "catalog:default");
        let entry = Entry {
            template: Arc::new(t),
            track,
            source: source.to_owned(),
            default,
            digest: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())),
        };
        self.entries.insert(name, entry);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// The template a spawn on `track` gets when it names none: the track's `catalog:default`,
    /// else its first template by name.
    pub fn default_for(&self, track: Track) -> Option<&Entry> {
        let mut on_track = self.entries.values().filter(|e| e.track == track);
        let first = on_track.clone().next();
        on_track.find(|e| e.default).or(first)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Rows for listing, sorted by track then name.
    pub fn summaries(&self) -> Vec<Summary> {
        let mut rows: Vec<Summary> = self
            .entries
            .values()
            .map(|e| Summary {
                name: e.template.metadata.name.clone(),
                track: e.track,
                tier: e.template.tier().unwrap_or("-").to_owned(),
                default: e.default,
                description: e.template.description().to_owned(),
                source: e.source.clone(),
            })
            .collect();
        rows.sort_by(|a, b| (a.track, &a.name).cmp(&(b.track, &b.name)));
        rows
    }
}

/// Reads a template or playbook file as UTF-8 text, refusing one larger than [`MAX_YAML_BYTES`]
/// without reading it whole (its size is checked before, and the read stops past the limit for
/// files whose size the metadata does not tell, such as pipes). Errors name the file.
pub fn read_yaml_file(path: &Path) -> Result<String, TemplateErrors> {
    use std::io::Read;
    let file = path.display().to_string();
    let fail = |reason: String| TemplateErrors::new(&file, vec![Diagnostic::new("", reason)]);
    let f = std::fs::File::open(path).map_err(|e| fail(format!("cannot read file: {e}")))?;
    let too_big = |d: Diagnostic| TemplateErrors::new(&file, vec![d]);
    if let Ok(meta) = f.metadata() {
        check_input_size(usize::try_from(meta.len()).unwrap_or(usize::MAX)).map_err(too_big)?;
    }
    let mut bytes = Vec::new();
    f.take(MAX_YAML_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read file: {e}")))?;
    if bytes.len() > MAX_YAML_BYTES {
        // Only part of it was read: its size is not known, only that it is too large.
        return Err(fail(format!(
            "file is over {MAX_YAML_BYTES} bytes; at most {MAX_YAML_BYTES} bytes of YAML are accepted"
        )));
    }
    String::from_utf8(bytes).map_err(|_| fail("file is not valid UTF-8".into()))
}

/// `*.yaml` and `*.yml` files directly in `dir`, sorted.
pub fn template_files(dir: &Path) -> Result<Vec<PathBuf>, CatalogError> {
    let rd = std::fs::read_dir(dir).map_err(|source| CatalogError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lab in templates/ ships in the binary: a file added there but not here would pass
    /// `forge template test` in CI and still be missing from `forge up`.
    #[test]
    fn every_template_file_is_bundled() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| f.ends_with(".yaml"))
            .collect();
        files.sort();
        let mut bundled: Vec<String> = BUNDLED.iter().map(|(f, _)| f.to_string()).collect();
        bundled.sort();
        assert_eq!(files, bundled);
    }

    #[test]
    fn bundled_catalog_has_every_track_with_a_default() {
        let c = Catalog::bundled().unwrap();
        for t in Track::ALL {
            let e = c
                .default_for(t)
                .unwrap_or_else(|| panic!("no template for {t}"));
            assert!(e.default, "{t} default should be labelled catalog:default");
            let tiers: std::collections::BTreeSet<_> = c
                .entries()
                .filter(|e| e.track == t)
                .filter_map(|e| e.template.tier())
                .collect();
            assert_eq!(
                tiers.len(),
                3,
                "{t} should have all three tiers, has {tiers:?}"
            );
            let labs = c.entries().filter(|e| e.track == t).count();
            assert!(labs >= 4, "{t} should have at least 4 labs, has {labs}");
        }
        assert_eq!(
            c.default_for(Track::Netplus)
                .unwrap()
                .template
                .metadata
                .name,
            "netplus-routing-lab"
        );
    }

    #[test]
    fn operator_dir_replaces_bundled_and_refuses_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let text = BUNDLED[0]
            .1
            .replace("duration: \"30m\"", "duration: \"31m\"");
        std::fs::write(dir.path().join("mine.yaml"), text).unwrap();
        let c = Catalog::load(Some(dir.path())).unwrap();
        let e = c.get("netplus-routing-lab").unwrap();
        assert!(e.source.ends_with("mine.yaml"));
        std::fs::write(dir.path().join("bad.yaml"), "kind: nope\n").unwrap();
        let err = Catalog::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("bad.yaml"), "{err}");
    }

    #[test]
    fn an_oversized_template_file_is_refused_by_name_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.yaml");
        // A valid-looking YAML comment, just too large: refused for its size, not its content.
        let mut text = String::from("# padding\n");
        text.push_str(&"#".repeat(MAX_YAML_BYTES));
        std::fs::write(&path, text).unwrap();
        let err = read_yaml_file(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(
            err.contains(&format!("at most {MAX_YAML_BYTES} bytes")),
            "{err}"
        );
        let err = Catalog::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("huge.yaml") && err.contains("bytes"), "{err}");
        // A file whose metadata gives no size (a device, a pipe) is read only up to the limit.
        let err = read_yaml_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "/dev/zero: file is over {MAX_YAML_BYTES} bytes; at most {MAX_YAML_BYTES} bytes of YAML are accepted"
            )
        );
    }
}
