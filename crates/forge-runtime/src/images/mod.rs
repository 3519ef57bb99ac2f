//! Lab images, built locally through the Docker Engine (no registry is reachable).
//!
//! The catalog is a directory (`images/`) with one directory per image, each with an
//! `image.toml` (a small subset of TOML: `key = "string"`, one-line `key = ["a", "b"]`,
//! `#` comments) naming it (`name`, `tag`, `description`, optional `aliases`: further
//! `name:tag`s of the same image). Three kinds:
//!
//! - **busybox** (no `Dockerfile`; `busybox.rs`): `FROM scratch` + the host's static busybox +
//!   a `rootfs/` overlay; `cmd`, `sysctls`, `healthcheck` in `image.toml`. Tiny labs, fast tests.
//! - **debootstrap** (`kind = "debootstrap"`; `base.rs`, `mirror.rs`): the Debian base every
//!   Dockerfile image is built on, `debootstrap --variant=minbase` from the mirror this host's
//!   apt uses, imported.
//! - **dockerfile** (a `Dockerfile` in the directory; `dockerfile.rs`): built by the engine's
//!   builder on the base or on another catalog image; `CMD`, `HEALTHCHECK` and the runtime's
//!   labels (`forge.sysctls`, `forge.tmpfs`) are in the Dockerfile.
//!
//! Every image carries the `forge.image.digest` label: the SHA-256 of what it is made of (its
//! deterministic build context, the base's recipe, and the ids of the images it is built on),
//! so [`ImageCatalog`] images are rebuilt exactly when they are missing or stale: a changed
//! file, a changed recipe, or a rebuilt parent. `ensure_images` builds in dependency order
//! (parents first, independent images concurrently), reports progress through a
//! [`BuildProgress`], bounds each image's build by a timeout, and removes the images it
//! replaced once nothing uses them.
//!
//! Where the catalog, the busybox and the Debian mirror are is the caller's decision
//! ([`ImageCatalog::discover`], [`find_images_dir`], [`ImageCatalog::with_busybox`],
//! [`ImageCatalog::with_mirror`]; without a mirror the one in `/etc/apt` is used): a library
//! reads no environment.

mod base;
mod build;
mod busybox;
mod context;
mod dockerfile;
mod engine;
mod mirror;
mod progress;
mod spec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use base::{DEFAULT_WORK_DIR, RECIPE_VERSION};
pub(crate) use build::{ensure_images, image_status};
pub use mirror::{DEFAULT_APT_DIR, detect_mirror};
pub use progress::{BuildEvent, BuildOptions, BuildProgress, DEFAULT_BUILD_TIMEOUT, LogProgress};
pub use spec::CatalogError;

use crate::error::RuntimeError;

/// Label holding what the image is made of (see the module docs).
pub const DIGEST_LABEL: &str = "forge.image.digest";
/// Label holding the image's kind: `busybox`, `dockerfile` or `base`.
pub const KIND_LABEL: &str = "forge.image.kind";
/// Label holding the comma-separated sysctls the runtime applies at create time.
pub const SYSCTLS_LABEL: &str = "forge.sysctls";
/// Label holding the comma-separated directories the runtime mounts a tmpfs on (the root is
/// read-only; daemons write their logs and state there). See `hardening::IMAGE_TMPFS_ROOTS`.
pub const TMPFS_LABEL: &str = "forge.tmpfs";
/// Static busybox location (Debian `busybox-static`).
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";
/// How often the engine probes a lab container. Each probe is an exec, so a short interval
/// costs real CPU on a host with hundreds of lab containers; labs are not gated on it.
pub const HEALTH_INTERVAL: &str = "30s";

/// One image of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDef {
    /// `name:tag`, what templates reference.
    pub reference: String,
    pub description: String,
    pub dir: PathBuf,
    /// Further references tagged on the same image (templates may use either).
    pub aliases: Vec<String>,
    pub kind: ImageKind,
}

/// How an image is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageKind {
    Busybox(BusyboxSpec),
    Dockerfile(DockerfileSpec),
    Base(BaseRecipe),
}

impl ImageKind {
    /// `busybox`, `dockerfile` or `base` (the `forge.image.kind` label).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Busybox(_) => "busybox",
            Self::Dockerfile(_) => "dockerfile",
            Self::Base(_) => "base",
        }
    }
}

/// A busybox image's `image.toml` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyboxSpec {
    pub cmd: Vec<String>,
    pub sysctls: Vec<String>,
    /// Exec form of the image's health probe; empty for none.
    pub healthcheck: Vec<String>,
}

/// A Dockerfile image: the images its stages are built `FROM` (catalog images are built
/// first; others must already be in the engine, since no registry is reachable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileSpec {
    pub from: Vec<String>,
}

/// A debootstrap base: `debootstrap --variant=<variant> --include=<include> <suite>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRecipe {
    pub suite: String,
    pub variant: String,
    pub include: Vec<String>,
}

impl ImageDef {
    /// Catalog references this image is built on.
    fn parents(&self) -> &[String] {
        match &self.kind {
            ImageKind::Dockerfile(d) => &d.from,
            _ => &[],
        }
    }
}

/// The images directory, and what its images are built from.
#[derive(Debug, Clone)]
pub struct ImageCatalog {
    pub dir: PathBuf,
    pub images: Vec<ImageDef>,
    /// The static busybox copied into every busybox image; [`DEFAULT_BUSYBOX`] unless set with
    /// [`ImageCatalog::with_busybox`].
    pub busybox: PathBuf,
    /// The Debian mirror bases are bootstrapped from; `None`: the one apt uses
    /// ([`detect_mirror`] in [`ImageCatalog::apt_dir`]).
    pub mirror: Option<String>,
    /// Where [`detect_mirror`] looks; [`DEFAULT_APT_DIR`].
    pub apt_dir: PathBuf,
    /// Where a base's root is assembled; [`DEFAULT_WORK_DIR`].
    pub work_dir: PathBuf,
}

/// What `ensure_images` did for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildOutcome {
    Built,
    UpToDate,
}

/// The source tree's `images/`, the last resort of [`ImageCatalog::discover`]: the package's
/// directory as cargo gives it to the tests and benches it runs, else as it was when this crate
/// was built (a build directory shared by several checkouts may have built it in another one).
fn source_images_dir() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    package.join("../../images")
}

/// The nearest non-empty `images/` directory in `start` or one of its ancestors. The CLI calls
/// it with the current directory when no directory was given.
pub fn find_images_dir(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join("images"))
        .find(|d| d.is_dir() && d.read_dir().is_ok_and(|mut r| r.next().is_some()))
}

impl ImageCatalog {
    /// The catalog in `images_dir`, else the source tree's `images/` (for tests and benches
    /// run from a checkout). Callers that want the nearest `images/` above some directory pass
    /// [`find_images_dir`]'s answer.
    pub fn discover(images_dir: Option<&Path>) -> Result<Self, RuntimeError> {
        match images_dir {
            Some(dir) => Self::load(dir),
            None => Self::load(&source_images_dir()),
        }
    }

    /// Builds this catalog's busybox images with the busybox at `path`.
    pub fn with_busybox(mut self, path: impl Into<PathBuf>) -> Self {
        self.busybox = path.into();
        self
    }

    /// Bootstraps Debian bases from `mirror` (`None`: the one apt uses on this host).
    pub fn with_mirror(mut self, mirror: Option<String>) -> Self {
        self.mirror = mirror.map(|m| m.trim_end_matches('/').to_owned());
        self
    }

    /// Every directory of `dir` with an `image.toml`. A directory with a `Dockerfile` but no
    /// `image.toml` is an error: its image would have no name.
    pub fn load(dir: &Path) -> Result<Self, RuntimeError> {
        let entries = std::fs::read_dir(dir).map_err(|e| CatalogError::Read {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let mut images: Vec<ImageDef> = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.join("image.toml").is_file() {
                images.push(spec::load_dir(&path)?);
            } else if path.join("Dockerfile").is_file() {
                return Err(CatalogError::File {
                    file: path.join("Dockerfile").display().to_string(),
                    message: "no image.toml next to it; add one with `name` and `tag`".into(),
                }
                .into());
            }
        }
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        let mut seen: HashMap<&str, &Path> = HashMap::new();
        for i in &images {
            for r in std::iter::once(&i.reference).chain(&i.aliases) {
                if let Some(first) = seen.insert(r, &i.dir) {
                    return Err(CatalogError::Duplicate {
                        reference: r.clone(),
                        first: first.display().to_string(),
                        second: i.dir.display().to_string(),
                    }
                    .into());
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            images,
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
            mirror: None,
            apt_dir: PathBuf::from(DEFAULT_APT_DIR),
            work_dir: PathBuf::from(DEFAULT_WORK_DIR),
        })
    }

    /// The image `reference` names, by its own reference or one of its aliases.
    pub fn get(&self, reference: &str) -> Option<&ImageDef> {
        self.images
            .iter()
            .find(|i| i.reference == reference || i.aliases.iter().any(|a| a == reference))
    }

    /// `references` and every catalog image they are built on, in levels: an image's level
    /// comes after the levels of all images it is built on, so each level can be built
    /// concurrently once the ones before it are done.
    pub fn build_order(&self, references: &[&str]) -> Result<Vec<Vec<&ImageDef>>, RuntimeError> {
        let mut levels: HashMap<&str, usize> = HashMap::new();
        let mut order: Vec<&ImageDef> = Vec::new();
        for r in references {
            let def = self.get(r).ok_or_else(|| RuntimeError::ImageUnknown {
                image: r.to_string(),
                dir: self.dir.display().to_string(),
            })?;
            self.level(def, &mut levels, &mut order, &mut Vec::new())?;
        }
        let depth = order.iter().map(|d| levels[d.reference.as_str()]).max();
        let mut out: Vec<Vec<&ImageDef>> = vec![Vec::new(); depth.map_or(0, |d| d + 1)];
        for d in order {
            out[levels[d.reference.as_str()]].push(d);
        }
        Ok(out)
    }

    fn level<'a>(
        &'a self,
        def: &'a ImageDef,
        levels: &mut HashMap<&'a str, usize>,
        order: &mut Vec<&'a ImageDef>,
        path: &mut Vec<&'a str>,
    ) -> Result<usize, RuntimeError> {
        if let Some(l) = levels.get(def.reference.as_str()) {
            return Ok(*l);
        }
        if path.contains(&def.reference.as_str()) {
            path.push(&def.reference);
            return Err(CatalogError::Cycle {
                image: def.reference.clone(),
                chain: path.join(" -> "),
            }
            .into());
        }
        path.push(&def.reference);
        let mut level = 0;
        for p in def.parents() {
            if let Some(parent) = self.get(p) {
                level = level.max(self.level(parent, levels, order, path)? + 1);
            }
        }
        path.pop();
        levels.insert(&def.reference, level);
        order.push(def);
        Ok(level)
    }
}

/// Whether an image of the catalog is in the engine, and current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageState {
    /// Present with the digest its files, recipe and parents give.
    Built,
    /// Present, but something it is made of changed (or a parent is not built).
    Stale,
    Missing,
    /// Its digest cannot be computed (no busybox, no mirror…): the reason.
    Unknown(String),
}

/// One line of `forge images list`.
#[derive(Debug, Clone)]
pub struct ImageStatus {
    pub reference: String,
    pub aliases: Vec<String>,
    pub kind: &'static str,
    pub description: String,
    pub state: ImageState,
    /// The engine's size of the image (its layers and its parents'), when present.
    pub size: Option<i64>,
}

/// What an image asks of the runtime at launch, read from its labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRuntimeConfig {
    /// `key=value` sysctls ([`SYSCTLS_LABEL`]).
    pub sysctls: Vec<String>,
    /// Directories to mount a tmpfs on ([`TMPFS_LABEL`]).
    pub tmpfs: Vec<String>,
    /// The image's HEALTHCHECK test as the engine reports it (`["CMD", argv…]`,
    /// `["CMD-SHELL", cmd]`, `["NONE"]`); empty for none. Set from the image's config, not a
    /// label, by the launch that gates on it.
    pub health: Vec<String>,
}

impl ImageRuntimeConfig {
    pub fn from_labels(labels: &HashMap<String, String>) -> Self {
        let list = |key: &str| -> Vec<String> {
            labels
                .get(key)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            sysctls: list(SYSCTLS_LABEL),
            tmpfs: list(TMPFS_LABEL),
            health: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, toml: &str, dockerfile: Option<&str>) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("image.toml"), toml).unwrap();
        if let Some(text) = dockerfile {
            std::fs::write(d.join("Dockerfile"), text).unwrap();
        }
    }

    #[test]
    fn builds_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write(
            p,
            "debian",
            "kind = \"debootstrap\"\nname = \"forge/debian\"\ntag = \"bookworm\"\nsuite = \"bookworm\"\n",
            None,
        );
        write(
            p,
            "tools",
            "name = \"forge/debian-tools\"\ntag = \"1\"\n",
            Some("FROM forge/debian:bookworm\n"),
        );
        write(
            p,
            "ws",
            "name = \"forge/workstation\"\ntag = \"1\"\naliases = [\"forge/learner-alpine:3.19\"]\n",
            Some("FROM forge/debian-tools:1\n"),
        );
        write(p, "web", "name = \"forge/web\"\ntag = \"1\"\n", None);
        let c = ImageCatalog::load(p).unwrap();
        let levels = c
            .build_order(&["forge/learner-alpine:3.19", "forge/web:1"])
            .unwrap();
        let names: Vec<Vec<&str>> = levels
            .iter()
            .map(|l| l.iter().map(|d| d.reference.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            [
                vec!["forge/debian:bookworm", "forge/web:1"],
                vec!["forge/debian-tools:1"],
                vec!["forge/workstation:1"]
            ]
        );
        let err = c.build_order(&["forge/nope:1"]).unwrap_err();
        assert!(err.to_string().contains("forge/nope:1"), "{err}");
    }

    #[test]
    fn refuses_cycles_duplicates_and_nameless_dockerfiles() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write(
            p,
            "a",
            "name = \"forge/a\"\ntag = \"1\"\n",
            Some("FROM forge/b:1\n"),
        );
        write(
            p,
            "b",
            "name = \"forge/b\"\ntag = \"1\"\n",
            Some("FROM forge/a:1\n"),
        );
        let c = ImageCatalog::load(p).unwrap();
        let err = c.build_order(&["forge/a:1"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("forge/a:1 -> forge/b:1 -> forge/a:1"),
            "{err}"
        );
        write(
            p,
            "c",
            "name = \"forge/c\"\ntag = \"1\"\naliases = [\"forge/a:1\"]\n",
            None,
        );
        let err = ImageCatalog::load(p).unwrap_err();
        assert!(err.to_string().contains("defined twice"), "{err}");
        std::fs::remove_dir_all(p.join("c")).unwrap();
        std::fs::create_dir(p.join("d")).unwrap();
        std::fs::write(p.join("d/Dockerfile"), "FROM scratch\n").unwrap();
        let err = ImageCatalog::load(p).unwrap_err();
        assert!(err.to_string().contains("no image.toml"), "{err}");
    }

    #[test]
    fn runtime_config_comes_from_labels() {
        let labels = HashMap::from([
            (SYSCTLS_LABEL.to_owned(), "net.ipv4.ip_forward=1".to_owned()),
            (TMPFS_LABEL.to_owned(), "/var/log, /var/lib/sshd".to_owned()),
        ]);
        let c = ImageRuntimeConfig::from_labels(&labels);
        assert_eq!(c.sysctls, ["net.ipv4.ip_forward=1"]);
        assert_eq!(c.tmpfs, ["/var/log", "/var/lib/sshd"]);
        assert_eq!(
            ImageRuntimeConfig::from_labels(&HashMap::new()),
            ImageRuntimeConfig::default()
        );
    }

    #[test]
    fn the_bundled_catalog_loads() {
        let c = ImageCatalog::discover(None).unwrap();
        let all: Vec<&str> = c.images.iter().map(|i| i.reference.as_str()).collect();
        assert!(c.build_order(&all).is_ok());
        for spec_name in [
            "forge/learner-alpine:3.19",
            "forge/vyos-mini:1.4",
            "forge/nginx-test:1.0",
        ] {
            assert!(c.get(spec_name).is_some(), "{spec_name} missing");
        }
    }
}
