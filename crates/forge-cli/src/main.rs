//! `forge`: the one binary of FrostGate Forge. Thin by design: it parses arguments, sets up
//! logging, and hands off to the crates that do the work.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "forge",
    version,
    about = "FrostGate Forge: governed, sandboxed cyber-training labs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    endpoint: cmd::client::Endpoint,
}

#[derive(Subcommand)]
enum Command {
    /// Bring the whole platform up on this machine (embedded mode, spec ports)
    Up(cmd::up::UpArgs),
    #[command(flatten)]
    Client(cmd::client::ClientCommand),
    /// Issue local access tokens
    #[command(subcommand)]
    Token(forge_auth::cli::TokenCommand),
    /// Billing usage reports
    #[command(subcommand)]
    Billing(forge_services::billing::cli::BillingCommand),
    /// Run a standalone playbook against a running lab
    #[command(subcommand)]
    Playbook(cmd::playbook::PlaybookCommand),
    /// Author, inspect and test scenario templates
    #[command(subcommand)]
    Template(cmd::template::TemplateCommand),
    /// Build and list the local lab images
    #[command(subcommand)]
    Images(forge_runtime::cli::ImagesCommand),
    /// Operate on labs present on this host
    #[command(subcommand)]
    Scenarios(cmd::scenarios::ScenariosCommand),
    /// Manage the signing keys (verdict and audit)
    Keys {
        #[command(flatten)]
        dir: forge_evidence::cli::DataDirArg,
        #[command(subcommand)]
        cmd: forge_evidence::cli::KeysCommand,
    },
    /// Verify evidence bundles offline
    Bundle {
        #[command(flatten)]
        dir: forge_evidence::cli::DataDirArg,
        #[command(subcommand)]
        cmd: forge_evidence::cli::BundleCommand,
    },
    /// Evaluate and test the Rego policy gates
    #[command(subcommand)]
    Policy(forge_policy::cli::PolicyCommand),
    /// Run one service of the platform on its own (distributed mode)
    #[command(subcommand)]
    Serve(cmd::serve::ServeCommand),
    /// Verify the tamper-evident audit log
    Audit {
        #[command(flatten)]
        dir: forge_evidence::cli::DataDirArg,
        #[command(subcommand)]
        cmd: forge_evidence::cli::AuditCommand,
    },
}

fn main() -> ExitCode {
    // A CLI piped into `head` should end quietly, as Unix tools do, not panic on EPIPE.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(dispatch(cli.command, cli.endpoint));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn code(c: i32) -> u8 {
    u8::try_from(c.clamp(0, 255)).unwrap_or(1)
}

async fn dispatch(command: Command, endpoint: cmd::client::Endpoint) -> anyhow::Result<u8> {
    let mut out = std::io::stdout();
    match command {
        Command::Up(a) => cmd::up::run(a).await,
        Command::Client(c) => cmd::client::run(endpoint, c).await,
        Command::Token(c) => forge_auth::cli::run(c).map(code),
        Command::Billing(c) => forge_services::billing::cli::run_to(c, &mut out)
            .await
            .map(code),
        Command::Playbook(c) => cmd::playbook::run(c).await,
        Command::Template(c) => cmd::template::run(c).await,
        Command::Images(c) => forge_runtime::cli::run_images(c).await.map(code),
        Command::Scenarios(c) => cmd::scenarios::run(c).await,
        Command::Policy(c) => forge_policy::cli::run(c).map(code),
        Command::Serve(c) => cmd::serve::run(c).await,
        Command::Keys { dir, cmd } => {
            forge_evidence::cli::run_keys(&dir.data_dir, cmd, &mut out).map(code)
        }
        Command::Bundle { dir, cmd } => {
            forge_evidence::cli::run_bundle(&dir.data_dir, cmd, &mut out)
                .await
                .map(code)
        }
        Command::Audit { dir, cmd } => {
            forge_evidence::cli::run_audit(&dir.data_dir, cmd, &mut out).map(code)
        }
    }
}
