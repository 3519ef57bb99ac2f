//! `forge scenarios cleanup|list`: the runbook's view of labs on this host, straight from the
//! engine and the fabric namespaces (works while the platform is down).

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use forge_runtime::{DockerRuntime, Runtime};

#[derive(Subcommand)]
pub enum ScenariosCommand {
    /// Remove labs (containers and fabric namespaces) older than an age, e.g. --older-than 2h,
    /// or every lab with a label, e.g. --label forge.host=cluster-a
    Cleanup {
        /// Age such as 30m, 2h, 1d (also s, w; a bare number is seconds) [default: 2h without
        /// --label]
        #[arg(long, value_parser = parse_age, value_name = "AGE")]
        older_than: Option<Duration>,
        /// Only labs with this label (`key=value` or `key`; repeat to require several)
        #[arg(long, value_name = "LABEL")]
        label: Vec<String>,
    },
    /// List the labs present on this host
    List {
        #[arg(long)]
        json: bool,
    },
}

/// Parses `30m`, `2h`, `1d`, `45s`, `1w` (a bare number is seconds).
fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid age `{s}`: expected a number followed by s, m, h, d or w"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        other => {
            return Err(format!(
                "invalid age unit `{other}` in `{s}`: use s, m, h, d or w"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

async fn docker() -> anyhow::Result<DockerRuntime> {
    DockerRuntime::connect()
        .await
        .context("connecting to the Docker Engine")
}

pub async fn run(cmd: ScenariosCommand) -> anyhow::Result<u8> {
    match cmd {
        ScenariosCommand::Cleanup { older_than, label } if !label.is_empty() => {
            let docker = docker().await?;
            let cutoff = older_than.and_then(|age| chrono::Duration::from_std(age).ok());
            let (mut removed, mut failed) = (0, 0);
            for lab in docker.list_labs().await? {
                let old_enough = match (cutoff, lab.created_at) {
                    (None, _) => true,
                    (Some(age), Some(created)) => chrono::Utc::now() - created >= age,
                    (Some(_), None) => false,
                };
                if !old_enough || !forge_runtime::labels_match(&lab.labels, &label) {
                    continue;
                }
                let Ok(id) = lab.scenario_id.parse() else {
                    continue;
                };
                match docker.teardown(&id).await {
                    Ok(_) => {
                        println!("removed {id}");
                        removed += 1;
                    }
                    Err(e) => {
                        eprintln!("error: {id}: {e}");
                        failed += 1;
                    }
                }
            }
            println!("{removed} removed");
            Ok(if failed == 0 { 0 } else { 1 })
        }
        ScenariosCommand::Cleanup { older_than, .. } => {
            let older_than = older_than.unwrap_or(Duration::from_secs(2 * 3600));
            let report = docker().await?.cleanup_older_than(older_than).await?;
            for id in &report.removed {
                println!("removed {id}");
            }
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            println!(
                "{} removed, {} kept",
                report.removed.len(),
                report.kept.len()
            );
            Ok(if report.errors.is_empty() { 0 } else { 1 })
        }
        ScenariosCommand::List { json } => {
            let labs = docker().await?.list_labs().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ages() {
        assert_eq!(parse_age("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_age("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_age("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_age("45").unwrap(), Duration::from_secs(45));
        assert!(parse_age("2x").unwrap_err().contains("unit"));
        assert!(parse_age("h").is_err());
    }
}
