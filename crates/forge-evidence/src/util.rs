//! Small shared helpers: hashing, canonical JSON, base64 and crash-safe file writes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// RFC 8785 canonical JSON of `value`. Serialising our own types cannot fail (no maps with
/// non-string keys, no non-finite floats reach here), so a failure is a bug worth a clear message.
pub(crate) fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json_canonicalizer::to_vec(value).map_err(|e| format!("canonical json: {e}"))
}

pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn b64_decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(s)
}

/// Replaces `path` atomically: write a sibling temp file, fsync it, rename over `path`, fsync the
/// directory. Readers see the old or the new content, never a torn file.
pub(crate) fn atomic_replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    via_temp(path, bytes, mode, |tmp, path| fs::rename(tmp, path))
}

/// Creates `path` with `bytes` only if it does not exist yet, atomically: the content is written
/// to a temp file first and then hard-linked into place, because link(2) fails with `EEXIST`
/// where rename(2) would silently overwrite.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    via_temp(path, bytes, mode, |tmp, path| fs::hard_link(tmp, path))
}

/// Writes `bytes` to a fsynced sibling temp file, `place`s it at `path`, fsyncs the directory,
/// and removes the temp name whatever happened (after a rename it is already gone).
fn via_temp(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    place: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        place(&tmp, path)?;
        sync_dir(dir)
    })();
    let _ = fs::remove_file(&tmp);
    result
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
