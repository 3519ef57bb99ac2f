//! `forge up`: the whole platform in one process on its default ports with the embedded
//! backends (SQLite, in-process bus, local evidence store, embedded policy, local Docker), lab
//! images built if missing. Prints where everything listens, a token for the demo tenant and a
//! working example; stops gracefully on Ctrl-C or SIGTERM (labs keep running and are adopted on
//! the next start).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use forge_auth::roles;
use forge_http::Service;
use forge_lifecycle::platform::{Backends, Platform};

use crate::config::PlatformArgs;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Start, print the banner, and stop again (a smoke test of the wiring)
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    platform: PlatformArgs,
}

pub async fn run(data_dir: PathBuf, args: UpArgs) -> anyhow::Result<u8> {
    let cfg = args
        .platform
        .platform_config(data_dir.clone())
        .context("invalid configuration")?;
    eprintln!("forge: starting in {} (embedded mode)…", data_dir.display());
    let backends = Backends::embedded(&cfg).await?;
    let platform = Platform::start(cfg, backends).await?;
    let token = platform.mint("demo", &[roles::SPAWN, roles::SCORE_READ], "demo-learner")?;
    let spawn = platform.url(Service::Spawn);
    println!("FrostGate Forge is up (data dir {})", data_dir.display());
    println!();
    for service in Service::ALL {
        println!("  {:<24} {}", service.name(), platform.url(service));
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
    // The views of the demo tenant's instructor and of an operator, signed in by the URL
    // fragment (never sent to the server); the tokens are valid 8h like the learner's.
    let instructor = platform.mint("demo", &[roles::INSTRUCTOR], "demo-instructor")?;
    let operator = platform.mint(
        "demo",
        &[roles::ORCHESTRATOR, roles::OBSERVER],
        "demo-operator",
    )?;
    println!("Instructor view (live labs, drop-in consoles, scores, fairness):");
    println!("  {spawn}/instructor#token={instructor}");
    println!("Operator page (lab hosts, capacity, failures, audit chain):");
    println!("  {spawn}/operator#token={operator}");
    println!();
    println!("Ctrl-C stops the services (labs keep running and are adopted on the next start).");
    if !args.check {
        super::serve::shutdown_signal().await;
        eprintln!("forge: stopping…");
    }
    platform.shutdown().await;
    Ok(0)
}
