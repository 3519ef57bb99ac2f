//! `forge`: the one binary of FrostGate Forge. Thin by design: it parses arguments and the
//! environment into the libraries' config types ([`config`]), sets up logging, and hands off
//! to the crates that do the work.

mod cmd;
mod config;
mod logging;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Parser)]
#[command(
    name = "forge",
    version,
    about = "FrostGate Forge: governed, sandboxed cyber-training labs"
)]
struct Cli {
    #[command(flatten)]
    global: config::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring the whole platform up on this machine (embedded mode, default ports)
    Up(Box<cmd::up::UpArgs>),
    #[command(flatten)]
    Client(cmd::client::ClientCommand),
    /// Check this machine can run labs safely (engine, user namespaces, tools, images)
    Doctor(cmd::doctor::DoctorArgs),
    /// Issue local access tokens
    #[command(subcommand)]
    Token(cmd::token::TokenCommand),
    /// Billing usage reports
    #[command(subcommand)]
    Billing(cmd::billing::BillingCommand),
    /// Run a standalone playbook against a running lab
    #[command(subcommand)]
    Playbook(cmd::playbook::PlaybookCommand),
    /// Author, inspect and test scenario templates
    #[command(subcommand)]
    Template(cmd::template::TemplateCommand),
    /// Build and list the local lab images
    #[command(subcommand)]
    Images(cmd::images::ImagesCommand),
    /// Operate on labs present on this host
    #[command(subcommand)]
    Scenarios(cmd::scenarios::ScenariosCommand),
    /// Manage the signing keys (verdict and audit)
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Verify evidence bundles offline
    #[command(subcommand)]
    Bundle(cmd::bundle::BundleCommand),
    /// Evaluate and test the Rego policy gates
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// Run one service of the platform on its own (distributed mode)
    #[command(subcommand)]
    Serve(cmd::serve::ServeCommand),
    /// Verify the tamper-evident audit log
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// Set up the NATS JetStream stream of distributed mode
    #[command(subcommand)]
    Nats(cmd::nats::NatsCommand),
    /// Inspect the bus of distributed mode (dead letters)
    #[command(subcommand)]
    Bus(cmd::bus::BusCommand),
}

// regorus allocates on every rule a policy decision evaluates; mimalloc takes 13-19% off an
// uncached decision against glibc's malloc (crates/forge-policy/benches/decision.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A CLI piped into `head` should end quietly, as Unix tools do, not panic on EPIPE.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
    let cli: Cli = config::parse();
    let filter = match cli.global.log_filter() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // The bus layer publishes nothing until a platform binds its publisher (`telemetry::start`);
    // until then, and in every other command, it is a cheap no-op next to stderr.
    let process = process_name(&cli.command);
    let stderr = if cli.global.log_format.json(process.is_some()) {
        let json = logging::JsonLines {
            process: process.unwrap_or("forge").to_owned(),
        };
        tracing_subscriber::fmt::layer()
            .fmt_fields(logging::span_fields())
            .event_format(json)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(forge_lifecycle::telemetry::BusLogLayer::new())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let data_dir = cli.global.data_dir;
    match cli.command {
        Command::Up(a) => cmd::up::run(data_dir, *a).await,
        Command::Client(c) => cmd::client::run(&data_dir, c).await,
        Command::Token(c) => cmd::token::run(&data_dir, c),
        Command::Doctor(a) => cmd::doctor::run(a).await,
        Command::Billing(c) => cmd::billing::run(&data_dir, c).await,
        Command::Playbook(c) => cmd::playbook::run(c).await,
        Command::Template(c) => cmd::template::run(c).await,
        Command::Images(c) => cmd::images::run(c).await,
        Command::Scenarios(c) => cmd::scenarios::run(c).await,
        Command::Keys(c) => cmd::keys::run(&data_dir, c),
        Command::Bundle(c) => cmd::bundle::run(&data_dir, c).await,
        Command::Policy(c) => cmd::policy::run(c),
        Command::Serve(c) => cmd::serve::run(data_dir, c).await,
        Command::Audit(c) => cmd::audit::run(&data_dir, c),
        Command::Nats(c) => cmd::nats::run(c).await,
        Command::Bus(c) => cmd::bus::run(c).await,
    }
}

/// The service name of a command that runs services (for its log lines), `None` for the others.
fn process_name(command: &Command) -> Option<&'static str> {
    use cmd::serve::ServeCommand as S;
    use forge_http::Service;
    Some(match command {
        Command::Up(_) => "forge_platform",
        Command::Serve(S::Spawn(_)) => Service::Spawn.name(),
        Command::Serve(S::Orchestrator(_)) => Service::Orchestrator.name(),
        Command::Serve(S::Worker(_)) => Service::Worker.name(),
        Command::Serve(S::Observer(_)) => Service::Observer.name(),
        Command::Serve(S::Scoreboard(_)) => Service::Scoreboard.name(),
        Command::Serve(S::Runner(_)) => Service::Runner.name(),
        Command::Serve(S::Host(_)) => "forge_lab_host",
        Command::Serve(S::Opa { .. }) => Service::Opa.name(),
        _ => return None,
    })
}
