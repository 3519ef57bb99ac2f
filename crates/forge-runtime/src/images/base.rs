//! The Debian base (`kind = "debootstrap"`, e.g. `forge/debian:bookworm`): `debootstrap
//! --variant=minbase` from the Debian mirror this host's apt already uses, trimmed (no apt
//! lists or caches, no docs, man pages or locales), the image directory's `rootfs/` laid on top
//! (apt and dpkg settings every image built on it inherits), then imported into the engine
//! (`POST /images/create?fromSrc=-`, what `docker import` does) with a streamed tar.
//!
//! Its digest is its recipe: suite, variant, mirror, extra packages, `rootfs/` and
//! [`RECIPE_VERSION`]. The packages in it are whatever the mirror had that day; a rebuild to
//! pick up newer ones is `forge images build --force forge/debian:bookworm`.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::context::{self, Tree};
use super::{BaseRecipe, BuildEvent, BuildProgress, DIGEST_LABEL, ImageDef, KIND_LABEL};
use crate::error::RuntimeError;

/// Where the base's root is assembled (it is about 200 MiB before trimming).
pub const DEFAULT_WORK_DIR: &str = "/var/tmp";
/// Version of the recipe's procedure (trimming, import settings); bump it to rebuild bases.
pub const RECIPE_VERSION: &str = "forge-debootstrap-1";

/// The base's digest: its recipe, the mirror and its `rootfs/`.
pub(super) fn recipe_digest(
    def: &ImageDef,
    recipe: &BaseRecipe,
    mirror: &str,
) -> Result<String, RuntimeError> {
    let overlay = overlay_tree(def)?;
    let (_, overlay_digest) = context::tar(&overlay).map_err(|m| RuntimeError::ImageBuild {
        image: def.reference.clone(),
        message: m,
    })?;
    let mut include = recipe.include.clone();
    include.sort();
    Ok(context::digest_of(&[
        RECIPE_VERSION,
        &recipe.suite,
        &recipe.variant,
        mirror,
        &include.join(","),
        &overlay_digest,
    ]))
}

fn overlay_tree(def: &ImageDef) -> Result<Tree, RuntimeError> {
    let mut tree = Tree::new();
    let dir = def.dir.join("rootfs");
    if dir.is_dir() {
        context::add_dir(&mut tree, "", &dir, &[]).map_err(|e| RuntimeError::ImageBuild {
            image: def.reference.clone(),
            message: format!("reading {}: {e}", dir.display()),
        })?;
    }
    Ok(tree)
}

/// What the base build needs besides the catalog entry.
pub(super) struct BaseBuild<'a> {
    pub def: &'a ImageDef,
    pub recipe: &'a BaseRecipe,
    pub mirror: &'a str,
    pub digest: &'a str,
    pub work_dir: &'a Path,
    /// For debootstrap, which is killed (its whole process group) when it runs out.
    pub timeout: Duration,
}

/// Builds the base and returns its image id.
pub(super) async fn build(
    docker: &Docker,
    b: BaseBuild<'_>,
    progress: &dyn BuildProgress,
) -> Result<String, RuntimeError> {
    let image = b.def.reference.as_str();
    let fail = |message: String| RuntimeError::ImageBuild {
        image: image.to_owned(),
        message,
    };
    let work = WorkDir::create(b.work_dir).map_err(|e| {
        fail(format!(
            "creating a directory in {}: {e}",
            b.work_dir.display()
        ))
    })?;
    let root = work.0.join("rootfs");
    let mut args = vec![format!("--variant={}", b.recipe.variant)];
    if !b.recipe.include.is_empty() {
        args.push(format!("--include={}", b.recipe.include.join(",")));
    }
    args.extend([
        "--components=main".to_owned(),
        b.recipe.suite.clone(),
        root.display().to_string(),
        b.mirror.to_owned(),
    ]);
    let line = format!("debootstrap {}", args.join(" "));
    progress.event(BuildEvent::Step { image, line: &line });
    debootstrap(image, &args, b.timeout, progress).await?;
    trim(&root).map_err(|e| fail(format!("trimming {}: {e}", root.display())))?;
    lay_overlay(&overlay_tree(b.def)?, &root).map_err(fail)?;
    progress.event(BuildEvent::Step {
        image,
        line: "import into the engine",
    });
    import(docker, b.def, b.mirror, b.digest, &root).await?;
    drop(work);
    super::engine::inspect(docker, image)
        .await?
        .map(|p| p.id)
        .ok_or_else(|| fail("the engine finished the import without an image".into()))
}

async fn debootstrap(
    image: &str,
    args: &[String],
    timeout: Duration,
    progress: &dyn BuildProgress,
) -> Result<(), RuntimeError> {
    let fail = |message: String| RuntimeError::ImageBuild {
        image: image.to_owned(),
        message,
    };
    let mut child = tokio::process::Command::new("debootstrap")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills dpkg and friends too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RuntimeError::DebootstrapMissing,
            _ => fail(format!("starting debootstrap: {e}")),
        })?;
    let mut group = GroupGuard(child.id().map(|p| nix::unistd::Pid::from_raw(p as i32)));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let run = async {
        let out = async {
            if let Some(s) = stdout {
                let mut lines = BufReader::new(s).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    progress.event(BuildEvent::Output { image, line: &line });
                }
            }
        };
        let err = async {
            let mut text = String::new();
            if let Some(mut s) = stderr {
                let _ = s.read_to_string(&mut text).await;
            }
            text
        };
        let ((), err, status) = futures::join!(out, err, child.wait());
        (err, status)
    };
    let outcome = tokio::time::timeout(timeout, run).await;
    if outcome.is_ok() {
        // Reaped: its pid, and so the group id, may be reused from now on.
        group.0 = None;
    }
    match outcome {
        Ok((_, Ok(status))) if status.success() => Ok(()),
        Ok((err, status)) => {
            let tail: Vec<&str> = err.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(fail(format!(
                "debootstrap failed ({}): {}",
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string()),
                tail.join("\n")
            )))
        }
        Err(_) => {
            group.kill();
            let _ = child.wait().await;
            Err(RuntimeError::ImageBuildTimeout {
                image: image.to_owned(),
                after: timeout,
            })
        }
    }
}

/// debootstrap's process group (it runs dpkg, chroots and maintainer scripts), killed when the
/// build times out or is dropped (an interrupted `forge images build`) before debootstrap was
/// reaped.
struct GroupGuard(Option<nix::unistd::Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Drops what no image needs: apt's lists and caches (every Dockerfile runs `apt-get update`),
/// logs, docs but their copyright files, man pages, locales, info pages, and the device nodes
/// (the engine gives every container its own `/dev`).
fn trim(root: &Path) -> std::io::Result<()> {
    let all = |_: &Path| false;
    clear(&root.join("var/lib/apt/lists"), &|p| {
        p.ends_with("partial") || p.ends_with("lock")
    })?;
    clear(&root.join("var/cache/apt"), &|p| {
        p.ends_with("archives") || p.ends_with("partial") || p.ends_with("lock")
    })?;
    // Logs go, their directories stay (apt writes into /var/log/apt).
    clear(&root.join("var/log"), &|p| p.is_dir())?;
    for d in ["usr/share/man", "usr/share/locale", "usr/share/info", "dev"] {
        clear(&root.join(d), &all)?;
    }
    clear(&root.join("usr/share/doc"), &|p| {
        p.is_dir() || p.ends_with("copyright")
    })
}

/// Removes what is below `dir`, but the entries `keep` accepts (directories kept are
/// cleared recursively). Never follows a symlink.
fn clear(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let path = e?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() && keep(&path) {
            clear(&path, keep)?;
        } else if meta.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else if !keep(&path) {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Writes the overlay into the new root. Refuses to write through a symlink of the root: an
/// absolute one would point at the host.
fn lay_overlay(tree: &Tree, root: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for (rel, entry) in tree {
        let path = root.join(rel);
        let mut at = root.to_path_buf();
        let parts: Vec<_> = Path::new(rel).components().collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            at.push(part);
            if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(format!(
                    "rootfs/{rel}: {} is a symlink in the new root",
                    at.display()
                ));
            }
        }
        let r = match entry {
            context::Entry::Dir(_) => std::fs::create_dir_all(&path),
            context::Entry::File(data, mode) => std::fs::write(&path, data).and_then(|()| {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            }),
            context::Entry::Link(target) => {
                let _ = std::fs::remove_file(&path);
                std::os::unix::fs::symlink(target, &path)
            }
        };
        r.map_err(|e| format!("writing rootfs/{rel}: {e}"))?;
    }
    Ok(())
}

/// Streams `tar -C root .` into `POST /images/create?fromSrc=-`.
async fn import(
    docker: &Docker,
    def: &ImageDef,
    mirror: &str,
    digest: &str,
    root: &Path,
) -> Result<(), RuntimeError> {
    let fail = |message: String| RuntimeError::ImageBuild {
        image: def.reference.clone(),
        message,
    };
    let mut tar = tokio::process::Command::new("tar")
        .args(["--numeric-owner", "--one-file-system", "-C"])
        .arg(root)
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("starting tar: {e}")))?;
    let stdout = tar
        .stdout
        .take()
        .ok_or_else(|| fail("tar has no stdout".into()))?;
    let body = futures::stream::unfold(Some(stdout), |out| async move {
        let mut out = out?;
        let mut buf = vec![0u8; 1 << 20];
        match out.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(out)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let (repo, tag) = def
        .reference
        .rsplit_once(':')
        .unwrap_or((&def.reference, "latest"));
    let opts = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.to_owned()),
        tag: Some(tag.to_owned()),
        message: Some(format!("forge images build: debootstrap from {mirror}")),
        changes: vec![
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "ENV LANG=C.UTF-8".into(),
            "CMD [\"/bin/bash\"]".into(),
            format!(
                "LABEL {}=1 {DIGEST_LABEL}={digest} {KIND_LABEL}=base",
                crate::labels::IMAGE
            ),
        ],
        ..Default::default()
    };
    let mut stream = docker.create_image(Some(opts), Some(bollard::body_try_stream(body)), None);
    while let Some(item) = stream.next().await {
        let info =
            item.map_err(|e| RuntimeError::docker(format!("import {}", def.reference), e))?;
        if let Some(m) = info.error_detail.and_then(|d| d.message) {
            return Err(fail(format!("import: {m}")));
        }
    }
    let status = tar.wait().await.map_err(|e| fail(format!("tar: {e}")))?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut s) = tar.stderr.take() {
            let _ = s.read_to_string(&mut err).await;
        }
        return Err(fail(format!(
            "tar of the new root failed ({status}): {}",
            err.trim()
        )));
    }
    Ok(())
}

/// A private directory for one base build, removed with everything below it when dropped,
/// after detaching any mount debootstrap left there (it mounts `/proc` and `/sys` inside).
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(parent: &Path) -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = parent.join(format!(
            "forge-debootstrap-{}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let below = format!("{}/", self.0.display());
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(unescape_mount_path))
            .filter(|m| m.starts_with(&below))
            .collect();
        // Deepest first.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in &mounts {
            if let Err(e) = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH) {
                // Never delete through a mount we could not detach.
                tracing::warn!(mount = %m, error = %e, "left {} in place", self.0.display());
                return;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove the base's work directory");
        }
    }
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path("/var/tmp/a\\040b/proc"),
            "/var/tmp/a b/proc"
        );
        assert_eq!(unescape_mount_path("/x\\"), "/x\\");
    }
}
