//! Where evidence goes in distributed mode: an S3 server with object lock (the spec's MinIO
//! variables name the credentials and bucket). Without an endpoint or credentials, evidence stays
//! in the data dir.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use forge_evidence::{RetentionMode, S3Config};

/// S3 object-lock modes, as flags spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LockMode {
    /// Nobody can delete or shorten a lock before it ends (production)
    Compliance,
    /// Holders of the bypass permission can (test and staging buckets)
    Governance,
}

#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3 server for evidence (`http://host:9000`); with it (or with credentials, for AWS
    /// itself) evidence is written to S3 under object lock instead of the data dir
    #[arg(long = "s3-endpoint", env = "FORGE_S3_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,
    /// S3 region
    #[arg(
        long = "s3-region",
        env = "FORGE_S3_REGION",
        default_value = "us-east-1"
    )]
    pub region: String,
    /// Evidence bucket (created with object lock when missing)
    #[arg(long = "s3-bucket", env = "MINIO_BUCKET", default_value = forge_evidence::store::DEFAULT_BUCKET)]
    pub bucket: String,
    /// S3 access key
    #[arg(long = "s3-access-key", env = "MINIO_ROOT_USER", value_name = "KEY")]
    pub access_key: Option<String>,
    /// S3 secret key
    #[arg(
        long = "s3-secret-key",
        env = "MINIO_ROOT_PASSWORD",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub secret_key: Option<String>,
    /// How long each evidence object is locked
    #[arg(
        long = "evidence-retention-days",
        env = "FORGE_EVIDENCE_RETENTION_DAYS",
        default_value_t = 365
    )]
    pub retention_days: u32,
    /// Object-lock mode of evidence objects
    #[arg(
        long = "evidence-lock-mode",
        env = "FORGE_EVIDENCE_LOCK_MODE",
        value_enum,
        default_value = "compliance"
    )]
    pub mode: LockMode,
}

impl S3Args {
    /// The S3 evidence store's configuration, or `None` for the data dir; errors name the
    /// setting at fault (never a secret's value).
    pub fn s3_config(&self) -> anyhow::Result<Option<S3Config>> {
        if self.endpoint.is_none() && self.access_key.is_none() && self.secret_key.is_none() {
            return Ok(None);
        }
        let (Some(access_key), Some(secret_key)) = (&self.access_key, &self.secret_key) else {
            bail!(
                "an S3 evidence store needs both MINIO_ROOT_USER (--s3-access-key) and \
                 MINIO_ROOT_PASSWORD (--s3-secret-key)"
            );
        };
        if let Some(url) = &self.endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("FORGE_S3_ENDPOINT (--s3-endpoint) `{url}` is not an http:// or https:// url");
        }
        if self.retention_days == 0 {
            bail!("FORGE_EVIDENCE_RETENTION_DAYS (--evidence-retention-days) must be at least 1");
        }
        Ok(Some(S3Config {
            endpoint: self.endpoint.clone().unwrap_or_default(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            access_key: access_key.clone(),
            secret_key: secret_key.clone(),
            path_style: true,
            retention: Duration::from_secs(u64::from(self.retention_days) * 24 * 3600),
            mode: match self.mode {
                LockMode::Compliance => RetentionMode::Compliance,
                LockMode::Governance => RetentionMode::Governance,
            },
        }))
    }
}
