//! The write-once evidence store (spec: "signatures are stored alongside evidence in the primary
//! artifact store ... with immutable object locking").
//!
//! [`EvidenceStore`] is the seam: the local-directory backend here serves embedded mode,
//! [`S3Store`] (an S3-compatible bucket with object lock, `s3.rs`) serves distributed mode.
//! Write-once is part of the contract, not a backend feature: `put` on an existing key fails with
//! [`StoreError::AlreadyExists`] and never replaces the object. Every backend must pass the
//! [`conformance`] suite (see [`crate::evidence_store_conformance`]).
//!
//! Keys are `/`-separated segments of `[A-Za-z0-9._-]`, no segment empty or starting with `.`
//! (so `..` and hidden temp files are impossible), at most 1024 bytes, never absolute. Bundles live
//! at `<scenario_id>/<file>`, so `url_for` gives the spec's `s3://forge-evidence/scn-…/verdict.sig`
//! in S3, and the file's own `file:///…/forge-evidence/scn-…/verdict.sig` in a local directory.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use forge_core::ScenarioId;

use crate::bundle::Bundle;
use crate::util::write_new;
use crate::verify::BundleFiles;

pub mod conformance;
mod s3;

pub use s3::{DEFAULT_RETENTION, RetentionMode, S3Config, S3Store};

/// The spec's bucket name (`MINIO_BUCKET`).
pub const DEFAULT_BUCKET: &str = "forge-evidence";

/// A validated object key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn new(key: impl Into<String>) -> Result<Self, StoreError> {
        let key = key.into();
        let bad = |reason: &str| StoreError::InvalidKey {
            key: key.clone(),
            reason: reason.to_owned(),
        };
        if key.is_empty() || key.len() > 1024 {
            return Err(bad("must be 1 to 1024 bytes"));
        }
        if key.starts_with('/') {
            return Err(bad("must not be absolute"));
        }
        for seg in key.split('/') {
            if seg.is_empty() {
                return Err(bad("has an empty segment"));
            }
            if seg.starts_with('.') {
                return Err(bad("has a segment starting with `.`"));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(bad(
                    "may only use ascii letters, digits, `.`, `_`, `-` and `/`",
                ));
            }
        }
        Ok(Self(key))
    }

    /// `<scenario_id>/<file>`.
    pub fn bundle_file(scenario_id: &ScenarioId, file: &str) -> Result<Self, StoreError> {
        Self::new(format!("{scenario_id}/{file}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Errors of an evidence store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid object key `{key}`: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("object `{0}` already exists and is never overwritten")]
    AlreadyExists(ObjectKey),
    #[error("object `{0}` does not exist")]
    NotFound(ObjectKey),
    #[error("evidence store i/o on `{key}`: {source}")]
    Io { key: String, source: std::io::Error },
    #[error("evidence store backend: {0}")]
    Backend(String),
}

/// Write-once object storage for evidence.
#[async_trait]
pub trait EvidenceStore: Send + Sync {
    /// Stores `bytes` at `key`; fails with `AlreadyExists` if anything is there already.
    async fn put(&self, key: &ObjectKey, bytes: Vec<u8>) -> Result<(), StoreError>;
    /// The object's bytes, or `NotFound`.
    async fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StoreError>;
    async fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError>;
    /// Keys starting with `prefix` (plain string prefix), sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, StoreError>;
    /// The object's URL: `s3://<bucket>/<key>` in an S3 bucket, `file:///<path>` in a local
    /// directory.
    fn url_for(&self, key: &ObjectKey) -> String;
    /// Whether the store can take evidence now (readiness probes), within [`PING_TIMEOUT`].
    async fn ping(&self) -> Result<(), StoreError>;
}

/// How long [`EvidenceStore::ping`] waits for the backend.
pub const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Objects as files under `<root>/<bucket>/<key>`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    bucket: String,
}

impl LocalStore {
    /// A store in `<root>/<bucket>`; the bucket name must be a single valid key segment.
    pub fn new(root: impl Into<PathBuf>, bucket: &str) -> Result<Self, StoreError> {
        if bucket.contains('/') {
            return Err(StoreError::InvalidKey {
                key: bucket.into(),
                reason: "bucket must be one segment".into(),
            });
        }
        ObjectKey::new(bucket)?;
        Ok(Self {
            root: root.into(),
            bucket: bucket.to_owned(),
        })
    }

    /// The local file holding `key`.
    pub fn path_for(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(&self.bucket).join(&key.0)
    }

    fn bucket_dir(&self) -> PathBuf {
        self.root.join(&self.bucket)
    }
}

async fn blocking<T: Send + 'static>(
    key: &ObjectKey,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io {
            key: key.0.clone(),
            source: std::io::Error::other(e),
        })?
}

#[async_trait]
impl EvidenceStore for LocalStore {
    async fn put(&self, key: &ObjectKey, bytes: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path_for(key);
        let k = key.clone();
        blocking(key, move || {
            let io = |source| StoreError::Io {
                key: k.0.clone(),
                source,
            };
            std::fs::create_dir_all(path.parent().expect("keys have a parent")).map_err(io)?;
            match write_new(&path, &bytes, 0o444) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(StoreError::AlreadyExists(k))
                }
                // A segment of the key is an existing object file (`a` then `a/b`).
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                    Err(StoreError::InvalidKey {
                        key: k.0.clone(),
                        reason: "a parent segment is an existing object".into(),
                    })
                }
                Err(e) => Err(io(e)),
            }
        })
        .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StoreError> {
        let path = self.path_for(key);
        let k = key.clone();
        blocking(key, move || match std::fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Err(StoreError::NotFound(k))
            }
            // A directory is a key prefix, not an object.
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => Err(StoreError::NotFound(k)),
            Err(source) => Err(StoreError::Io { key: k.0, source }),
        })
        .await
    }

    async fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        let path = self.path_for(key);
        blocking(key, move || {
            Ok(std::fs::metadata(&path)
                .map(|m| m.is_file())
                .unwrap_or(false))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, StoreError> {
        let dir = self.bucket_dir();
        let prefix = prefix.to_owned();
        let k = ObjectKey(prefix.clone());
        blocking(&k, move || {
            let mut out = Vec::new();
            walk(&dir, "", &prefix, &mut out).map_err(|source| StoreError::Io {
                key: prefix.clone(),
                source,
            })?;
            out.sort();
            Ok(out)
        })
        .await
    }

    /// `file://` and the object's absolute path: where the bundle really is on this machine
    /// (`forge bundle verify` reads its directory as it is).
    fn url_for(&self, key: &ObjectKey) -> String {
        let path = self.path_for(key);
        let path = std::path::absolute(&path).unwrap_or(path);
        format!("file://{}", path.display())
    }

    /// The bucket directory exists (it is created as `put` would) and takes a file: a hidden
    /// probe, written and removed (listings skip hidden names).
    async fn ping(&self) -> Result<(), StoreError> {
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.bucket_dir();
        let probe = async move {
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir)?;
                let path = dir.join(format!(".ready-{}-{n}", std::process::id()));
                std::fs::write(&path, b"")?;
                std::fs::remove_file(&path)
            })
            .await
            .map_err(std::io::Error::other)?
        };
        let unwritable = |why: String| {
            StoreError::Backend(format!(
                "evidence directory {} is not writable: {why}",
                self.bucket_dir().display()
            ))
        };
        match tokio::time::timeout(PING_TIMEOUT, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(unwritable(e.to_string())),
            Err(_) => Err(unwritable(format!("no answer within {PING_TIMEOUT:?}"))),
        }
    }
}

/// Collects object keys under `dir`, skipping hidden (temp) files and subtrees outside `prefix`.
fn walk(dir: &Path, rel: &str, prefix: &str, out: &mut Vec<ObjectKey>) -> std::io::Result<()> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in read {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let key = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ty = entry.file_type()?;
        if ty.is_dir() {
            let as_dir = format!("{key}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(&entry.path(), &key, prefix, out)?;
            }
        } else if ty.is_file() && key.starts_with(prefix) {
            out.push(ObjectKey(key));
        }
    }
    Ok(())
}

/// Where a published bundle's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedBundle {
    pub score_url: String,
    pub evidence_url: String,
    pub manifest_url: String,
    pub verdict_url: String,
}

/// Writes the bundle's four files under `<scenario_id>/`, `verdict.sig` last so its presence
/// means the bundle is complete. A file that already holds the very same bytes is accepted (a
/// retry after a crash); different bytes fail with `AlreadyExists`.
pub async fn publish_bundle(
    store: &dyn EvidenceStore,
    bundle: &Bundle,
) -> Result<PublishedBundle, StoreError> {
    let mut urls = Vec::with_capacity(4);
    for (name, bytes) in bundle.files() {
        let key = ObjectKey::bundle_file(&bundle.manifest.scenario_id, name)?;
        match store.put(&key, bytes.to_vec()).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists(k)) => {
                if store.get(&key).await? != bytes {
                    return Err(StoreError::AlreadyExists(k));
                }
            }
            Err(e) => return Err(e),
        }
        urls.push(store.url_for(&key));
    }
    let [score_url, evidence_url, manifest_url, verdict_url] =
        <[String; 4]>::try_from(urls).expect("four files");
    Ok(PublishedBundle {
        score_url,
        evidence_url,
        manifest_url,
        verdict_url,
    })
}

/// Fetches a published bundle's files for verification; missing files are `None`.
pub async fn fetch_bundle(
    store: &dyn EvidenceStore,
    scenario_id: &ScenarioId,
) -> Result<BundleFiles, StoreError> {
    let mut files = BundleFiles::default();
    for name in BundleFiles::NAMES {
        let key = ObjectKey::bundle_file(scenario_id, name)?;
        let bytes = match store.get(&key).await {
            Ok(b) => Some(b),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        *files.slot(name).expect("known name") = bytes;
    }
    Ok(files)
}
