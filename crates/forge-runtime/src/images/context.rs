//! Deterministic build contexts: a tree of entries written as a tar with sorted paths, mtime 0,
//! uid/gid 0 and normalised modes, so the same files always give the same bytes and the same
//! SHA-256 (the image's `forge.image.digest`), whatever the checkout's umask or timestamps.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

/// One entry of a build context.
pub(super) enum Entry {
    Dir(u32),
    File(Vec<u8>, u32),
    Link(String),
}

/// Paths (relative, `/`-separated) to entries; a `BTreeMap` so the tar is sorted.
pub(super) type Tree = BTreeMap<String, Entry>;

/// Adds everything below `dir` to `tree` under `prefix` (`""` for the context's root),
/// skipping the top-level names in `skip`.
pub(super) fn add_dir(
    tree: &mut Tree,
    prefix: &str,
    dir: &Path,
    skip: &[&str],
) -> std::io::Result<()> {
    walk(dir, dir, prefix, skip, tree)
}

fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    skip: &[&str],
    tree: &mut Tree,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .map_err(std::io::Error::other)?
            .to_string_lossy()
            .into_owned();
        if dir == root && skip.contains(&rel.as_str()) {
            continue;
        }
        let key = if prefix.is_empty() {
            rel
        } else {
            format!("{prefix}/{rel}")
        };
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            tree.insert(
                key,
                Entry::Link(std::fs::read_link(&path)?.to_string_lossy().into_owned()),
            );
        } else if meta.is_dir() {
            tree.insert(key, Entry::Dir(0o755));
            walk(root, &path, prefix, skip, tree)?;
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

/// The tar of `tree` and its SHA-256 (hex).
pub(super) fn tar(tree: &Tree) -> Result<(Vec<u8>, String), String> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, entry) in tree {
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
        r.map_err(|e| format!("tar {path}: {e}"))?;
    }
    let bytes = b.into_inner().map_err(|e| format!("tar: {e}"))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    Ok((bytes, digest))
}

/// SHA-256 (hex) of `parts`, each length-prefixed so no two lists of parts collide.
pub(super) fn digest_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_files_same_digest_whatever_the_mode_bits() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join("image.toml"), "name = \"x\"\n").unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/a"), "a").unwrap();
        let digest = |skip: &[&str]| {
            let mut t = Tree::new();
            add_dir(&mut t, "", dir.path(), skip).unwrap();
            tar(&t).unwrap().1
        };
        let first = digest(&["image.toml"]);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("etc/a"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(dir.path().join("image.toml"), "name = \"y\"\n").unwrap();
        assert_eq!(
            digest(&["image.toml"]),
            first,
            "mode bits and image.toml ignored"
        );
        std::fs::write(dir.path().join("etc/a"), "b").unwrap();
        assert_ne!(digest(&["image.toml"]), first, "content counts");
        assert_ne!(digest_of(&["ab", "c"]), digest_of(&["a", "bc"]));
    }
}
