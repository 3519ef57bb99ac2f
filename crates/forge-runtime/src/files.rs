//! Reading files from lab containers without running anything in them: Docker's archive API
//! (`GET /containers/{id}/archive`, untarred in memory under a size cap, symlinks followed),
//! and for the tmpfs mounts that API cannot see, the container's own root through
//! `/proc/<pid>/root` with `openat2(RESOLVE_IN_ROOT)`.

use std::io::Read;

use bollard::Docker;
use bollard::query_parameters::DownloadFromContainerOptions;
use futures::StreamExt;

use crate::FileContent;
use crate::error::{RuntimeError, status_of};
use crate::exec::inspect;

/// Extra bytes accepted on top of the content cap for tar headers.
const TAR_SLACK: usize = 64 * 1024;
const MAX_SYMLINK_DEPTH: usize = 8;

/// Refuses a relative file path. The fake backend calls it too, so both fail alike (the
/// conformance suite holds them to the same error).
pub(crate) fn require_absolute(path: &str) -> Result<(), RuntimeError> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "file path `{path}` must be absolute"
        )))
    }
}

/// Reads a regular file through `GET /containers/{id}/archive`, following symlinks.
pub(crate) async fn read_file(
    docker: &Docker,
    target: &str,
    display: &str,
    scenario: &str,
    path: &str,
    max_bytes: usize,
) -> Result<FileContent, RuntimeError> {
    require_absolute(path)?;
    let mut current = path.to_owned();
    for _ in 0..MAX_SYMLINK_DEPTH {
        if on_tmpfs(&current) {
            return read_via_proc(docker, target, display, scenario, path, &current, max_bytes)
                .await;
        }
        let opts = DownloadFromContainerOptions {
            path: current.clone(),
        };
        let mut stream = docker.download_from_container(target, Some(opts));
        let mut tar = Vec::new();
        let mut cut = false;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| match status_of(&e) {
                Some(404) if e.to_string().contains("No such container") => {
                    RuntimeError::NoSuchContainer {
                        scenario: scenario.into(),
                        container: display.into(),
                    }
                }
                Some(404) => RuntimeError::FileNotFound {
                    container: display.into(),
                    path: path.into(),
                },
                _ => RuntimeError::docker(format!("read {path} in {display}"), e),
            })?;
            tar.extend_from_slice(&chunk);
            if tar.len() > max_bytes + TAR_SLACK {
                cut = true;
                break;
            }
        }
        match first_entry(&tar, max_bytes).map_err(|m| RuntimeError::Exec {
            container: display.into(),
            message: m,
        })? {
            Entry::File { bytes, size } => {
                let truncated = cut || (bytes.len() as u64) < size;
                return Ok(FileContent {
                    path: path.into(),
                    bytes,
                    size,
                    truncated,
                });
            }
            Entry::Link(target) => current = resolve(&current, &target),
            Entry::Other => {
                return Err(RuntimeError::NotAFile {
                    container: display.into(),
                    path: path.into(),
                });
            }
        }
    }
    Err(RuntimeError::NotAFile {
        container: display.into(),
        path: path.into(),
    })
}

/// Docker's archive API cannot see tmpfs mounts (20.10: "Could not find the file"), and the
/// root is read-only, so everything a learner writes lives on one of these, or on a tmpfs an
/// image asked for (only ever below `hardening::IMAGE_TMPFS_ROOTS`; a path there that is not
/// on a tmpfs reads the same through `/proc/<pid>/root`).
const TMPFS_DIRS: [&str; 4] = ["/tmp", "/run", "/var/run", "/dev/shm"];

fn on_tmpfs(path: &str) -> bool {
    TMPFS_DIRS
        .iter()
        .chain(crate::hardening::IMAGE_TMPFS_ROOTS.iter())
        .any(|d| path == *d || path.strip_prefix(d).is_some_and(|r| r.starts_with('/')))
}

/// Reads a file on a tmpfs through the container's root as its init sees it
/// (`/proc/<pid>/root`). The path is resolved with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`,
/// so `..` and symlinks planted in the lab (`/tmp/x -> /etc/shadow`) stay inside the
/// container's root instead of reaching the host's. Opened non-blocking so a FIFO cannot
/// hang us; anything but a regular file is refused.
async fn read_via_proc(
    docker: &Docker,
    target: &str,
    display: &str,
    scenario: &str,
    original: &str,
    path: &str,
    max_bytes: usize,
) -> Result<FileContent, RuntimeError> {
    let info = inspect(docker, target, display, scenario).await?;
    let state = info.state.unwrap_or_default();
    let pid = match state.pid {
        Some(p) if p > 0 && state.running == Some(true) => p,
        // A stopped container's tmpfs is gone, and with it the file.
        _ => {
            return Err(RuntimeError::FileNotFound {
                container: display.into(),
                path: original.into(),
            });
        }
    };
    let rel = path.trim_start_matches('/').to_owned();
    let res = tokio::task::spawn_blocking(move || read_in_root(pid, &rel, max_bytes))
        .await
        .map_err(|e| RuntimeError::Exec {
            container: display.into(),
            message: e.to_string(),
        })?;
    match res {
        Ok(Some((bytes, size))) => {
            let truncated = (bytes.len() as u64) < size;
            Ok(FileContent {
                path: original.into(),
                bytes,
                size,
                truncated,
            })
        }
        Ok(None) => Err(RuntimeError::NotAFile {
            container: display.into(),
            path: original.into(),
        }),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(nix::libc::ENOTDIR) =>
        {
            Err(RuntimeError::FileNotFound {
                container: display.into(),
                path: original.into(),
            })
        }
        Err(e) => Err(RuntimeError::Exec {
            container: display.into(),
            message: format!("read {original}: {e}"),
        }),
    }
}

/// `Ok(None)`: not a regular file.
fn read_in_root(pid: i64, rel: &str, max_bytes: usize) -> std::io::Result<Option<(Vec<u8>, u64)>> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
    use nix::sys::stat::Mode;
    let root = open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let file = std::fs::File::from(openat2(&root, rel, how)?);
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.take(max_bytes as u64).read_to_end(&mut bytes)?;
    Ok(Some((bytes, meta.len())))
}

enum Entry {
    File { bytes: Vec<u8>, size: u64 },
    Link(String),
    Other,
}

fn first_entry(tar: &[u8], max_bytes: usize) -> Result<Entry, String> {
    let mut archive = tar::Archive::new(tar);
    let mut entries = archive.entries().map_err(|e| format!("bad archive: {e}"))?;
    let entry = entries
        .next()
        .ok_or("empty archive")?
        .map_err(|e| format!("bad archive: {e}"))?;
    let kind = entry.header().entry_type();
    if kind.is_symlink() {
        let target = entry
            .link_name()
            .ok()
            .flatten()
            .ok_or("symlink without target")?;
        return Ok(Entry::Link(target.to_string_lossy().into_owned()));
    }
    if !kind.is_file() {
        return Ok(Entry::Other);
    }
    let size = entry.header().size().unwrap_or(0);
    let mut bytes = Vec::new();
    // A cut-off archive simply yields fewer bytes; `truncated` reports it.
    let _ = entry.take(max_bytes as u64).read_to_end(&mut bytes);
    Ok(Entry::File { bytes, size })
}

fn resolve(current: &str, target: &str) -> String {
    if target.starts_with('/') {
        target.to_owned()
    } else {
        let dir = current.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        format!("{dir}/{target}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_links() {
        assert_eq!(resolve("/etc/motd", "issue"), "/etc/issue");
        assert_eq!(resolve("/etc/motd", "/x/y"), "/x/y");
    }

    #[test]
    fn knows_the_tmpfs_mounts() {
        assert!(on_tmpfs("/tmp/x") && on_tmpfs("/run/a/b") && on_tmpfs("/tmp"));
        assert!(!on_tmpfs("/tmpx") && !on_tmpfs("/etc/passwd"));
    }
}
