//! The S3-compatible evidence store of distributed mode (AWS S3, MinIO, SeaweedFS).
//!
//! Object lock is what makes evidence immutable for everyone holding credentials, not only for
//! our own code: the bucket is created with object lock (which turns versioning on), and every
//! object is written with a retention (mode + retain-until date), so until that date the server
//! refuses to delete that version or shorten its lock (in compliance mode even for an
//! administrator). Retention is set per object, in the PUT itself, rather than as a bucket
//! default: each piece of evidence is then locked from the instant it exists, for a period
//! counted from its own creation, whatever default an operator may (or may not) have set on the
//! bucket, and a later change of that default touches no existing evidence.
//!
//! Object lock protects *versions*, not keys: S3 still lets anyone with write access put a new
//! version over a key, or hide it behind a delete marker. So this store takes the **first
//! version of a key as the object**: `get`, `exists` and `list` look at versions, not at the
//! current object, and read the oldest, which is the locked one we wrote; `put` succeeds only
//! if the version it wrote is the key's first. The price is one `ListObjectVersions` per call.
//!
//! `put` sends `If-None-Match: *`, so the server itself refuses a second write, atomically:
//! concurrent publishers have exactly one winner and leave no extra versions. A server that
//! answers 501 to the header gets a check before the write instead: two writers can both pass
//! it, and while the check after the write makes the first version the object, a writer whose
//! older version finishes uploading last may also be told it won. There, write-once holds for
//! writers that do not race (AWS and SeaweedFS implement the header).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, ObjectLockEnabled, ObjectLockMode,
};

use super::{DEFAULT_BUCKET, EvidenceStore, ObjectKey, StoreError};

/// How long evidence is locked by default: a year.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// S3's object-lock retention modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetentionMode {
    /// Users with `s3:BypassGovernanceRetention` may still delete or shorten the lock.
    Governance,
    /// Nobody, root included, can delete the version or shorten its lock before it ends.
    #[default]
    Compliance,
}

impl RetentionMode {
    fn to_s3(self) -> ObjectLockMode {
        match self {
            Self::Governance => ObjectLockMode::Governance,
            Self::Compliance => ObjectLockMode::Compliance,
        }
    }
}

/// Where and how the S3 store writes.
#[derive(Clone)]
pub struct S3Config {
    /// The server's URL (`http://127.0.0.1:9000`); empty for AWS's own endpoint of `region`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// `http://host/bucket/key` rather than `http://bucket.host/key`: what MinIO and SeaweedFS
    /// serve without a wildcard DNS name.
    pub path_style: bool,
    /// How long each object is locked from the moment it is written.
    pub retention: Duration,
    pub mode: RetentionMode,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: DEFAULT_BUCKET.into(),
            access_key: String::new(),
            secret_key: String::new(),
            path_style: true,
            retention: DEFAULT_RETENTION,
            mode: RetentionMode::default(),
        }
    }
}

// Hand-written so that the secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .field("retention", &self.retention)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Evidence objects in one S3 bucket with object lock. Cheap to clone (the SDK client is shared).
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    /// For error messages: `aws` when the SDK resolves AWS's own endpoint.
    endpoint: String,
    region: String,
    bucket: String,
    retention: Duration,
    mode: RetentionMode,
    /// Cleared when the server answers 501 to `If-None-Match` (shared by the clones).
    conditional_put: Arc<AtomicBool>,
}

// By hand: the SDK client's own `Debug` is long, and this says what matters.
impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("retention", &self.retention)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// How often a PUT is retried when S3 answers 409 to concurrent conditional writes on one key.
const CONFLICT_RETRIES: u32 = 5;

impl S3Store {
    /// Connects to the bucket, creating it with object lock when it does not exist; refuses a
    /// bucket without object lock.
    pub async fn connect(config: S3Config) -> Result<Self, StoreError> {
        check_bucket_name(&config.bucket)?;
        if config.retention.is_zero() {
            return Err(StoreError::Backend(
                "retention must be longer than zero: evidence is always locked".into(),
            ));
        }
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(Credentials::new(
                config.access_key.clone(),
                config.secret_key.clone(),
                None,
                None,
                "forge-evidence",
            ))
            .force_path_style(config.path_style)
            // A dead endpoint should fail a publish in seconds, not hang the scoreboard.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(300))
                    .build(),
            );
        if !config.endpoint.is_empty() {
            builder = builder.endpoint_url(&config.endpoint);
        }
        let store = Self {
            client: Client::from_conf(builder.build()),
            endpoint: if config.endpoint.is_empty() {
                format!("aws ({})", config.region)
            } else {
                config.endpoint
            },
            region: config.region,
            bucket: config.bucket,
            retention: config.retention,
            mode: config.mode,
            conditional_put: Arc::new(AtomicBool::new(true)),
        };
        store.ensure_bucket().await?;
        Ok(store)
    }

    /// The bucket's name, as in `s3://<bucket>/<key>`.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `bucket/key`, how errors name an object.
    fn at(&self, key: &str) -> String {
        format!("{}/{key}", self.bucket)
    }

    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        let bucket = &self.bucket;
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => {}
            Err(e) if status(&e) == Some(404) => {
                let mut create = self
                    .client
                    .create_bucket()
                    .bucket(bucket)
                    .object_lock_enabled_for_bucket(true);
                // AWS wants the region named in the request everywhere but its first one.
                if self.region != "us-east-1" {
                    create = create.create_bucket_configuration(
                        CreateBucketConfiguration::builder()
                            .location_constraint(BucketLocationConstraint::from(
                                self.region.as_str(),
                            ))
                            .build(),
                    );
                }
                let created = create.send().await;
                match created {
                    Ok(_) => return Ok(()),
                    // Another replica created it in between: check it like any existing one.
                    Err(e) if status(&e) == Some(409) => {}
                    Err(e) => return Err(self.backend(&format!("create bucket `{bucket}`"), &e)),
                }
            }
            Err(e) => return Err(self.backend(&format!("open bucket `{bucket}`"), &e)),
        }
        let lock = self
            .client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await;
        let enabled = match lock {
            Ok(out) => {
                out.object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    == Some(&ObjectLockEnabled::Enabled)
            }
            // S3 answers 404 `ObjectLockConfigurationNotFoundError` for a bucket without it.
            Err(e) if status(&e) == Some(404) => false,
            Err(e) => {
                return Err(self.backend(
                    &format!("read object lock configuration of bucket `{bucket}`"),
                    &e,
                ));
            }
        };
        if enabled {
            Ok(())
        } else {
            Err(StoreError::Backend(format!(
                "bucket `{bucket}` exists without object lock: evidence needs a bucket created \
                 with object lock enabled (or another bucket name, which forge creates with it)"
            )))
        }
    }

    /// Visits the versions of the keys starting with `prefix`, in S3's order (by key, newest
    /// first within a key), until `visit` returns false. Delete markers are not versions of an
    /// object, so one hiding a key hides nothing here.
    async fn each_version(
        &self,
        prefix: &str,
        mut visit: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), StoreError> {
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| {
                    self.backend(&format!("list versions of `{}`", self.at(prefix)), &e)
                })?;
            for v in page.versions() {
                if let (Some(key), Some(id)) = (v.key(), v.version_id())
                    && !visit(key, id)
                {
                    return Ok(());
                }
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            if page.is_truncated() != Some(true) || key_marker.is_none() {
                return Ok(());
            }
        }
    }

    /// The id of the key's first (oldest) version: the object (see the module docs).
    async fn first_version(&self, key: &ObjectKey) -> Result<Option<String>, StoreError> {
        let mut oldest = None;
        // The prefix also matches longer keys (`a/b` for `a`), which sort after it.
        self.each_version(key.as_str(), |k, id| {
            if k == key.as_str() {
                oldest = Some(id.to_owned());
            }
            k <= key.as_str()
        })
        .await?;
        Ok(oldest)
    }

    /// One locked PUT of the object; `Ok(None)` when the server refused it as a second write.
    async fn put_locked(
        &self,
        key: &ObjectKey,
        bytes: &[u8],
    ) -> Result<Option<String>, StoreError> {
        let until = SystemTime::now()
            .checked_add(self.retention)
            .ok_or_else(|| StoreError::Backend("retention is too long to be a date".into()))?;
        let retain_until = DateTime::from(until);
        let mut attempt = 0;
        loop {
            let conditional = self.conditional_put.load(Ordering::Relaxed);
            let mut put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key.as_str())
                .object_lock_mode(self.mode.to_s3())
                .object_lock_retain_until_date(retain_until)
                .body(ByteStream::from(bytes.to_vec()));
            if conditional {
                put = put.if_none_match("*");
            }
            match put.send().await {
                Ok(out) => return Ok(out.version_id().map(str::to_owned)),
                Err(e) if status(&e) == Some(412) => return Ok(None),
                // AWS answers 409 `ConditionalRequestConflict` while another conditional write
                // of the key is in flight; asked again, it answers 412 or lets us through.
                Err(e) if status(&e) == Some(409) && attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                }
                Err(e) if status(&e) == Some(501) && conditional => {
                    tracing::warn!(
                        bucket = %self.bucket,
                        "the s3 server does not implement If-None-Match: evidence puts check first"
                    );
                    self.conditional_put.store(false, Ordering::Relaxed);
                    if self.first_version(key).await?.is_some() {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(self.backend(&format!("put `{}`", self.at(key.as_str())), &e)),
            }
        }
    }

    /// A failed request as `StoreError::Backend`: what we tried on which bucket/key, then why:
    /// the HTTP status and S3's error code and message, or the transport failure. Requests
    /// carry only a signature, never the secret, and neither does anything here.
    fn backend<E>(&self, what: &str, err: &SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let why = match err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                let status = service.raw().status().as_u16();
                match (e.code(), e.message()) {
                    (Some(code), Some(message)) => format!("http {status} {code}: {message}"),
                    (Some(code), None) => format!("http {status} {code}"),
                    _ => format!("http {status}"),
                }
            }
            SdkError::DispatchFailure(_) => {
                let cause = std::error::Error::source(err).map_or_else(|| chain(err), chain);
                format!("cannot reach the s3 server at {}: {cause}", self.endpoint)
            }
            SdkError::TimeoutError(_) => {
                format!("the s3 server at {} did not answer in time", self.endpoint)
            }
            other => chain(other),
        };
        let reason = match status(err) {
            Some(401 | 403) => format!("refused, check the access key and secret ({why})"),
            _ => why,
        };
        StoreError::Backend(format!("{what}: {reason}"))
    }
}

#[async_trait]
impl EvidenceStore for S3Store {
    /// `HeadBucket`: the server answers and the credentials open the bucket.
    async fn ping(&self) -> Result<(), StoreError> {
        let bucket = &self.bucket;
        let head = self.client.head_bucket().bucket(bucket).send();
        match tokio::time::timeout(super::PING_TIMEOUT, head).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.backend(&format!("open bucket `{bucket}`"), &e)),
            Err(_) => Err(StoreError::Backend(format!(
                "open bucket `{bucket}`: the s3 server at {} did not answer within {:?}",
                self.endpoint,
                super::PING_TIMEOUT
            ))),
        }
    }

    async fn put(&self, key: &ObjectKey, bytes: Vec<u8>) -> Result<(), StoreError> {
        let exists = || StoreError::AlreadyExists(key.clone());
        // Without conditional writes, a check first spares a locked version that would only
        // lose below; it is not what decides.
        if !self.conditional_put.load(Ordering::Relaxed) && self.first_version(key).await?.is_some()
        {
            return Err(exists());
        }
        let Some(ours) = self.put_locked(key, &bytes).await? else {
            return Err(exists());
        };
        // What decides: ours must be the key's first version. It is not when a writer that
        // skipped the condition came first, or a delete marker let `If-None-Match` pass over an
        // earlier version; then ours stays, locked and unread, and the first one is the object.
        match self.first_version(key).await? {
            Some(first) if first != ours => Err(exists()),
            _ => Ok(()),
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StoreError> {
        let Some(version) = self.first_version(key).await? else {
            return Err(StoreError::NotFound(key.clone()));
        };
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .version_id(version)
            .send()
            .await;
        let out = match got {
            Ok(out) => out,
            Err(e) if status(&e) == Some(404) => return Err(StoreError::NotFound(key.clone())),
            Err(e) => return Err(self.backend(&format!("get `{}`", self.at(key.as_str())), &e)),
        };
        let body = out.body.collect().await.map_err(|e| {
            StoreError::Backend(format!(
                "get `{}`: reading the body failed: {}",
                self.at(key.as_str()),
                chain(&e)
            ))
        })?;
        Ok(body.into_bytes().to_vec())
    }

    async fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        Ok(self.first_version(key).await?.is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, StoreError> {
        // Versions rather than current objects, so that a key `exists` names is listed too.
        let mut keys = std::collections::BTreeSet::new();
        self.each_version(prefix, |key, _| {
            // Keys that are not evidence keys (written by other tools) are not ours to show.
            if let Ok(key) = ObjectKey::new(key) {
                keys.insert(key);
            }
            true
        })
        .await?;
        Ok(keys.into_iter().collect())
    }

    fn url_for(&self, key: &ObjectKey) -> String {
        format!("s3://{}/{}", self.bucket, key.as_str())
    }
}

/// S3's bucket naming rules (3 to 63 lowercase letters, digits, `-` and `.`, starting and ending
/// with a letter or digit), checked before any request so a typo is named as such.
fn check_bucket_name(bucket: &str) -> Result<(), StoreError> {
    let bad = |reason: &str| StoreError::InvalidKey {
        key: bucket.to_owned(),
        reason: format!("bucket name {reason}"),
    };
    if !(3..=63).contains(&bucket.len()) {
        return Err(bad("must be 3 to 63 characters"));
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(bad("may only use lowercase letters, digits, `-` and `.`"));
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(bucket.as_bytes()[0]) || !edge(bucket.as_bytes()[bucket.len() - 1]) {
        return Err(bad("must start and end with a letter or digit"));
    }
    Ok(())
}

/// The HTTP status of a service error, `None` when no response came back.
fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// `err` and its sources, each once: `a: b: c`.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
