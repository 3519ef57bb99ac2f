//! Lab images, built locally (no registry is reachable): `FROM scratch` + the host's static
//! busybox with every applet symlinked + `/etc/passwd`, `/etc/group` + the image's own files.
//!
//! Each image is a directory `images/<dir>/` with an `image.toml` (a small subset of TOML:
//! `key = "string"` and one-line `key = ["a", "b"]`) and an optional `rootfs/` overlay:
//!
//! ```toml
//! name = "forge/web"          # repository
//! tag = "1"
//! description = "busybox httpd serving /www"
//! cmd = ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]
//! sysctls = ["net.ipv4.ip_forward=1"]   # applied by the runtime at create time (allowlisted)
//! ```
//!
//! The build context is a tar made in memory (entries sorted, mtime 0) whose SHA-256 becomes
//! the `forge.image.digest` label, so `ensure_images` rebuilds an image whose files changed.
//!
//! Where the catalog and the busybox are is the caller's decision ([`ImageCatalog::discover`],
//! [`find_images_dir`], [`ImageCatalog::with_busybox`]): a library reads no environment.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use bollard::Docker;
use bollard::query_parameters::BuildImageOptions;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::{RuntimeError, status_of};
use crate::labels;

/// Label holding the build context digest.
pub const DIGEST_LABEL: &str = "forge.image.digest";
/// Label holding the comma-separated sysctls the runtime applies at create time.
pub const SYSCTLS_LABEL: &str = "forge.sysctls";
/// Static busybox location (Debian `busybox-static`).
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// One image of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDef {
    /// `name:tag`, what templates reference.
    pub reference: String,
    pub description: String,
    pub cmd: Vec<String>,
    pub sysctls: Vec<String>,
    pub dir: PathBuf,
}

/// The images directory, and the busybox its images are built with.
#[derive(Debug, Clone)]
pub struct ImageCatalog {
    pub dir: PathBuf,
    pub images: Vec<ImageDef>,
    /// The static busybox copied into every image; [`DEFAULT_BUSYBOX`] unless set with
    /// [`ImageCatalog::with_busybox`].
    pub busybox: PathBuf,
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

    /// Builds this catalog's images with the busybox at `path`.
    pub fn with_busybox(mut self, path: impl Into<PathBuf>) -> Self {
        self.busybox = path.into();
        self
    }

    pub fn load(dir: &Path) -> Result<Self, RuntimeError> {
        let err = |m: String| RuntimeError::ImageCatalog(m);
        let entries = std::fs::read_dir(dir)
            .map_err(|e| err(format!("cannot read {}: {e}", dir.display())))?;
        let mut images = Vec::new();
        for e in entries.flatten() {
            let toml = e.path().join("image.toml");
            if toml.is_file() {
                let text = std::fs::read_to_string(&toml)
                    .map_err(|e| err(format!("cannot read {}: {e}", toml.display())))?;
                images.push(
                    parse_image_toml(&text, &e.path())
                        .map_err(|m| err(format!("{}: {m}", toml.display())))?,
                );
            }
        }
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(Self {
            dir: dir.to_path_buf(),
            images,
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
        })
    }

    pub fn get(&self, reference: &str) -> Option<&ImageDef> {
        self.images.iter().find(|i| i.reference == reference)
    }
}

fn parse_image_toml(text: &str, dir: &Path) -> Result<ImageDef, String> {
    let mut kv: HashMap<String, Vec<String>> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = strip_comment(line).trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or(format!("line {}: expected `key = value`", n + 1))?;
        let v = v.trim();
        let values = if let Some(inner) = v.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(unquote)
                .collect::<Result<_, _>>()
        } else {
            unquote(v).map(|s| vec![s])
        }
        .map_err(|m| format!("line {}: {m}", n + 1))?;
        kv.insert(k.trim().to_owned(), values);
    }
    for k in kv.keys() {
        if !["name", "tag", "description", "cmd", "sysctls"].contains(&k.as_str()) {
            return Err(format!("unknown key `{k}`"));
        }
    }
    let one = |k: &str| kv.get(k).and_then(|v| v.first().cloned());
    let name = one("name").ok_or("missing `name`")?;
    let tag = one("tag").ok_or("missing `tag`")?;
    Ok(ImageDef {
        reference: format!("{name}:{tag}"),
        description: one("description").unwrap_or_default(),
        cmd: kv
            .get("cmd")
            .cloned()
            .unwrap_or_else(|| vec!["/bin/sh".into()]),
        sysctls: kv.get("sysctls").cloned().unwrap_or_default(),
        dir: dir.to_path_buf(),
    })
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

/// `busybox --list-full` of `path` (cached per path): `usr/bin/wget`, `sbin/ip`, …
fn applets(path: &Path) -> Result<Vec<String>, RuntimeError> {
    static LISTS: OnceLock<Mutex<HashMap<PathBuf, Vec<String>>>> = OnceLock::new();
    let lists = LISTS.get_or_init(Default::default);
    if let Some(l) = lists.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
        return Ok(l.clone());
    }
    let missing = || RuntimeError::BusyboxMissing {
        path: path.display().to_string(),
    };
    if !path.is_file() {
        return Err(missing());
    }
    let head = std::fs::read(path).map_err(|_| missing())?;
    // A dynamically linked busybox would not run in a `FROM scratch` image.
    if head
        .windows(b"/lib64/ld-linux".len())
        .any(|w| w == b"/lib64/ld-linux")
    {
        return Err(RuntimeError::BusyboxNotStatic {
            path: path.display().to_string(),
        });
    }
    let out = std::process::Command::new(path)
        .arg("--list-full")
        .output()
        .map_err(|_| missing())?;
    let list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(".."))
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err(RuntimeError::BusyboxNotStatic {
            path: path.display().to_string(),
        });
    }
    lists
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.to_path_buf(), list.clone());
    Ok(list)
}

enum Entry {
    Dir(u32),
    File(Vec<u8>, u32),
    Link(String),
}

/// The build context (tar bytes) and its digest.
pub fn build_context(def: &ImageDef, busybox: &Path) -> Result<(Vec<u8>, String), RuntimeError> {
    let fail = |m: String| RuntimeError::ImageBuild {
        image: def.reference.clone(),
        message: m,
    };
    let mut tree: BTreeMap<String, Entry> = BTreeMap::new();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "run", "var", "home",
    ] {
        tree.insert(format!("rootfs/{d}"), Entry::Dir(0o755));
    }
    tree.insert("rootfs/tmp".into(), Entry::Dir(0o1777));
    tree.insert("rootfs/var/run".into(), Entry::Link("../run".into()));
    let bb = std::fs::read(busybox).map_err(|_| RuntimeError::BusyboxMissing {
        path: busybox.display().to_string(),
    })?;
    tree.insert("rootfs/bin/busybox".into(), Entry::File(bb, 0o755));
    for full in &applets(busybox)? {
        let name = full.rsplit('/').next().unwrap_or(full);
        if name != "busybox" {
            tree.insert(format!("rootfs/bin/{name}"), Entry::Link("busybox".into()));
            if !full.starts_with("bin/") {
                tree.insert(format!("rootfs/{full}"), Entry::Link("/bin/busybox".into()));
            }
        }
    }
    tree.insert(
        "rootfs/etc/passwd".into(),
        Entry::File(
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
            0o644,
        ),
    );
    tree.insert(
        "rootfs/etc/group".into(),
        Entry::File(b"root:x:0:\nnobody:x:65534:\n".to_vec(), 0o644),
    );
    // `images/base/rootfs` goes into every image, then the image's own overlay on top.
    let base = def.dir.parent().map(|p| p.join("base").join("rootfs"));
    for overlay in base.into_iter().chain([def.dir.join("rootfs")]) {
        if overlay.is_dir() {
            walk(&overlay, &overlay, &mut tree)
                .map_err(|e| fail(format!("reading {}: {e}", overlay.display())))?;
        }
    }
    tree.insert(
        "Dockerfile".into(),
        Entry::File(dockerfile(def).into_bytes(), 0o644),
    );

    let mut b = tar::Builder::new(Vec::new());
    for (path, entry) in &tree {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let r = match entry {
            Entry::Dir(mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty())
            }
            Entry::File(data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())
            }
            Entry::Link(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)
            }
        };
        r.map_err(|e| fail(format!("tar {path}: {e}")))?;
    }
    let bytes = b.into_inner().map_err(|e| fail(format!("tar: {e}")))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    Ok((bytes, digest))
}

fn walk(root: &Path, dir: &Path, tree: &mut BTreeMap<String, Entry>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .map_err(std::io::Error::other)?
            .to_string_lossy()
            .into_owned();
        let key = format!("rootfs/{rel}");
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            tree.insert(
                key,
                Entry::Link(std::fs::read_link(&path)?.to_string_lossy().into_owned()),
            );
        } else if meta.is_dir() {
            tree.insert(key, Entry::Dir(0o755));
            walk(root, &path, tree)?;
        } else {
            // Normalise modes so the digest does not depend on the checkout's umask.
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            tree.insert(key, Entry::File(std::fs::read(&path)?, mode));
        }
    }
    Ok(())
}

fn dockerfile(def: &ImageDef) -> String {
    let cmd = serde_json::to_string(&def.cmd).unwrap_or_else(|_| "[\"/bin/sh\"]".into());
    format!(
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nCMD {cmd}\n"
    )
}

async fn build_with(
    docker: &Docker,
    def: &ImageDef,
    tar: Vec<u8>,
    digest: &str,
) -> Result<(), RuntimeError> {
    let image_labels = HashMap::from([
        (labels::IMAGE.to_owned(), "1".to_owned()),
        (DIGEST_LABEL.to_owned(), digest.to_owned()),
        (SYSCTLS_LABEL.to_owned(), def.sysctls.join(",")),
    ]);
    let opts = BuildImageOptions {
        t: Some(def.reference.clone()),
        labels: Some(image_labels),
        rm: true,
        forcerm: true,
        q: true,
        ..Default::default()
    };
    let mut stream = docker.build_image(
        opts,
        None,
        Some(bollard::body_full(bytes::Bytes::from(tar))),
    );
    while let Some(item) = stream.next().await {
        item.map_err(|e| RuntimeError::ImageBuild {
            image: def.reference.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// Builds every image in `references` that is missing or out of date (all of them with
/// `force`). Images are built concurrently.
pub(crate) async fn ensure_images(
    docker: &Docker,
    catalog: &ImageCatalog,
    references: &[&str],
    force: bool,
) -> Result<Vec<(String, BuildOutcome)>, RuntimeError> {
    let busybox = catalog.busybox.clone();
    let mut work = Vec::new();
    for r in references {
        let def = catalog.get(r).ok_or_else(|| RuntimeError::ImageUnknown {
            image: r.to_string(),
            dir: catalog.dir.display().to_string(),
        })?;
        if !work
            .iter()
            .any(|d: &&ImageDef| d.reference == def.reference)
        {
            work.push(def);
        }
    }
    let jobs = work.into_iter().map(|def| {
        let busybox = busybox.clone();
        async move {
            let (tar, digest) = build_context(def, &busybox)?;
            if !force
                && current_digest(docker, &def.reference).await?.as_deref() == Some(digest.as_str())
            {
                return Ok((def.reference.clone(), BuildOutcome::UpToDate));
            }
            build_with(docker, def, tar, &digest).await?;
            Ok((def.reference.clone(), BuildOutcome::Built))
        }
    });
    futures::future::try_join_all(jobs).await
}

/// The digest label of an existing image, `None` when the image is absent.
async fn current_digest(docker: &Docker, reference: &str) -> Result<Option<String>, RuntimeError> {
    match docker.inspect_image(reference).await {
        Ok(img) => Ok(Some(
            img.config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(DIGEST_LABEL).cloned())
                .unwrap_or_default(),
        )),
        Err(e) if status_of(&e) == Some(404) => Ok(None),
        Err(e) => Err(RuntimeError::docker(
            format!("inspect image {reference}"),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_image_toml() {
        let d = parse_image_toml(
            "# web\nname = \"forge/web\"\ntag = \"1\" # t\ncmd = [\"/bin/httpd\", \"-f\"]\nsysctls = []\n",
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(d.reference, "forge/web:1");
        assert_eq!(d.cmd, ["/bin/httpd", "-f"]);
        assert!(d.sysctls.is_empty());
        assert!(
            parse_image_toml("name = \"a\"\ntag = \"1\"\nfoo = \"x\"", Path::new("/x")).is_err()
        );
        assert!(parse_image_toml("name = a", Path::new("/x")).is_err());
    }

    #[test]
    fn missing_busybox_says_how_to_install_it() {
        let def = ImageDef {
            reference: "forge/x:1".into(),
            description: String::new(),
            cmd: vec![],
            sysctls: vec![],
            dir: "/nonexistent".into(),
        };
        let err = build_context(&def, Path::new("/nonexistent/busybox"))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("apt-get install busybox-static"),
            "{err}"
        );
    }
}
