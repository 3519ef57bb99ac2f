//! `forge scenarios cleanup|list`: the runbook's view of labs on this host, straight from the
//! engine and the fabric namespaces (works while the platform is down).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ScenariosCommand {
    /// Remove labs (containers and fabric namespaces) older than an age, e.g. --older-than 2h
    Cleanup(forge_runtime::cli::CleanupArgs),
    /// List the labs present on this host
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: ScenariosCommand) -> anyhow::Result<u8> {
    match cmd {
        ScenariosCommand::Cleanup(args) => {
            let c = forge_runtime::cli::run_scenarios_cleanup(args).await?;
            Ok(u8::try_from(c.clamp(0, 255)).unwrap_or(1))
        }
        ScenariosCommand::List { json } => {
            let labs = forge_runtime::cli::list_labs().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&labs)?);
                return Ok(0);
            }
            println!(
                "{:<18} {:<26} {:<8} {:<20} CONTAINERS",
                "SCENARIO", "TEMPLATE", "TENANT", "CREATED"
            );
            for l in labs {
                let created = l
                    .created_at
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                let containers: Vec<String> = l
                    .containers
                    .iter()
                    .map(|c| format!("{}({})", c.name, c.state))
                    .collect();
                println!(
                    "{:<18} {:<26} {:<8} {:<20} {}",
                    l.scenario_id,
                    l.template.unwrap_or_default(),
                    l.tenant_id.unwrap_or_default(),
                    created,
                    containers.join(" ")
                );
            }
            Ok(0)
        }
    }
}
