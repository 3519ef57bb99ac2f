//! `forge up`: the whole platform in one process on its spec ports with the embedded defaults
//! (SQLite, in-process bus, local evidence store, embedded policy, local Docker), lab images
//! built if missing. Prints where everything listens, a token for the demo tenant and a working
//! example; stops gracefully on Ctrl-C or SIGTERM (labs keep running and are adopted on the
//! next start).

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use forge_lifecycle::platform::{Platform, PlatformConfig};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Data directory: state, keys, audit log, evidence
    #[arg(long, env = "FORGE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to bind the services to
    #[arg(long, env = "FORGE_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Host name learners use to reach this machine (in access URLs)
    #[arg(long, env = "FORGE_PUBLIC_HOST", default_value = "localhost")]
    public_host: String,
    /// Operator templates added to the bundled catalog
    #[arg(long, env = "TEMPLATE_DIR")]
    template_dir: Option<PathBuf>,
    /// Operator policies added to the bundled gates
    #[arg(long, env = "POLICY_DIR")]
    policy_dir: Option<PathBuf>,
    /// A remote OPA instead of the embedded engine
    #[arg(long, env = "OPA_URL")]
    opa_url: Option<String>,
    /// Tenants and plans (default: the bundled example with tenant `demo`)
    #[arg(long, env = "FORGE_TENANTS_FILE")]
    tenants: Option<PathBuf>,
    /// Start, print the banner, and stop again (a smoke test of the wiring)
    #[arg(long)]
    check: bool,
}

pub async fn run(args: UpArgs) -> anyhow::Result<u8> {
    let data_dir = args.data_dir.unwrap_or_else(forge_auth::default_data_dir);
    let mut cfg = PlatformConfig::new(data_dir.clone());
    cfg.bind = args.bind;
    cfg.public_host = args.public_host;
    cfg.template_dir = args.template_dir;
    cfg.policy_dir = args.policy_dir;
    cfg.opa_url = args.opa_url;
    cfg.tenants_file = args.tenants;
    cfg.spawn =
        forge_services::spawn::SpawnConfig::from_env().context("spawn service configuration")?;
    eprintln!("forge: starting in {} (embedded mode)…", data_dir.display());
    let platform = Platform::start(cfg).await?;
    let token = platform.mint("demo", &["forge.spawn", "forge.score.read"], "demo-learner")?;
    let spawn = platform.url("spawn");
    println!("FrostGate Forge is up (data dir {})", data_dir.display());
    println!();
    for (name, svc) in [
        ("spawn", "forge_spawn_service"),
        ("orchestrator", "forge_orchestrator"),
        ("worker", "forge_worker_agent"),
        ("observer", "forge_observer_hub"),
        ("scoreboard", "forge_scoreboard"),
        ("runner", "forge_playbook_runner"),
        ("opa", "forge_opa"),
    ] {
        println!("  {svc:<24} {}", platform.url(name));
    }
    let r = &platform.recovered;
    if !(r.failed_creating.is_empty()
        && r.failed_running.is_empty()
        && r.orphans_removed.is_empty())
    {
        println!();
        println!(
            "  recovered: {} kept running, {} failed, {} orphan labs removed",
            r.kept_running.len(),
            r.failed_creating.len() + r.failed_running.len(),
            r.orphans_removed.len()
        );
    }
    println!();
    println!("Demo tenant `demo` (every track), learner token valid 8h:");
    println!();
    println!("  export FORGE_TOKEN={token}");
    println!();
    println!("Try it:");
    println!(
        "  forge spawn netplus                      # spawn, wait until running, print the access URL"
    );
    println!("  curl -X POST {spawn}/v1/spawn -H \"Authorization: Bearer $FORGE_TOKEN\" \\");
    println!(
        "       -H 'Content-Type: application/json' -H 'x-request-id: test-001' -d '{{\"track\": \"netplus\"}}'"
    );
    println!("  forge status <scenario_id>; forge shell <scenario_id>; forge check <scenario_id>");
    println!("  forge submit <scenario_id>; forge score <scenario_id>");
    println!();
    println!("Ctrl-C stops the services (labs keep running and are adopted on the next start).");
    if !args.check {
        super::serve::shutdown_signal().await;
        eprintln!("forge: stopping…");
    }
    platform.shutdown().await;
    Ok(0)
}
