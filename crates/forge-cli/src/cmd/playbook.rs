//! `forge playbook run FILE --scenario ID`: performs a standalone playbook (the spec's
//! `playbook:` format) in a running lab on this host, through the same runtime and evaluator
//! the platform uses, and prints a per-step verdict.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use forge_core::ScenarioId;
use forge_runtime::DockerRuntime;

#[derive(Subcommand)]
pub enum PlaybookCommand {
    /// Run a playbook file against a running lab
    Run {
        file: PathBuf,
        #[arg(long)]
        scenario: ScenarioId,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: PlaybookCommand) -> anyhow::Result<u8> {
    let PlaybookCommand::Run {
        file,
        scenario,
        json,
    } = cmd;
    let text = forge_catalog::read_yaml_file(&file)?;
    let playbook = forge_core::playbook::parse_playbook(&file.display().to_string(), &text)?;
    let rt = DockerRuntime::connect()
        .await
        .context("connecting to the Docker Engine")?;
    let report = forge_lifecycle::runner::run_playbook(&rt, &scenario, &playbook).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (i, s) in report.steps.iter().enumerate() {
            let mark = if s.passed { "PASS" } else { "fail" };
            println!("{i:>3}  {mark}  {:<50} {}", s.step.describe(), s.message);
        }
        let passed = report.steps.iter().filter(|s| s.passed).count();
        println!("{passed} passed, {} failed", report.steps.len() - passed);
    }
    Ok(if report.passed { 0 } else { 1 })
}
