//! The verifier's side of keys: an exported public keyset, a single trusted PEM key, and the
//! rules that turn a key id into a key (revoked fails, retired passes within retention).

use std::fs;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{
    KeyError, KeyPurpose, KeyRecord, KeyStatus, Keyring, io_err, key_id_for, keyring_exists,
};

/// One public key with its status, as exported for verifiers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicKeyEntry {
    #[serde(flatten)]
    pub record: KeyRecord,
    pub public_key_pem: String,
}

/// The public half of a keyring: all an offline verifier needs besides the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySet {
    pub purpose: KeyPurpose,
    pub retention_days: i64,
    pub keys: Vec<PublicKeyEntry>,
}

/// Why a key id cannot be used to verify.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyResolveError {
    #[error("key `{0}` is not known to the key source")]
    Unknown(String),
    #[error("key `{key_id}` was revoked at {revoked_at}")]
    Revoked { key_id: String, revoked_at: String },
    #[error("key `{key_id}` was retired and its retention window ended at {valid_until}")]
    Expired {
        key_id: String,
        valid_until: DateTime<Utc>,
    },
    #[error("key `{key_id}` is unusable: {reason}")]
    Bad { key_id: String, reason: String },
}

/// Where a verifier gets public keys from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A keyset with statuses: revoked keys fail, retired keys pass within the retention window.
    KeySet(KeySet),
    /// One explicitly trusted public key (e.g. `--public-key key.pem`); its status is unknown, so
    /// it is taken as active. Its key id is derived from the key itself.
    PublicKey { key_id: String, key: VerifyingKey },
}

impl KeySource {
    pub fn from_keyring(keyring: &Keyring) -> Result<Self, KeyError> {
        Ok(Self::KeySet(keyring.export_public()?))
    }

    /// A single SPKI PEM public key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key =
            VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| KeyError::BadPublicKey {
                what: "public key pem".into(),
                reason: e.to_string(),
            })?;
        Ok(Self::PublicKey {
            key_id: key_id_for(&key),
            key,
        })
    }

    /// A file holding either a PEM public key or an exported keyset JSON.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        if text.trim_start().starts_with("-----BEGIN") {
            return Self::from_pem(&text);
        }
        let set: KeySet = serde_json::from_str(&text).map_err(|e| KeyError::BadPublicKey {
            what: path.display().to_string(),
            reason: format!("neither a pem public key nor a keyset json: {e}"),
        })?;
        Ok(Self::KeySet(set))
    }

    /// The keys a verifier of `purpose` signatures trusts: the file `file` (a PEM public key or
    /// an exported keyset JSON) when given, else the `purpose` keyring in `data_dir`, which must
    /// exist ([`KeyError::NoKeyring`] otherwise; an empty keyring would trust nothing).
    pub fn load(
        data_dir: &Path,
        purpose: KeyPurpose,
        file: Option<&Path>,
    ) -> Result<Self, KeyError> {
        if let Some(path) = file {
            return Self::from_file(path);
        }
        if !keyring_exists(data_dir, purpose) {
            return Err(KeyError::NoKeyring {
                purpose,
                dir: Keyring::dir_for(data_dir, purpose),
            });
        }
        Self::from_keyring(&Keyring::open(data_dir, purpose)?)
    }

    /// The key to verify `key_id`'s signatures with at time `now`, and its status.
    pub fn resolve(
        &self,
        key_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(VerifyingKey, KeyStatus), KeyResolveError> {
        match self {
            Self::PublicKey { key_id: id, key } if id == key_id => Ok((*key, KeyStatus::Active)),
            Self::PublicKey { .. } => Err(KeyResolveError::Unknown(key_id.to_owned())),
            Self::KeySet(set) => {
                let entry = set
                    .keys
                    .iter()
                    .find(|k| k.record.key_id == key_id)
                    .ok_or_else(|| KeyResolveError::Unknown(key_id.to_owned()))?;
                let bad = |reason: String| KeyResolveError::Bad {
                    key_id: key_id.to_owned(),
                    reason,
                };
                let key = VerifyingKey::from_public_key_pem(entry.public_key_pem.trim())
                    .map_err(|e| bad(e.to_string()))?;
                // A keyset entry whose PEM does not hash to its id was edited: never trust it.
                if key_id_for(&key) != key_id {
                    return Err(bad("public key does not hash to its key id".into()));
                }
                let r = &entry.record;
                match r.status {
                    KeyStatus::Active => {}
                    KeyStatus::Revoked => {
                        return Err(KeyResolveError::Revoked {
                            key_id: key_id.to_owned(),
                            revoked_at: r
                                .revoked_at
                                .map(|t| t.to_rfc3339())
                                .unwrap_or_else(|| "an unknown time".into()),
                        });
                    }
                    KeyStatus::Retired => {
                        let retired = r.retired_at.unwrap_or(r.created_at);
                        let valid_until = retired + Duration::days(set.retention_days);
                        if now > valid_until {
                            return Err(KeyResolveError::Expired {
                                key_id: key_id.to_owned(),
                                valid_until,
                            });
                        }
                    }
                }
                Ok((key, r.status))
            }
        }
    }

    /// Every key id this source knows (for messages).
    pub fn key_ids(&self) -> Vec<String> {
        match self {
            Self::PublicKey { key_id, .. } => vec![key_id.clone()],
            Self::KeySet(set) => set.keys.iter().map(|k| k.record.key_id.clone()).collect(),
        }
    }
}

/// Verifies a base64 Ed25519 signature strictly (rejects malleable and small-order forms).
pub(crate) fn verify_b64(
    key: &VerifyingKey,
    message: &[u8],
    signature_b64: &str,
) -> Result<(), String> {
    let raw = crate::util::b64_decode(signature_b64)
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let bytes: [u8; 64] = raw
        .as_slice()
        .try_into()
        .map_err(|_| format!("signature is {} bytes, expected 64", raw.len()))?;
    key.verify_strict(message, &Signature::from_bytes(&bytes))
        .map_err(|_| "ed25519 signature does not verify".to_owned())
}
