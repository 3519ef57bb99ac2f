//! `forge serve <service>`: one service per process (distributed mode), configured by the
//! environment like `forge up` (README.md, Configuration). Every process of a platform shares
//! NATS (`NATS_URL`), PostgreSQL (`DATABASE_URL`), the S3 evidence store and the keys in the
//! data dir; run any number of replicas of each service. `forge serve host` is a lab host: the
//! orchestrator, worker agent and playbook runner of the labs on this machine's Docker Engine,
//! taking at most `FORGE_HOST_CAPACITY` labs. `forge serve opa` needs policies and the token
//! settings: its Data API answers callers with a token the platform accepts (the platform's
//! processes mint theirs from the data dir's secret), and anonymous ones only when it listens
//! on loopback.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use forge_http::Service;
use forge_lifecycle::platform::{Backends, Platform, PlatformConfig};

use crate::config::{AuthArgs, PlatformArgs, PolicyDirArg};

#[derive(Subcommand)]
pub enum ServeCommand {
    /// forge_spawn_service: the front door and the learner's access page (:8082)
    Spawn(Box<PlatformArgs>),
    /// forge_orchestrator of this lab host (:8083; Docker Engine)
    Orchestrator(Box<PlatformArgs>),
    /// forge_worker_agent of this lab host (:8084; Docker Engine)
    Worker(Box<PlatformArgs>),
    /// forge_observer_hub (:8085)
    Observer(Box<PlatformArgs>),
    /// forge_scoreboard (:8086)
    Scoreboard(Box<PlatformArgs>),
    /// forge_playbook_runner of this lab host (:8087; Docker Engine)
    Runner(Box<PlatformArgs>),
    /// A lab host: orchestrator, worker agent and playbook runner in one process
    Host(Box<PlatformArgs>),
    /// The OPA-compatible policy endpoint (OPA's Data API over the embedded engine)
    Opa {
        /// Address to listen on; on a loopback address callers without a token are answered
        /// too, elsewhere only callers with a token of forge.orchestrator, forge.observer or
        /// forge.instructor
        #[arg(
            long,
            env = "FORGE_OPA_ADDR",
            default_value_t = SocketAddr::from((Ipv4Addr::LOCALHOST, Service::Opa.default_port())),
            value_name = "ADDR"
        )]
        listen: SocketAddr,
        #[command(flatten)]
        policies: PolicyDirArg,
        #[command(flatten)]
        auth: Box<AuthArgs>,
    },
}

/// The services a `forge serve` process runs, and the name of its audit log.
fn selection(cmd: &ServeCommand) -> (&'static str, Vec<Service>) {
    match cmd {
        ServeCommand::Spawn(_) => ("spawn", vec![Service::Spawn]),
        ServeCommand::Orchestrator(_) => ("orchestrator", vec![Service::Orchestrator]),
        ServeCommand::Worker(_) => ("worker", vec![Service::Worker]),
        ServeCommand::Observer(_) => ("observer", vec![Service::Observer]),
        ServeCommand::Scoreboard(_) => ("scoreboard", vec![Service::Scoreboard]),
        ServeCommand::Runner(_) => ("runner", vec![Service::Runner]),
        ServeCommand::Host(_) => (
            "host",
            vec![Service::Orchestrator, Service::Worker, Service::Runner],
        ),
        ServeCommand::Opa { .. } => ("opa", vec![Service::Opa]),
    }
}

pub async fn run(data_dir: PathBuf, cmd: ServeCommand) -> anyhow::Result<u8> {
    let (name, services) = selection(&cmd);
    let args = match cmd {
        ServeCommand::Opa {
            listen,
            policies,
            auth,
        } => return serve_opa(&data_dir, listen, policies, &auth).await,
        ServeCommand::Spawn(a)
        | ServeCommand::Orchestrator(a)
        | ServeCommand::Worker(a)
        | ServeCommand::Observer(a)
        | ServeCommand::Scoreboard(a)
        | ServeCommand::Runner(a)
        | ServeCommand::Host(a) => a,
    };
    let cfg = service_config(&args, data_dir, name, services).context("invalid configuration")?;
    let backends = Backends::embedded(&cfg).await?;
    let platform = Platform::start(cfg, backends).await?;
    for (service, addr) in &platform.addrs {
        eprintln!("{} listening on http://{addr}", service.name());
    }
    if let Some(o) = &platform.orchestrator {
        let r = &platform.recovered;
        eprintln!(
            "lab host `{}`: {} labs adopted, {} failed, {} orphans removed",
            o.host_id(),
            r.kept_running.len(),
            r.failed_creating.len() + r.failed_running.len(),
            r.orphans_removed.len()
        );
    }
    shutdown_signal().await;
    eprintln!("forge serve {name}: stopping…");
    platform.shutdown().await;
    Ok(0)
}

/// The platform configuration of one `forge serve` process.
pub fn service_config(
    args: &PlatformArgs,
    data_dir: PathBuf,
    name: &str,
    services: Vec<Service>,
) -> anyhow::Result<PlatformConfig> {
    if args.nats_url.is_none() || args.database_url.is_none() {
        bail!(
            "forge serve {name} is one process of a distributed platform: set NATS_URL and \
             DATABASE_URL (the in-process bus and SQLite cannot be shared; `forge up` runs \
             every service in one process)"
        );
    }
    let mut cfg = args.platform_config(data_dir)?;
    cfg.services = services.into_iter().collect::<BTreeSet<_>>();
    if cfg.audit_log.is_none() {
        cfg.audit_log = Some(audit_log_of(&cfg.data_dir, name, &cfg));
    }
    // Lab images are a lab host's business; the others never touch an engine.
    cfg.build_images = cfg.runs_labs();
    Ok(cfg)
}

/// `audit/<service>-<host id>.jsonl` for a lab host's processes, else
/// `audit/<service>-<host name>.jsonl` (in a container, the container's): replicas sharing a
/// data dir never append to one hash chain.
fn audit_log_of(data_dir: &Path, name: &str, cfg: &PlatformConfig) -> PathBuf {
    let who = if cfg.runs_labs() {
        cfg.orchestrator.host.id.clone()
    } else {
        crate::config::hostname()
    };
    data_dir.join("audit").join(format!("{name}-{who}.jsonl"))
}

async fn serve_opa(
    data_dir: &Path,
    listen: SocketAddr,
    policies: PolicyDirArg,
    auth: &AuthArgs,
) -> anyhow::Result<u8> {
    forge_auth::install_crypto_provider();
    let auth = auth
        .settings()?
        .resolve(data_dir)
        .context("authentication settings")?;
    let verifier = Arc::new(forge_auth::Verifier::new(&auth));
    let mut b = forge_policy::EmbeddedEngine::builder();
    if let Some(d) = policies.policy_dir {
        b = b.operator_dir(d);
    }
    let engine = Arc::new(b.build().context("loading policies")?);
    let access = forge_policy::server::ServerConfig::new(Some(verifier))
        .anonymous(listen.ip().is_loopback());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!(
        "{} listening on http://{}",
        Service::Opa.name(),
        listener.local_addr()?
    );
    forge_policy::server::serve(listener, engine, access, shutdown_signal()).await?;
    Ok(0)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
