//! The local HS256 secret: 32 random bytes, hex-encoded in `<data_dir>/auth/hs256.secret`, mode
//! 0600 in a 0700 directory, created atomically on first use (two processes starting together
//! agree on one secret). A secret file that group or others may read or write is refused, with
//! the `chmod` that fixes it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::AuthSetupError;

/// File name inside `<data_dir>/auth/`.
pub const SECRET_FILE: &str = "hs256.secret";

/// `<data_dir>/auth/hs256.secret`.
pub fn secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("auth").join(SECRET_FILE)
}

fn err(path: &Path, reason: impl ToString) -> AuthSetupError {
    AuthSetupError::Secret {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads the data dir's HS256 secret, generating it first if there is none.
pub fn load_or_create_hs256_secret(data_dir: &Path) -> Result<Vec<u8>, AuthSetupError> {
    let path = secret_path(data_dir);
    match read_secret(&path) {
        Ok(Some(s)) => return Ok(s),
        Ok(None) => {}
        Err(e) => return Err(e),
    }
    let dir = path.parent().expect("secret path has a parent");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(dir, e))?;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    // Write a private temp file, then hard-link it into place: link fails if another process
    // won the race, and then its secret is the one everyone uses.
    let tmp = dir.join(format!(
        ".{SECRET_FILE}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(&tmp, e))?;
        f.write_all(hex::encode(secret).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| err(&tmp, e))?;
    }
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(secret.to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_secret(&path)?.ok_or_else(|| err(&path, "it vanished while being created"))
        }
        Err(e) => Err(err(&path, e)),
    }
}

fn read_secret(path: &Path) -> Result<Option<Vec<u8>>, AuthSetupError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(path, e)),
    };
    // Anyone who can read the secret can mint tokens for any tenant; anyone who can write it
    // can swap in their own.
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(
            path,
            format!(
                "it is readable or writable by other users (mode {mode:04o}); run `chmod 600 {}`",
                path.display()
            ),
        ));
    }
    let text = fs::read_to_string(path).map_err(|e| err(path, e))?;
    let bytes =
        hex::decode(text.trim()).map_err(|_| err(path, "it must hold 64 hex digits (32 bytes)"))?;
    if bytes.len() < 32 {
        return Err(err(
            path,
            format!("it holds {} bytes; at least 32 are required", bytes.len()),
        ));
    }
    Ok(Some(bytes))
}
