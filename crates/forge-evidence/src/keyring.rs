//! Ed25519 keys on disk, one keyring per purpose (`verdict` signs bundles, `audit` signs the audit
//! log), so a leaked audit key cannot forge verdicts and vice versa.
//!
//! Layout under `<data_dir>/keys/<purpose>/` (directories mode 0700, files mode 0600):
//! - `keyring.json`: the index (`purpose`, `retention_days`, `keys: [{key_id, algorithm,
//!   created_at, status, retired_at?, revoked_at?}]`), replaced atomically;
//! - `<key_id>.key.pem`: PKCS#8 PEM private key, only while the key is active; refused on read
//!   when group or others may read or write it ([`KeyError::InsecureMode`]);
//! - `<key_id>.pub.pem`: SPKI PEM public key, kept for every key ever made;
//! - `.lock`: advisory lock so two processes (a service and `forge keys rotate`) never interleave
//!   read-modify-write cycles of the index.
//!
//! A key id is `ed25519-` + the first 16 hex digits of SHA-256 of the raw 32-byte public key, so
//! anyone holding the public key can recompute it. Only the active key signs: rotation retires the
//! old key and deletes its private half (a retired key never needs to sign again), and it stays
//! valid for verification for `retention_days` (default 365) after retirement. Revocation deletes
//! the private half too and makes every signature by that key fail verification.
//!
//! Keys are rotated when they are older than [`ROTATION_CADENCE`] (the spec's 90 days):
//! [`rotate_due_keys`] does it for every purpose at start-up, and a running audit log that
//! follows its keyring ([`crate::AuditLog::open_following`]) picks up a rotation or revocation
//! made by any process without a restart.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::util::{atomic_replace, sha256_hex, write_new};

mod signer;
mod source;

pub use signer::Signer;
pub(crate) use source::verify_b64;
pub use source::{KeyResolveError, KeySet, KeySource, PublicKeyEntry};

/// Retired keys stay valid for verification this long unless the keyring says otherwise.
pub const DEFAULT_RETENTION_DAYS: i64 = 365;
/// The spec's rotation cadence, for [`Keyring::rotate_if_due`].
pub const ROTATION_CADENCE_DAYS: i64 = 90;
/// [`ROTATION_CADENCE_DAYS`] as a duration.
pub const ROTATION_CADENCE: Duration = Duration::days(ROTATION_CADENCE_DAYS);
/// Mode of every file a keyring writes; its directories are 0700.
const FILE_MODE: u32 = 0o600;

/// What a keyring's keys sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPurpose {
    Verdict,
    Audit,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verdict => "verdict",
            Self::Audit => "audit",
        }
    }
}

impl std::fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Life-cycle state of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Retired,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
        }
    }
}

/// One entry of `keyring.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: String,
    pub algorithm: String,
    pub created_at: DateTime<Utc>,
    pub status: KeyStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Errors of key management and key lookup.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: malformed keyring index: {reason}")]
    BadIndex { path: PathBuf, reason: String },
    #[error("{path}: keyring is for purpose `{found}`, expected `{expected}`")]
    WrongPurpose {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("key `{0}` is not in the keyring")]
    UnknownKey(String),
    #[error("key `{0}` is already revoked")]
    AlreadyRevoked(String),
    #[error("key `{key_id}`: {reason}")]
    BadKey { key_id: String, reason: String },
    #[error("the keyring has no active key")]
    NoActiveKey,
    #[error("{what}: {reason}")]
    BadPublicKey { what: String, reason: String },
    #[error("no {purpose} keyring in {}", dir.display())]
    NoKeyring { purpose: KeyPurpose, dir: PathBuf },
    #[error(
        "{}: private key is readable or writable by other users (mode {mode:04o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecureMode { path: PathBuf, mode: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The key id of a public key: `ed25519-` + 16 hex digits of its SHA-256.
pub fn key_id_for(key: &VerifyingKey) -> String {
    format!("ed25519-{}", &sha256_hex(key.as_bytes())[..16])
}

/// Whether `s` has the shape of a key id (checked before using it in a file name).
pub fn is_key_id(s: &str) -> bool {
    s.strip_prefix("ed25519-").is_some_and(|h| {
        h.len() == 16
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Index {
    purpose: KeyPurpose,
    retention_days: i64,
    keys: Vec<KeyRecord>,
}

/// One purpose's keys in one directory. Reads are from a snapshot taken at open (or the last
/// mutation); mutations lock, reload, change and atomically rewrite the index.
#[derive(Debug, Clone)]
pub struct Keyring {
    dir: PathBuf,
    purpose: KeyPurpose,
    index: Index,
}

impl Keyring {
    /// `<data_dir>/keys/<purpose>`.
    pub fn dir_for(data_dir: &Path, purpose: KeyPurpose) -> PathBuf {
        data_dir.join("keys").join(purpose.as_str())
    }

    /// Opens the `purpose` keyring of `data_dir`. Creates nothing: a missing keyring is empty
    /// until the first [`Keyring::signer`] or [`Keyring::rotate`].
    pub fn open(data_dir: &Path, purpose: KeyPurpose) -> Result<Self, KeyError> {
        Self::open_dir(&Self::dir_for(data_dir, purpose), purpose)
    }

    /// Opens a keyring stored directly in `dir`.
    pub fn open_dir(dir: &Path, purpose: KeyPurpose) -> Result<Self, KeyError> {
        let index = read_index(dir, purpose)?;
        Ok(Self {
            dir: dir.to_owned(),
            purpose,
            index,
        })
    }

    pub fn purpose(&self) -> KeyPurpose {
        self.purpose
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn keys(&self) -> &[KeyRecord] {
        &self.index.keys
    }

    pub fn retention(&self) -> Duration {
        Duration::days(self.index.retention_days)
    }

    pub fn active(&self) -> Option<&KeyRecord> {
        self.index
            .keys
            .iter()
            .find(|k| k.status == KeyStatus::Active)
    }

    pub fn get(&self, key_id: &str) -> Option<&KeyRecord> {
        self.index.keys.iter().find(|k| k.key_id == key_id)
    }

    /// Re-reads the index from disk (another process may have rotated).
    pub fn reload(&mut self) -> Result<(), KeyError> {
        self.index = read_index(&self.dir, self.purpose)?;
        Ok(())
    }

    /// Sets how many days retired keys stay valid for verification.
    pub fn set_retention_days(&mut self, days: i64) -> Result<(), KeyError> {
        self.mutate(|_, index| {
            index.retention_days = days.max(0);
            Ok(())
        })
    }

    /// The active key as a [`Signer`], generating the keyring's first key on first use.
    pub fn signer(&mut self) -> Result<Signer, KeyError> {
        // Reload first: another process may have rotated, deleting the key we remember.
        self.reload()?;
        let key_id = match self.active() {
            Some(k) => k.key_id.clone(),
            None => self.mutate(|dir, index| {
                match index.keys.iter().find(|k| k.status == KeyStatus::Active) {
                    Some(k) => Ok(k.key_id.clone()),
                    None => new_active_key(dir, index, Utc::now()),
                }
            })?,
        };
        let path = self.dir.join(format!("{key_id}.key.pem"));
        let pem = read_private(&path)?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::BadKey {
            key_id: key_id.clone(),
            reason: e.to_string(),
        })?;
        let signer = Signer::from_signing_key(key);
        if signer.key_id() != key_id {
            return Err(KeyError::BadKey {
                key_id,
                reason: "private key does not match its key id".into(),
            });
        }
        Ok(signer)
    }

    /// Makes a new active key and retires the current one. Returns the new key's record.
    pub fn rotate(&mut self) -> Result<KeyRecord, KeyError> {
        let now = Utc::now();
        let key_id = self.mutate(|dir, index| {
            retire_active(dir, index, now);
            new_active_key(dir, index, now)
        })?;
        Ok(self.get(&key_id).cloned().expect("new key is in the index"))
    }

    /// Rotates when the active key is older than `period` at `now` (the spec's cadence is
    /// [`ROTATION_CADENCE`]); [`rotate_due_keys`] calls it at start-up. Returns the new key, if
    /// any. A keyring without an active key is left alone: [`Keyring::signer`] makes its first
    /// key when one is needed. Two processes starting together rotate once: the age is checked
    /// again under the keyring's lock.
    pub fn rotate_if_due(
        &mut self,
        now: DateTime<Utc>,
        period: Duration,
    ) -> Result<Option<KeyRecord>, KeyError> {
        let due = |index: &Index| {
            index
                .keys
                .iter()
                .find(|k| k.status == KeyStatus::Active)
                .is_some_and(|k| now - k.created_at >= period)
        };
        self.reload()?;
        if !due(&self.index) {
            return Ok(None);
        }
        let key_id = self.mutate(|dir, index| {
            if !due(index) {
                return Ok(None);
            }
            retire_active(dir, index, now);
            new_active_key(dir, index, now).map(Some)
        })?;
        Ok(key_id.and_then(|id| self.get(&id).cloned()))
    }

    /// Revokes `key_id`: every signature by it fails verification from now on. If it was the
    /// active key a new active key is made and returned.
    pub fn revoke(&mut self, key_id: &str) -> Result<Option<KeyRecord>, KeyError> {
        let now = Utc::now();
        let new_id = self.mutate(|dir, index| {
            let k = index
                .keys
                .iter_mut()
                .find(|k| k.key_id == key_id)
                .ok_or_else(|| KeyError::UnknownKey(key_id.to_owned()))?;
            if k.status == KeyStatus::Revoked {
                return Err(KeyError::AlreadyRevoked(key_id.to_owned()));
            }
            let was_active = k.status == KeyStatus::Active;
            k.status = KeyStatus::Revoked;
            k.revoked_at = Some(now);
            remove_private(dir, key_id);
            if was_active {
                new_active_key(dir, index, now).map(Some)
            } else {
                Ok(None)
            }
        })?;
        Ok(new_id.and_then(|id| self.get(&id).cloned()))
    }

    /// The public key of `key_id`, whatever its status.
    pub fn public_key(&self, key_id: &str) -> Result<VerifyingKey, KeyError> {
        let pem = self.public_key_pem(key_id)?;
        VerifyingKey::from_public_key_pem(&pem).map_err(|e| KeyError::BadKey {
            key_id: key_id.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The SPKI PEM of `key_id`'s public key, whatever its status.
    pub fn public_key_pem(&self, key_id: &str) -> Result<String, KeyError> {
        if !is_key_id(key_id) || self.get(key_id).is_none() {
            return Err(KeyError::UnknownKey(key_id.to_owned()));
        }
        let path = self.dir.join(format!("{key_id}.pub.pem"));
        fs::read_to_string(&path).map_err(io_err(&path))
    }

    /// Every key's public half and status, for offline verifiers.
    pub fn export_public(&self) -> Result<KeySet, KeyError> {
        let keys = self
            .index
            .keys
            .iter()
            .map(|record| {
                Ok(PublicKeyEntry {
                    public_key_pem: self.public_key_pem(&record.key_id)?,
                    record: record.clone(),
                })
            })
            .collect::<Result<_, KeyError>>()?;
        Ok(KeySet {
            purpose: self.purpose,
            retention_days: self.index.retention_days,
            keys,
        })
    }

    /// Runs `f` on a freshly loaded index under the directory lock, then persists the index.
    fn mutate<T>(
        &mut self,
        f: impl FnOnce(&Path, &mut Index) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir))?;
        let lock_path = self.dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        let mut index = read_index(&self.dir, self.purpose)?;
        let out = f(&self.dir, &mut index)?;
        let path = self.dir.join("keyring.json");
        let mut bytes = serde_json::to_vec_pretty(&index).expect("index serialises");
        bytes.push(b'\n');
        atomic_replace(&path, &bytes, FILE_MODE).map_err(io_err(&path))?;
        self.index = index;
        drop(lock);
        Ok(out)
    }
}

fn read_index(dir: &Path, purpose: KeyPurpose) -> Result<Index, KeyError> {
    let path = dir.join("keyring.json");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Index {
                purpose,
                retention_days: DEFAULT_RETENTION_DAYS,
                keys: vec![],
            });
        }
        Err(source) => return Err(KeyError::Io { path, source }),
    };
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| KeyError::BadIndex {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if index.purpose != purpose {
        return Err(KeyError::WrongPurpose {
            path,
            found: index.purpose.as_str().into(),
            expected: purpose.as_str().into(),
        });
    }
    Ok(index)
}

/// Generates a key, writes its two PEM files and appends it to `index` as active.
fn new_active_key(dir: &Path, index: &mut Index, now: DateTime<Utc>) -> Result<String, KeyError> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let key_id = key_id_for(&key.verifying_key());
    let private = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| KeyError::BadKey {
            key_id: key_id.clone(),
            reason: e.to_string(),
        })?;
    let public = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| KeyError::BadKey {
            key_id: key_id.clone(),
            reason: e.to_string(),
        })?;
    let priv_path = dir.join(format!("{key_id}.key.pem"));
    write_new(&priv_path, private.as_bytes(), FILE_MODE).map_err(io_err(&priv_path))?;
    let pub_path = dir.join(format!("{key_id}.pub.pem"));
    write_new(&pub_path, public.as_bytes(), FILE_MODE).map_err(io_err(&pub_path))?;
    index.keys.push(KeyRecord {
        key_id: key_id.clone(),
        algorithm: "ed25519".into(),
        created_at: now,
        status: KeyStatus::Active,
        retired_at: None,
        revoked_at: None,
    });
    Ok(key_id)
}

/// Retires every active key of `index` and deletes its private half.
fn retire_active(dir: &Path, index: &mut Index, now: DateTime<Utc>) {
    for k in index
        .keys
        .iter_mut()
        .filter(|k| k.status == KeyStatus::Active)
    {
        k.status = KeyStatus::Retired;
        k.retired_at = Some(now);
        remove_private(dir, &k.key_id);
    }
}

/// Reads a private key file, refusing one that group or others may read or write: a key
/// others could read may already be someone else's, and signing on with it would hide that.
fn read_private(path: &Path) -> Result<String, KeyError> {
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecureMode {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(io_err(path))
}

fn remove_private(dir: &Path, key_id: &str) {
    let path = dir.join(format!("{key_id}.key.pem"));
    if let Err(e) = fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not delete a retired private key");
    }
}

/// Whether `data_dir` has a `purpose` keyring index ("no keyring" is not "an empty one").
pub fn keyring_exists(data_dir: &Path, purpose: KeyPurpose) -> bool {
    File::open(Keyring::dir_for(data_dir, purpose).join("keyring.json")).is_ok()
}

/// Rotates, in every purpose's keyring that exists in `data_dir`, an active key older than
/// `period` at `now` (normally [`ROTATION_CADENCE`]); the platform calls it when it starts, so
/// keys are rotated on the spec's cadence without an operator. Returns the new keys.
pub fn rotate_due_keys(
    data_dir: &Path,
    now: DateTime<Utc>,
    period: Duration,
) -> Result<Vec<KeyRecord>, KeyError> {
    let mut rotated = Vec::new();
    for purpose in [KeyPurpose::Verdict, KeyPurpose::Audit] {
        if !keyring_exists(data_dir, purpose) {
            continue;
        }
        let mut ring = Keyring::open(data_dir, purpose)?;
        let old = ring.active().map(|k| k.key_id.clone());
        if let Some(new) = ring.rotate_if_due(now, period)? {
            tracing::info!(%purpose, new = %new.key_id, old = ?old, days = period.num_days(),
                "rotated a signing key that reached its rotation age");
            rotated.push(new);
        }
    }
    Ok(rotated)
}
