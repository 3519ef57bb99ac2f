//! A lab container's `/etc/hosts`, written by the runtime instead of Docker's network sandbox.
//!
//! With `network_mode: none` Docker still builds a network sandbox per container: it creates
//! and bind-mounts a namespace, writes `/etc/hosts` and `/etc/resolv.conf`, and adds an OCI
//! prestart hook that re-executes the whole `dockerd` binary (`libnetwork-setkey`) inside every
//! container start. Measured on the engine here (20.10, three hardened containers started at
//! once), that sandbox is more than half of `docker start`: 750–880 ms with it, 290–390 ms
//! without. A lab does not need it: the runtime plumbs each container's namespace itself (see
//! the crate docs), and the sandbox's only other product is `/etc/hosts`.
//!
//! So on an engine whose storage driver is `overlay2`, lab containers are created with
//! `NetworkDisabled` (runc still gives each one a new, empty network namespace with `lo` up; no
//! sandbox, no hook) and the runtime writes the lab's hosts file into the container's own
//! writable layer (`GraphDriver.Data.UpperDir` from `docker inspect`) after create and before
//! start. This is what `docker cp` into a created container does, which the engine refuses
//! only because the root is read-only. The file then lives and dies with the container: it
//! survives restarts (no re-write on revive), is read-only inside (the root is), is owned by
//! the container's root (the remapped uid that owns the layer), and is not a host mount, so
//! docs/design.md §6 ("no host mounts") holds unchanged. Other storage drivers keep Docker's
//! sandbox and `extra_hosts`.
//!
//! Invariant: only a container that has never started is written to (its upper layer is empty
//! and nothing in the lab can have planted a symlink), and nothing is followed while writing.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, fstat, mkdirat};
use nix::unistd::{Gid, Uid, fchown};

use crate::error::RuntimeError;

/// Writes `text` as `etc/hosts` into a never-started container's writable layer `upper`.
pub(crate) fn write_into_layer(
    container: &str,
    upper: &Path,
    text: &str,
) -> Result<(), RuntimeError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| RuntimeError::HostsFile {
        container: container.to_owned(),
        message: format!("{what} in {}: {e}", upper.display()),
    };
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let layer = open(upper, dir_flags, Mode::empty()).map_err(|e| fail("open layer", &e))?;
    // The layer belongs to the container's root (the remapped uid under --userns-remap): what
    // is written here must too, or the lab sees `nobody`'s files.
    let owner = fstat(&layer).map_err(|e| fail("stat layer", &e))?;
    let (uid, gid) = (
        Some(Uid::from_raw(owner.st_uid)),
        Some(Gid::from_raw(owner.st_gid)),
    );
    match mkdirat(&layer, "etc", Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(fail("create etc", &e)),
    }
    // O_NOFOLLOW: an `etc` that is not a plain directory is refused, never followed.
    let etc = openat(&layer, "etc", dir_flags, Mode::empty()).map_err(|e| fail("open etc", &e))?;
    fchown(etc.as_fd(), uid, gid).map_err(|e| fail("chown etc", &e))?;
    let file = openat(
        &etc,
        "hosts",
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| fail("create etc/hosts", &e))?;
    fchown(file.as_fd(), uid, gid).map_err(|e| fail("chown etc/hosts", &e))?;
    std::fs::File::from(file)
        .write_all(text.as_bytes())
        .map_err(|e| fail("write etc/hosts", &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn writes_a_read_only_hosts_file_owned_like_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        write_into_layer("web", dir.path(), "127.0.0.1\tlocalhost\n").unwrap();
        let f = dir.path().join("etc/hosts");
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "127.0.0.1\tlocalhost\n"
        );
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o644);
        assert_eq!(m.uid(), std::fs::metadata(dir.path()).unwrap().uid());
        // A second write would replace what the container already has: refused.
        let again = write_into_layer("web", dir.path(), "x").unwrap_err();
        assert!(again.to_string().contains("web"), "{again}");
    }

    #[test]
    fn never_follows_a_symlinked_etc() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("etc")).unwrap();
        let e = write_into_layer("web", dir.path(), "x").unwrap_err();
        assert!(e.to_string().contains("open etc"), "{e}");
        assert!(!elsewhere.path().join("hosts").exists());
    }
}
