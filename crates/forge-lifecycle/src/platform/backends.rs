//! The backends a platform runs on, passed in rather than built inside it: the state store, the
//! bus, the evidence store, the lab runtime, the audit log and the policy engines.
//! [`Backends::embedded`] is what `forge up` uses (SQLite, the in-process bus, a local evidence
//! directory, the signed audit log, embedded regorus or a remote OPA, the local Docker Engine);
//! [`Backends::local`] is the same around a runtime the caller chooses (the fake runtime in
//! fast tests). A process that runs no lab service (`forge serve spawn`, `scoreboard`, …) has no
//! runtime and never talks to an engine. With `NATS_URL`, `DATABASE_URL` and an S3 endpoint set, the bus is NATS
//! JetStream, the store PostgreSQL and the evidence store S3 with object lock, behind the same
//! traits.

use std::sync::Arc;

use anyhow::Context;
use forge_auth::LocalIssuer;
use forge_bus::{Bus, MemoryBus, NatsBus, NatsBusConfig};
use forge_catalog::Catalog;
use forge_core::audit::AuditSink;
use forge_evidence::{
    AuditLog, AuditLogConfig, EvidenceStore, KeyPurpose, Keyring, LocalStore, S3Store,
};
use forge_http::Service;
use forge_policy::{EmbeddedEngine, MintedToken, PolicyEngine, RemoteEngine};
use forge_runtime::{DockerRuntime, Runtime};
use forge_store::{PgStore, SqliteStore, Store};

use super::PlatformConfig;

/// Everything a platform's services are built on.
pub struct Backends {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub evidence: Arc<dyn EvidenceStore>,
    /// The lab engine; `None` in a process that runs no lab service.
    pub runtime: Option<Arc<dyn Runtime>>,
    /// The signed, hash-chained audit log every service records into.
    pub audit_log: Arc<AuditLog>,
    /// The embedded engine, served as the OPA endpoint (:8181).
    pub opa: Arc<EmbeddedEngine>,
    /// What the gates ask: `opa`, or a remote OPA.
    pub policy: Arc<dyn PolicyEngine>,
}

impl Backends {
    /// The configured backends on the local Docker Engine (when the configured services run
    /// labs); builds missing lab images when the configuration asks for it.
    pub async fn embedded(cfg: &PlatformConfig) -> anyhow::Result<Self> {
        if !cfg.runs_labs() {
            return Self::assemble(cfg, None).await;
        }
        let docker = DockerRuntime::connect()
            .await
            .context("connecting to the Docker Engine")?
            .require_user_namespaces(cfg.require_user_namespaces)
            .with_egress(cfg.egress.clone());
        if !cfg.require_user_namespaces && !docker.user_namespaces_remapped().await.unwrap_or(true)
        {
            tracing::warn!(
                "the docker engine does not remap user namespaces: a lab's root is host root \
                 (start dockerd with --userns-remap=default; FORGE_ENV=production refuses this)"
            );
        }
        if cfg.build_images {
            let catalog =
                Catalog::load(cfg.template_dir.as_deref()).context("loading the lab catalog")?;
            let mut images: Vec<String> = catalog
                .entries()
                .flat_map(|e| {
                    e.template
                        .spec
                        .assets
                        .containers
                        .iter()
                        .map(|c| c.image.clone())
                })
                .collect();
            images.sort();
            images.dedup();
            let refs: Vec<&str> = images.iter().map(String::as_str).collect();
            let images = forge_runtime::ImageCatalog::discover(cfg.images_dir.as_deref())
                .context("finding the lab image definitions")?
                .with_busybox(&cfg.busybox)
                .with_mirror(cfg.debian_mirror.clone());
            docker
                .ensure_images(&images, &refs, false)
                .await
                .context("building lab images")?;
        }
        Self::local(cfg, Arc::new(docker)).await
    }

    /// The configured backends (embedded defaults in the data dir) around `runtime`.
    pub async fn local(cfg: &PlatformConfig, runtime: Arc<dyn Runtime>) -> anyhow::Result<Self> {
        Self::assemble(cfg, Some(runtime)).await
    }

    async fn assemble(
        cfg: &PlatformConfig,
        runtime: Option<Arc<dyn Runtime>>,
    ) -> anyhow::Result<Self> {
        let data_dir = &cfg.data_dir;
        // The data dir holds keys, the auth secret, the audit log and the state: ours alone.
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let store: Arc<dyn Store> = match &cfg.database_url {
            Some(url) => Arc::new(
                PgStore::connect(url)
                    .await
                    .context("connecting to PostgreSQL (DATABASE_URL)")?,
            ),
            None => Arc::new(
                SqliteStore::open_in_dir(data_dir)
                    .await
                    .context("opening the state store")?,
            ),
        };
        let bus: Arc<dyn Bus> = match &cfg.nats_url {
            Some(url) => Arc::new(
                NatsBus::connect(url, NatsBusConfig::default())
                    .await
                    .context("connecting to NATS JetStream (NATS_URL)")?,
            ),
            None => Arc::new(MemoryBus::new(cfg.bus.clone())),
        };
        // Evidence is the scoreboard's (bundles) and the worker's (staged artifacts, which the
        // bus refers to): other processes never connect to S3.
        let uses_evidence =
            cfg.services.contains(&Service::Scoreboard) || cfg.services.contains(&Service::Worker);
        let s3 = cfg.s3.as_ref().filter(|_| uses_evidence);
        // A worker that shares a bus with a scoreboard in another process must share its
        // evidence store too, or every completion would refer to bytes the scoreboard cannot read.
        if cfg.nats_url.is_some()
            && cfg.services.contains(&Service::Worker)
            && !cfg.services.contains(&Service::Scoreboard)
            && cfg.s3.is_none()
        {
            anyhow::bail!(
                "a worker on NATS needs the shared evidence store (FORGE_S3_ENDPOINT): it stages \
                 collected artifacts there for the scoreboard"
            );
        }
        let evidence: Arc<dyn EvidenceStore> = match s3 {
            Some(s3) => Arc::new(
                S3Store::connect(s3.clone())
                    .await
                    .context("connecting to the S3 evidence store")?,
            ),
            None => Arc::new(
                LocalStore::new(data_dir.join("evidence"), "forge-evidence")
                    .context("opening the evidence store")?,
            ),
        };

        // The log follows the audit keyring: a rotation or revocation (`forge keys`, or the
        // start-up rotation) switches its signer without a restart.
        let audit_keys = Keyring::open(data_dir, KeyPurpose::Audit).context("audit keyring")?;
        let audit_log = Arc::new(
            AuditLog::open_following(&cfg.audit_log_path(), audit_keys, AuditLogConfig::default())
                .context("opening the audit log")?,
        );
        let audit: Arc<dyn AuditSink> = audit_log.clone();

        let mut opa = EmbeddedEngine::builder().audit(audit.clone(), "forge_opa");
        if let Some(dir) = &cfg.policy_dir {
            opa = opa.operator_dir(dir);
        }
        let opa = Arc::new(opa.build().context("loading policies")?);
        let policy: Arc<dyn PolicyEngine> = match &cfg.opa_url {
            Some(u) => Arc::new(remote_engine(cfg, u)?.with_audit(audit, "forge_platform")),
            None => opa.clone(),
        };
        Ok(Self {
            store,
            bus,
            evidence,
            runtime,
            audit_log,
            opa,
            policy,
        })
    }
}

/// The client of the remote OPA at `url`, with the platform's bearer token: `OPA_TOKEN` when
/// set; else, when this platform accepts local HS256 tokens (whose secret every process of a
/// platform shares in the data dir), tokens it mints for itself; else none (a real OPA without
/// authentication).
fn remote_engine(cfg: &PlatformConfig, url: &str) -> anyhow::Result<RemoteEngine> {
    let remote = RemoteEngine::new(url)?;
    if let Some(token) = &cfg.opa_token {
        return Ok(remote.with_token(token));
    }
    if !cfg.auth.accepts_local_tokens() {
        return Ok(remote);
    }
    let issuer = LocalIssuer::load_or_create(&cfg.data_dir, &cfg.auth.issuer, &cfg.auth.audience)
        .context("the local token secret (for the policy endpoint)")?;
    Ok(remote.with_token_source(Arc::new(MintedToken::new(issuer, cfg.process_name()))))
}
