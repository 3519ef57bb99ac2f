//! The platform in one process: every service on its port, on the [`Backends`] the caller
//! passes in. `forge up` is [`Backends::embedded`] + [`Platform::start`] + a banner; the
//! end-to-end tests start it on ephemeral ports, the fast lifecycle tests on the fake runtime.

mod backends;
mod config;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use forge_auth::{LocalIssuer, Verifier};
use forge_catalog::Catalog;
use forge_core::audit::AuditSink;
use forge_evidence::{AuditLog, KeyPurpose, Keyring};
use forge_http::Service;
use forge_policy::{PolicyEngine, PolicyError, PolicyName};
use forge_runtime::{Runtime, Supervisor};
use forge_services::spawn::{GateDecision, GateError, SpawnDeps, SpawnGate, SpawnState};
use forge_services::tenants::TenantDirectory;
use forge_store::Store;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use backends::Backends;
pub use config::{PlatformConfig, Ports};

use crate::access::{AccessConfig, AccessState};
use crate::authz::ScenarioAccess;
use crate::observer::{Observer, ObserverDeps};
use crate::orchestrator::{Orchestrator, OrchestratorDeps};
use crate::runner::Runner;
use crate::scoreboard::{Scoreboard, ScoreboardDeps};
use crate::spawn_consumer;
use crate::worker::{Worker, WorkerDeps};

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
    /// Where each service listens.
    pub addrs: BTreeMap<Service, SocketAddr>,
    pub issuer: LocalIssuer,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn forge_bus::Bus>,
    pub runtime: Arc<dyn Runtime>,
    pub audit_log: Arc<AuditLog>,
    pub catalog: Arc<Catalog>,
    pub orchestrator: Orchestrator,
    pub data_dir: PathBuf,
    pub recovered: crate::orchestrator::RecoverReport,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    supervisor: JoinHandle<()>,
}

async fn bind(cfg: &PlatformConfig, service: Service) -> anyhow::Result<TcpListener> {
    let (host, port) = (cfg.bind, cfg.ports.get(service));
    TcpListener::bind(SocketAddr::new(host, port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {host}:{port} for {} (is another forge running?)",
                service.name()
            )
        })
}

type ServeFuture = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

impl Platform {
    pub async fn start(cfg: PlatformConfig, backends: Backends) -> anyhow::Result<Self> {
        forge_auth::install_crypto_provider();
        forge_http::metrics_handle();
        let data_dir = cfg.data_dir.clone();

        // Listeners first: a port clash should fail fast, before anything is built.
        let mut listeners = BTreeMap::new();
        for service in Service::ALL {
            listeners.insert(service, bind(&cfg, service).await?);
        }
        let mut addrs = BTreeMap::new();
        for (service, l) in &listeners {
            addrs.insert(*service, l.local_addr()?);
        }
        let url = |s: Service| format!("http://{}:{}", cfg.public_host, addrs[&s].port());

        let Backends {
            store,
            bus,
            evidence,
            runtime,
            audit_log,
            opa,
            policy,
        } = backends;
        let audit: Arc<dyn AuditSink> = audit_log.clone();
        let catalog = Arc::new(
            Catalog::load(cfg.template_dir.as_deref()).context("loading the lab catalog")?,
        );
        // Tokens it mints (the banner's, tests') must pass its own verifier.
        let issuer = LocalIssuer::load_or_create(&data_dir, &cfg.auth.issuer, &cfg.auth.audience)?;
        let auth = cfg
            .auth
            .clone()
            .resolve(&data_dir)
            .context("authentication settings")?;
        let verifier = Arc::new(Verifier::new(&auth));
        let tenants = Arc::new(match &cfg.tenants_file {
            Some(p) => TenantDirectory::load(p)?,
            None => TenantDirectory::example(),
        });
        let verdict_keys = Arc::new(Mutex::new(Keyring::open(&data_dir, KeyPurpose::Verdict)?));

        let (shutdown, shutdown_rx) = watch::channel(false);
        let stop = || {
            let mut rx = shutdown_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };

        let access = ScenarioAccess::new(verifier.clone(), store.clone(), audit.clone());
        let (supervisor, lab_events) = Supervisor::new(runtime.clone(), cfg.supervisor.clone());
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
            access: access.for_service(Service::Orchestrator),
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
            access: access.for_service(Service::Worker),
        });
        let scoreboard = Scoreboard::new(ScoreboardDeps {
            store: store.clone(),
            bus: bus.clone(),
            evidence,
            keyring: verdict_keys,
            audit: audit.clone(),
            access: access.for_service(Service::Scoreboard),
        });
        let observer = Observer::new(ObserverDeps {
            bus: bus.clone(),
            catalog: catalog.clone(),
            audit_log: audit_log.clone(),
            data_dir: data_dir.clone(),
            access: access.for_service(Service::Observer),
        });
        let runner = Runner::new(
            runtime.clone(),
            audit.clone(),
            access.for_service(Service::Runner),
        );

        let mut spawn_cfg = cfg.spawn.clone();
        if spawn_cfg.base_url.is_empty() {
            spawn_cfg.base_url = url(Service::Spawn);
        }
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
                orchestrator_url: url(Service::Orchestrator),
                worker_url: url(Service::Worker),
                scoreboard_url: url(Service::Scoreboard),
            },
            access: access.for_service(Service::Spawn),
            catalog: catalog.clone(),
        });

        let mut tasks = vec![
            orchestrator.run(shutdown_rx.clone(), Some(lab_events)),
            spawn_consumer(
                &worker,
                bus.clone(),
                Worker::consumer(),
                shutdown_rx.clone(),
                Worker::on_execute,
            ),
            spawn_consumer(
                &scoreboard,
                bus.clone(),
                Scoreboard::consumer(),
                shutdown_rx.clone(),
                Scoreboard::on_completed,
            ),
            observer.run(shutdown_rx.clone()),
        ];
        for (service, listener) in listeners {
            let app = match service {
                Service::Spawn => None,
                Service::Orchestrator => Some(crate::orchestrator::router(orchestrator.clone())),
                Service::Worker => Some(crate::worker::router(worker.clone())),
                Service::Observer => Some(crate::observer::router(observer.clone())),
                Service::Scoreboard => Some(crate::scoreboard::router(scoreboard.clone())),
                Service::Runner => Some(crate::runner::router(runner.clone())),
                Service::Opa => Some(forge_policy::server::router(opa.clone())),
            };
            let fut: ServeFuture = match app {
                Some(app) => Box::pin(forge_http::serve(listener, app, stop())),
                // The front door has background work of its own (billing outbox, key purge).
                None => Box::pin(forge_services::spawn::serve_with(
                    listener,
                    spawn.clone(),
                    access.clone(),
                    stop(),
                )),
            };
            tasks.push(tokio::spawn(async move {
                if let Err(e) = fut.await {
                    tracing::error!(service = service.name(), error = %e, "service stopped");
                }
            }));
        }

        Ok(Self {
            addrs,
            issuer,
            store,
            bus,
            runtime,
            audit_log,
            catalog,
            orchestrator,
            data_dir,
            recovered,
            shutdown,
            tasks,
            supervisor,
        })
    }

    /// `http://host:port` of a service.
    pub fn url(&self, service: Service) -> String {
        let a = self.addrs[&service];
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
