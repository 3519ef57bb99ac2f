//! The embedded platform: every service in one process on its spec port, with the embedded
//! defaults (design.md §2): SQLite in the data dir, the in-process bus, a local evidence
//! directory, embedded regorus (or a remote OPA at `OPA_URL`), and the local Docker Engine.
//! `forge up` is [`Platform::start`] plus a banner; the end-to-end tests start it with
//! ephemeral ports.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use forge_auth::{AuthConfig, LocalIssuer, Verifier};
use forge_bus::{Bus, MemoryBus, MemoryBusConfig};
use forge_catalog::Catalog;
use forge_core::audit::AuditSink;
use forge_evidence::{
    AuditLog, AuditLogConfig, EvidenceStore, KeyPurpose, KeySource, Keyring, LocalStore,
};
use forge_policy::{EmbeddedEngine, PolicyEngine, PolicyError, PolicyName, RemoteEngine};
use forge_runtime::{DockerRuntime, Runtime, Supervisor, SupervisorConfig};
use forge_services::spawn::{
    GateDecision, GateError, SpawnConfig, SpawnDeps, SpawnGate, SpawnState,
};
use forge_services::tenants::TenantDirectory;
use forge_store::{SqliteStore, Store};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::{AccessConfig, AccessState};
use crate::observer::{Observer, ObserverDeps};
use crate::orchestrator::{Orchestrator, OrchestratorConfig, OrchestratorDeps};
use crate::runner::Runner;
use crate::scoreboard::{Scoreboard, ScoreboardDeps};
use crate::worker::{Worker, WorkerDeps};

/// Ports of the services; 0 picks a free one (tests).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub spawn: u16,
    pub orchestrator: u16,
    pub worker: u16,
    pub observer: u16,
    pub scoreboard: u16,
    pub runner: u16,
    pub opa: u16,
}

impl Ports {
    /// The spec's service registry.
    pub const SPEC: Ports = Ports {
        spawn: 8082,
        orchestrator: 8083,
        worker: 8084,
        observer: 8085,
        scoreboard: 8086,
        runner: 8087,
        opa: 8181,
    };

    pub const EPHEMERAL: Ports = Ports {
        spawn: 0,
        orchestrator: 0,
        worker: 0,
        observer: 0,
        scoreboard: 0,
        runner: 0,
        opa: 0,
    };
}

#[derive(Debug, Clone)]
pub struct PlatformConfig {
    pub data_dir: PathBuf,
    /// Address the services bind (default loopback).
    pub bind: IpAddr,
    pub ports: Ports,
    /// Host name in the URLs handed to learners (`access_url`, the page's API links).
    pub public_host: String,
    /// Operator templates added to the bundled catalog (`TEMPLATE_DIR`).
    pub template_dir: Option<PathBuf>,
    /// Operator policies (`POLICY_DIR`).
    pub policy_dir: Option<PathBuf>,
    /// A remote OPA (`OPA_URL`) instead of the embedded engine.
    pub opa_url: Option<String>,
    /// Tenants and plans (`TENANTS_FILE`); the bundled example (tenant `demo`) when absent.
    pub tenants_file: Option<PathBuf>,
    pub spawn: SpawnConfig,
    pub orchestrator: OrchestratorConfig,
    /// Build missing lab images at start.
    pub build_images: bool,
    pub bus: MemoryBusConfig,
    /// Which labs the supervisor keeps alive (label filters narrow it to one test run).
    pub supervisor: SupervisorConfig,
}

impl PlatformConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: Ports::SPEC,
            public_host: "localhost".into(),
            template_dir: None,
            policy_dir: None,
            opa_url: None,
            tenants_file: None,
            spawn: SpawnConfig::default(),
            orchestrator: OrchestratorConfig::default(),
            build_images: true,
            bus: MemoryBusConfig::default(),
            supervisor: SupervisorConfig::default(),
        }
    }
}

/// The spawn gate decided by the policy layer (`spawn_gate`), whichever backend it has.
struct PolicyGate(Arc<dyn PolicyEngine>);

#[async_trait]
impl SpawnGate for PolicyGate {
    async fn decide(&self, input: Value) -> Result<GateDecision, GateError> {
        match self.0.decide(PolicyName::SpawnGate, &input).await {
            Ok(d) if d.allow => Ok(GateDecision::allow()),
            Ok(d) => Ok(GateDecision::deny(d.deny_reasons)),
            Err(e @ PolicyError::Unavailable { .. }) => Err(GateError::Unavailable(e.to_string())),
            Err(e) => Err(GateError::Other(e.to_string())),
        }
    }
}

/// A running platform.
pub struct Platform {
    /// Where each service listens: `spawn`, `orchestrator`, `worker`, `observer`, `scoreboard`,
    /// `runner`, `opa`.
    pub addrs: BTreeMap<&'static str, SocketAddr>,
    pub issuer: LocalIssuer,
    pub store: Arc<dyn Store>,
    pub runtime: Arc<DockerRuntime>,
    pub audit_log: Arc<AuditLog>,
    pub catalog: Arc<Catalog>,
    pub data_dir: PathBuf,
    pub recovered: crate::orchestrator::RecoverReport,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    supervisor: JoinHandle<()>,
}

async fn bind(host: IpAddr, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(host, port))
        .await
        .with_context(|| {
            format!("cannot listen on {host}:{port} for {what} (is another forge running?)")
        })
}

impl Platform {
    pub async fn start(cfg: PlatformConfig) -> anyhow::Result<Self> {
        forge_auth::install_crypto_provider();
        forge_services::http::metrics_handle();
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
        let data_dir = cfg.data_dir.clone();

        // Listeners first: a port clash should fail fast, before anything is built.
        let host = cfg.bind;
        let p = cfg.ports;
        let listeners = [
            ("spawn", bind(host, p.spawn, "forge_spawn_service").await?),
            (
                "orchestrator",
                bind(host, p.orchestrator, "forge_orchestrator").await?,
            ),
            ("worker", bind(host, p.worker, "forge_worker_agent").await?),
            (
                "observer",
                bind(host, p.observer, "forge_observer_hub").await?,
            ),
            (
                "scoreboard",
                bind(host, p.scoreboard, "forge_scoreboard").await?,
            ),
            (
                "runner",
                bind(host, p.runner, "forge_playbook_runner").await?,
            ),
            ("opa", bind(host, p.opa, "forge_opa").await?),
        ];
        let mut addrs = BTreeMap::new();
        for (name, l) in &listeners {
            addrs.insert(*name, l.local_addr()?);
        }
        let url = |name: &str| format!("http://{}:{}", cfg.public_host, addrs[name].port());

        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open_in_dir(&data_dir)
                .await
                .context("opening the state store")?,
        );
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(cfg.bus.clone()));

        let mut audit_keys =
            Keyring::open(&data_dir, KeyPurpose::Audit).context("audit keyring")?;
        let audit_signer = audit_keys.signer().context("audit signing key")?;
        let audit_log = Arc::new(
            AuditLog::open(
                &AuditLog::default_path(&data_dir),
                audit_signer,
                &KeySource::from_keyring(&audit_keys)?,
                AuditLogConfig::default(),
            )
            .context("opening the audit log")?,
        );
        let audit: Arc<dyn AuditSink> = audit_log.clone();

        let catalog = Arc::new(
            Catalog::load(cfg.template_dir.as_deref()).context("loading the lab catalog")?,
        );

        let mut embedded = EmbeddedEngine::builder().audit(audit.clone(), "forge_opa");
        if let Some(dir) = &cfg.policy_dir {
            embedded = embedded.operator_dir(dir);
        }
        let embedded = Arc::new(embedded.build().context("loading policies")?);
        let policy: Arc<dyn PolicyEngine> = match &cfg.opa_url {
            Some(u) => Arc::new(RemoteEngine::new(u)?.with_audit(audit.clone(), "forge_platform")),
            None => embedded.clone(),
        };

        let docker = Arc::new(
            DockerRuntime::connect()
                .await
                .context("connecting to the Docker Engine")?,
        );
        if cfg.build_images {
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
            docker
                .ensure_images(&refs, false)
                .await
                .context("building lab images")?;
        }
        let runtime: Arc<dyn Runtime> = docker.clone();

        let issuer = LocalIssuer::load_or_create(
            &data_dir,
            forge_auth::DEFAULT_ISSUER,
            forge_auth::DEFAULT_AUDIENCE,
        )?;
        let verifier = Arc::new(Verifier::new(&AuthConfig::from_env(&data_dir)?));
        let tenants = Arc::new(match &cfg.tenants_file {
            Some(p) => TenantDirectory::load(p)?,
            None => TenantDirectory::example(),
        });

        let evidence: Arc<dyn EvidenceStore> = Arc::new(LocalStore::new(
            data_dir.join("evidence"),
            "forge-evidence",
        )?);
        let verdict_keys = Arc::new(Mutex::new(Keyring::open(&data_dir, KeyPurpose::Verdict)?));

        let (shutdown, shutdown_rx) = watch::channel(false);
        let stop = {
            let rx = shutdown_rx.clone();
            move || {
                let mut rx = rx.clone();
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                }
            }
        };
        let mut tasks = Vec::new();

        let (supervisor, lab_events) = Supervisor::new((*docker).clone(), cfg.supervisor.clone());
        // The supervisor has no stop signal of its own; it is aborted at shutdown.
        let supervisor = supervisor.spawn();

        let orchestrator = Orchestrator::new(OrchestratorDeps {
            config: cfg.orchestrator.clone(),
            store: store.clone(),
            bus: bus.clone(),
            catalog: catalog.clone(),
            policy: policy.clone(),
            runtime: runtime.clone(),
            audit: audit.clone(),
            verifier: verifier.clone(),
        });
        let recovered = orchestrator
            .recover()
            .await
            .context("recovering after the last run")?;
        let worker = Worker::new(WorkerDeps {
            store: store.clone(),
            bus: bus.clone(),
            catalog: catalog.clone(),
            runtime: runtime.clone(),
            audit: audit.clone(),
            verifier: verifier.clone(),
        });
        let scoreboard = Scoreboard::new(ScoreboardDeps {
            store: store.clone(),
            bus: bus.clone(),
            evidence,
            keyring: verdict_keys,
            audit: audit.clone(),
            verifier: verifier.clone(),
        });
        let observer = Observer::new(ObserverDeps {
            bus: bus.clone(),
            catalog: catalog.clone(),
            audit_log: audit_log.clone(),
            data_dir: data_dir.clone(),
            verifier: verifier.clone(),
        });
        let runner = Runner {
            store: store.clone(),
            runtime: runtime.clone(),
            audit: audit.clone(),
            verifier: verifier.clone(),
        };

        let mut spawn_cfg = cfg.spawn.clone();
        spawn_cfg.base_url = url("spawn");
        let spawn = SpawnState::new(SpawnDeps {
            config: spawn_cfg,
            verifier: verifier.clone(),
            store: store.clone(),
            bus: bus.clone(),
            gate: Arc::new(PolicyGate(policy.clone())),
            audit: audit.clone(),
            catalog: catalog.clone(),
            tenants,
        });
        let access = crate::access::router(AccessState {
            config: AccessConfig {
                orchestrator_url: url("orchestrator"),
                worker_url: url("worker"),
                scoreboard_url: url("scoreboard"),
            },
            store: store.clone(),
            catalog: catalog.clone(),
            verifier: verifier.clone(),
        });

        tasks.push(flatten(
            orchestrator.run(shutdown_rx.clone(), Some(lab_events)),
        ));
        tasks.push(flatten(worker.run(shutdown_rx.clone())));
        tasks.push(flatten(scoreboard.run(shutdown_rx.clone())));
        tasks.push(flatten(observer.run(shutdown_rx.clone())));

        let [
            spawn_l,
            orch_l,
            worker_l,
            observer_l,
            score_l,
            runner_l,
            opa_l,
        ] = listeners.map(|(_, l)| l);
        let serve = |name: &'static str,
                     fut: std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>,
        >| {
            tokio::spawn(async move {
                if let Err(e) = fut.await {
                    tracing::error!(service = name, error = %e, "service stopped");
                }
            })
        };
        tasks.push(serve(
            "spawn",
            Box::pin(forge_services::spawn::serve_with(
                spawn_l,
                spawn,
                access,
                stop(),
            )),
        ));
        tasks.push(serve(
            "orchestrator",
            Box::pin(crate::orchestrator::serve(orch_l, orchestrator, stop())),
        ));
        tasks.push(serve(
            "worker",
            Box::pin(crate::worker::serve(worker_l, worker, stop())),
        ));
        tasks.push(serve(
            "observer",
            Box::pin(crate::observer::serve(observer_l, observer, stop())),
        ));
        tasks.push(serve(
            "scoreboard",
            Box::pin(crate::scoreboard::serve(score_l, scoreboard, stop())),
        ));
        tasks.push(serve(
            "runner",
            Box::pin(crate::runner::serve(runner_l, runner, stop())),
        ));
        tasks.push(serve(
            "opa",
            Box::pin(forge_policy::server::serve(opa_l, embedded, stop())),
        ));

        Ok(Self {
            addrs,
            issuer,
            store,
            runtime: docker,
            audit_log,
            catalog,
            data_dir,
            recovered,
            shutdown,
            tasks,
            supervisor,
        })
    }

    /// `http://host:port` of a service.
    pub fn url(&self, service: &str) -> String {
        let a = self.addrs[service];
        format!("http://{}:{}", a.ip(), a.port())
    }

    /// A token of the local issuer.
    pub fn mint(&self, tenant: &str, roles: &[&str], sub: &str) -> anyhow::Result<String> {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        Ok(self
            .issuer
            .mint(tenant, &roles, sub, Duration::from_secs(8 * 3600))?)
    }

    /// Graceful stop: the services finish in-flight requests, consumers stop, the audit log is
    /// flushed. Labs keep running; the next start adopts or cleans them.
    pub async fn shutdown(self) {
        self.supervisor.abort();
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .is_err()
            {
                tracing::warn!("a service did not stop within 10s");
            }
        }
        if let Err(e) = self.audit_log.flush() {
            tracing::warn!(error = %e, "flushing the audit log");
        }
    }
}

fn flatten(h: JoinHandle<()>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = h.await;
    })
}
