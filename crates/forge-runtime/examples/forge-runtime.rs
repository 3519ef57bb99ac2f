//! Stand-alone front end for the runtime's CLI pieces until the `forge` binary wires them in:
//! `cargo run -p forge-runtime --example forge-runtime -- images build [--force]`,
//! `... -- template test PATH...`, `... -- scenarios cleanup --older-than 2h`, `... -- labs`.

use clap::{Parser, Subcommand};
use forge_runtime::cli::{self, ImagesCommand, ScenariosCommand, TemplateTestArgs};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(subcommand)]
    Images(ImagesCommand),
    #[command(subcommand)]
    Scenarios(ScenariosCommand),
    #[command(subcommand)]
    Template(TemplateCmd),
    /// List labs on this host.
    Labs,
}

#[derive(Subcommand)]
enum TemplateCmd {
    Test(TemplateTestArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let code = match Cli::parse().cmd {
        Cmd::Images(c) => cli::run_images(c).await?,
        Cmd::Scenarios(ScenariosCommand::Cleanup(a)) => cli::run_scenarios_cleanup(a).await?,
        Cmd::Template(TemplateCmd::Test(a)) => cli::run_template_test(a).await?,
        Cmd::Labs => {
            for lab in cli::list_labs().await? {
                println!("{}", serde_json::to_string(&lab)?);
            }
            0
        }
    };
    std::process::exit(code);
}
