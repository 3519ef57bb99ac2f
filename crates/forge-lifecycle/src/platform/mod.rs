//! The platform: every service on its port, on the [`Backends`] the caller passes in. `forge
//! up` is [`Backends::embedded`] + [`Platform::start`] with every service + a banner; `forge
//! serve <service>` starts the same with one service (or a lab host's three) on the distributed
//! backends; the end-to-end tests start it on ephemeral ports, the fast lifecycle tests on the
//! fake runtime.

mod audit_watch;
mod backends;
mod config;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
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
use crate::orchestrator::{Orchestrator, OrchestratorDeps, RecoverReport};
use crate::runner::Runner;
use crate::scoreboard::{Scoreboard, ScoreboardDeps};
use crate::spawn_consumer;
use crate::worker::{Worker, WorkerDeps};

/// The front door's gates (`spawn_gate`, `training_gate`) decided by the policy layer,
/// whichever backend it has.
struct PolicyGate(Arc<dyn PolicyEngine>);

impl PolicyGate {
    async fn decide_as(&self, gate: PolicyName, input: &Value) -> Result<GateDecision, GateError> {
        match self.0.decide(gate, input).await {
            Ok(d) if d.allow => Ok(GateDecision::allow()),
            Ok(d) => Ok(GateDecision::deny(d.deny_reasons)),
            Err(e @ PolicyError::Unavailable { .. }) => Err(GateError::Unavailable(e.to_string())),
            Err(e) => Err(GateError::Other(e.to_string())),
        }
    }
}

#[async_trait]
impl SpawnGate for PolicyGate {
    async fn decide(&self, input: Value) -> Result<GateDecision, GateError> {
        self.decide_as(PolicyName::SpawnGate, &input).await
    }

    async fn decide_training(&self, input: &Value) -> Result<GateDecision, GateError> {
        self.decide_as(PolicyName::TrainingGate, input).await
    }
}

/// A running platform (all services, or the ones its configuration names).
pub struct Platform {
    /// Where each service it runs listens.
    pub addrs: BTreeMap<Service, SocketAddr>,
    pub issuer: LocalIssuer,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn forge_bus::Bus>,
    pub runtime: Option<Arc<dyn Runtime>>,
    pub audit_log: Arc<AuditLog>,
    pub catalog: Arc<Catalog>,
    /// The orchestrator of this lab host, when it runs one.
    pub orchestrator: Option<Orchestrator>,
    pub data_dir: PathBuf,
    pub recovered: RecoverReport,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    supervisor: Option<JoinHandle<()>>,
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
        // Keys past their rotation age are rotated before anything signs with them.
        forge_evidence::rotate_due_keys(
            &data_dir,
            chrono::Utc::now(),
            forge_evidence::ROTATION_CADENCE,
        )
        .context("rotating signing keys past their rotation age")?;
        let runs = |s: Service| cfg.services.contains(&s);

        // Listeners first: a port clash should fail fast, before anything is built.
        let mut listeners = BTreeMap::new();
        for service in cfg.services.iter().copied() {
            listeners.insert(service, bind(&cfg, service).await?);
        }
        let mut addrs = BTreeMap::new();
        for (service, l) in &listeners {
            addrs.insert(*service, l.local_addr()?);
        }
        // Where learners and other services reach a service: as configured, else this
        // process's port, else the service's default port on the public host.
        let url = |s: Service| match cfg.urls.get(&s) {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let port = addrs.get(&s).map_or(cfg.ports.get(s), SocketAddr::port);
                format!("http://{}:{port}", cfg.public_host)
            }
        };

        // `/ready` on every listener: each service checks the backends it depends on.
        let ready = crate::readiness::Dependencies::of(&backends);
        let Backends {
            store,
            bus,
            evidence,
            runtime,
            audit_log,
            opa,
            policy,
        } = backends;
        let lab_runtime = |service: Service| {
            runtime.clone().ok_or_else(|| {
                anyhow!(
                    "{} runs labs and needs a lab runtime (the Docker Engine)",
                    service.name()
                )
            })
        };
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

        let (shutdown, shutdown_rx) = watch::channel(false);
        let stop = || {
            let mut rx = shutdown_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        // Logs, metric samples and audit events go on the bus for the observer hub, from every
        // process; the signed audit log still gets every event first.
        let telemetry = crate::telemetry::start(
            bus.clone(),
            &cfg.process_name(),
            cfg.telemetry.clone(),
            shutdown_rx.clone(),
        );
        let audit: Arc<dyn AuditSink> = telemetry.audit_tee(audit_log.clone());
        // One tenant directory for the front door's plans and every route's request budget.
        let tenants = Arc::new(match &cfg.tenants_file {
            Some(p) => TenantDirectory::load(p)?,
            None => TenantDirectory::example(),
        });
        let access = ScenarioAccess::new(verifier.clone(), store.clone(), audit.clone())
            .with_tenants(tenants.clone());
        let mut tasks = telemetry.into_tasks();
        tasks.push(flush_denials(access.clone(), shutdown_rx.clone()));
        if let Some(every) = cfg.audit_verify_every {
            let log = cfg.audit_log_path();
            tasks.push(audit_watch::spawn(
                log,
                data_dir.clone(),
                every,
                shutdown_rx.clone(),
            ));
        }
        let mut apps: BTreeMap<Service, axum::Router> = BTreeMap::new();

        let mut host = cfg.orchestrator.host.clone();
        host.validate().map_err(anyhow::Error::msg)?;
        for name in cfg.orchestrator.pools.keys() {
            if catalog.get(name).is_none() {
                anyhow::bail!("warm pool template `{name}` is not in the catalog");
            }
        }
        if host.url.is_empty() {
            host.url = url(Service::Worker);
        }
        if host.runner_url.is_empty() {
            host.runner_url = url(Service::Runner);
        }

        // The one spawn path: the front door's, which the orchestrator's `POST /v1/scenarios`
        // spawns through as well (one state, so one set of rate-limit buckets, per process).
        let spawn_front = (runs(Service::Spawn) || runs(Service::Orchestrator)).then(|| {
            spawn_state(
                &cfg,
                &url,
                SpawnFrontDeps {
                    verifier: verifier.clone(),
                    store: store.clone(),
                    bus: bus.clone(),
                    policy: policy.clone(),
                    audit: audit.clone(),
                    catalog: catalog.clone(),
                    tenants: tenants.clone(),
                },
            )
        });

        let (mut orchestrator, mut recovered, mut supervisor) =
            (None, RecoverReport::default(), None);
        if runs(Service::Orchestrator) {
            let runtime = lab_runtime(Service::Orchestrator)?;
            // Hosts may share an engine: each keeps only its own labs alive.
            let mut supervisor_cfg = cfg.supervisor.clone();
            supervisor_cfg.label_filters.push(format!(
                "{}={}",
                crate::orchestrator::HOST_LABEL,
                host.id
            ));
            let (sup, lab_events) = Supervisor::new(runtime.clone(), supervisor_cfg);
            // The supervisor has no stop signal of its own; it is aborted at shutdown.
            supervisor = Some(sup.spawn());
            let mut config = cfg.orchestrator.clone();
            config.host = host.clone();
            let o = Orchestrator::new(OrchestratorDeps {
                config,
                store: store.clone(),
                bus: bus.clone(),
                catalog: catalog.clone(),
                policy: policy.clone(),
                runtime,
                audit: audit.clone(),
                access: access.for_service(Service::Orchestrator),
            });
            recovered = o.recover().await.context("recovering after the last run")?;
            tasks.push(o.run(shutdown_rx.clone(), Some(lab_events)));
            let front = spawn_front
                .clone()
                .ok_or_else(|| anyhow!("the orchestrator runs without a spawn front door"))?;
            apps.insert(
                Service::Orchestrator,
                crate::orchestrator::router(o.clone(), front),
            );
            orchestrator = Some(o);
        }
        if runs(Service::Worker) {
            let runtime = lab_runtime(Service::Worker)?;
            let agents = crate::agents::Agents::new(runtime.clone(), policy.clone(), audit.clone());
            let llm = cfg
                .llm
                .as_ref()
                .map(|c| crate::llm::Llm::new(c, policy.clone(), runtime.clone(), audit.clone()))
                .transpose()
                .context("configuring llm proposals")?;
            let worker = Worker::new(WorkerDeps {
                store: store.clone(),
                bus: bus.clone(),
                catalog: catalog.clone(),
                runtime,
                audit: audit.clone(),
                evidence: evidence.clone(),
                access: access.for_service(Service::Worker),
                host_id: host.id.clone(),
                agents: Some(agents),
                llm,
            });
            tasks.push(spawn_consumer(
                &worker,
                bus.clone(),
                worker.agents_consumer(),
                shutdown_rx.clone(),
                Worker::on_created,
            ));
            let consumer = worker.consumer();
            tasks.push(spawn_consumer(
                &worker,
                bus.clone(),
                consumer,
                shutdown_rx.clone(),
                Worker::on_execute,
            ));
            apps.insert(Service::Worker, crate::worker::router(worker));
        }
        if runs(Service::Scoreboard) {
            let verdict_keys = Arc::new(Mutex::new(Keyring::open(&data_dir, KeyPurpose::Verdict)?));
            let scoreboard = Scoreboard::new(ScoreboardDeps {
                store: store.clone(),
                bus: bus.clone(),
                evidence,
                keyring: verdict_keys,
                audit: audit.clone(),
                access: access.for_service(Service::Scoreboard),
            });
            tasks.push(spawn_consumer(
                &scoreboard,
                bus.clone(),
                Scoreboard::consumer(),
                shutdown_rx.clone(),
                Scoreboard::on_completed,
            ));
            apps.insert(Service::Scoreboard, crate::scoreboard::router(scoreboard));
        }
        if runs(Service::Observer) {
            let observer = Observer::new(ObserverDeps {
                bus: bus.clone(),
                catalog: catalog.clone(),
                audit_log: audit_log.clone(),
                data_dir: data_dir.clone(),
                access: access.for_service(Service::Observer),
                fairness_file: Some(cfg.state_file("fairness.json")),
                backlog_every: cfg
                    .telemetry
                    .metrics_interval
                    .unwrap_or(Duration::from_secs(15)),
            });
            tasks.push(observer.run(shutdown_rx.clone()));
            apps.insert(Service::Observer, crate::observer::router(observer));
        }
        if runs(Service::Runner) {
            let runner = Runner::new(
                lab_runtime(Service::Runner)?,
                audit.clone(),
                access.for_service(Service::Runner),
            )
            .on_host(store.clone(), &host.id);
            apps.insert(Service::Runner, crate::runner::router(runner));
        }
        if runs(Service::Opa) {
            // Callers with a token the platform accepts; anonymous ones only when the endpoint
            // listens on loopback (`forge up`'s default), where every caller is on this host.
            let server = forge_policy::server::ServerConfig::new(Some(verifier.clone()))
                .anonymous(cfg.bind.is_loopback());
            apps.insert(
                Service::Opa,
                forge_policy::server::router(opa.clone(), server),
            );
        }

        for (service, listener) in listeners {
            let fut: ServeFuture = match apps.remove(&service) {
                Some(app) => Box::pin(forge_http::serve(
                    listener,
                    named(service, ready.install(service, app)),
                    stop(),
                )),
                // The front door has background work of its own (billing outbox, key purge).
                None => {
                    let spawn = spawn_front
                        .clone()
                        .ok_or_else(|| anyhow!("{} has no front door", service.name()))?;
                    let access_page =
                        access_page(&url, access.for_service(Service::Spawn), catalog.clone());
                    Box::pin(forge_services::spawn::serve_with(
                        listener,
                        spawn.with_readiness(ready.readiness(service)),
                        access_page,
                        stop(),
                    ))
                }
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

    /// `http://host:port` of a service this platform runs.
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

    /// A token of the local issuer that expires at `exp` (Unix seconds), past or future.
    pub fn mint_until(
        &self,
        tenant: &str,
        roles: &[&str],
        sub: &str,
        exp: u64,
    ) -> anyhow::Result<String> {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        Ok(self.issuer.mint_until(tenant, &roles, sub, exp)?)
    }

    /// Graceful stop: the services finish in-flight requests, consumers stop, the audit log is
    /// flushed. Labs keep running; the next start adopts or cleans them.
    pub async fn shutdown(self) {
        if let Some(s) = self.supervisor {
            s.abort();
        }
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

/// What the front door is built from.
struct SpawnFrontDeps {
    verifier: Arc<Verifier>,
    store: Arc<dyn Store>,
    bus: Arc<dyn forge_bus::Bus>,
    policy: Arc<dyn PolicyEngine>,
    audit: Arc<dyn AuditSink>,
    catalog: Arc<Catalog>,
    tenants: Arc<TenantDirectory>,
}

/// The spawn service's state, whose `access_url`s point at the spawn service by `url`.
fn spawn_state(
    cfg: &PlatformConfig,
    url: &dyn Fn(Service) -> String,
    d: SpawnFrontDeps,
) -> SpawnState {
    let mut spawn_cfg = cfg.spawn.clone();
    if spawn_cfg.base_url.is_empty() {
        spawn_cfg.base_url = url(Service::Spawn);
    }
    // Hosts keep the pools; the front door takes from them (one setting for both).
    spawn_cfg
        .pooled_templates
        .extend(cfg.orchestrator.pools.keys().cloned());
    SpawnState::new(SpawnDeps {
        config: spawn_cfg,
        verifier: d.verifier,
        store: d.store,
        bus: d.bus,
        gate: Arc::new(PolicyGate(d.policy)),
        audit: d.audit,
        catalog: d.catalog,
        tenants: d.tenants,
    })
}

/// The learner's access page, which links the other services by `url`.
fn access_page(
    url: &dyn Fn(Service) -> String,
    access: ScenarioAccess,
    catalog: Arc<Catalog>,
) -> axum::Router {
    crate::access::router(AccessState {
        config: AccessConfig {
            orchestrator_url: url(Service::Orchestrator),
            worker_url: url(Service::Worker),
            scoreboard_url: url(Service::Scoreboard),
            observer_url: url(Service::Observer),
        },
        access,
        catalog,
    })
}

/// Closes the access check's audit windows of refusals as they run out, and all of them at
/// shutdown, so every suppressed refusal's count reaches the audit log before it is flushed.
fn flush_denials(access: ScenarioAccess, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    let every =
        (access.denial_window() / 4).clamp(Duration::from_millis(50), Duration::from_secs(15));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(every) => access.flush_denials(false),
            }
        }
        access.flush_denials(true);
    })
}

/// `app` with every request in a span naming `service`: its log lines say which service
/// answered, also where several share a process (`forge up`, a lab host).
fn named(service: Service, app: axum::Router) -> axum::Router {
    use tracing::Instrument as _;
    app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            next.run(req)
                .instrument(tracing::info_span!("service", service = service.name()))
        },
    ))
}
