//! CLI pieces for the `forge` binary (the lead wires them in): `forge images build [--force]`,
//! `forge scenarios cleanup --older-than 2h`, `forge template test PATH...`. Each `run_*`
//! returns the process exit code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::images::{BuildOutcome, ImageCatalog};
use crate::template_test::test_template;
use crate::{DockerRuntime, Runtime};

/// `forge images …`
#[derive(Debug, Clone, Subcommand)]
pub enum ImagesCommand {
    /// Build the lab images (only missing or changed ones unless --force).
    Build(ImagesBuildArgs),
    /// List the images of the catalog.
    List,
}

#[derive(Debug, Clone, Args)]
pub struct ImagesBuildArgs {
    /// Rebuild even when the image is present and up to date.
    #[arg(long)]
    pub force: bool,
    /// Only these images (`forge/web:1`); default: the whole catalog.
    pub images: Vec<String>,
}

/// `forge scenarios …` (runtime-side subcommands).
#[derive(Debug, Clone, Subcommand)]
pub enum ScenariosCommand {
    /// Remove labs (containers + fabric namespaces) older than a given age.
    Cleanup(CleanupArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CleanupArgs {
    /// Age such as 30m, 2h, 1d (also s, w).
    #[arg(long, value_parser = parse_age, default_value = "2h")]
    pub older_than: Duration,
}

/// `forge template test PATH...`
#[derive(Debug, Clone, Args)]
pub struct TemplateTestArgs {
    /// Template files, or directories of *.yaml / *.yml files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Parses `30m`, `2h`, `1d`, `45s`, `1w` (a bare number is seconds).
pub fn parse_age(s: &str) -> Result<Duration, String> {
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
    Ok(Duration::from_secs(n * mult))
}

pub async fn run_images(cmd: ImagesCommand) -> anyhow::Result<i32> {
    match cmd {
        ImagesCommand::Build(a) => run_images_build(a).await,
        ImagesCommand::List => {
            let catalog = ImageCatalog::discover()?;
            for i in &catalog.images {
                println!("{:<20} {}", i.reference, i.description);
            }
            Ok(0)
        }
    }
}

pub async fn run_images_build(args: ImagesBuildArgs) -> anyhow::Result<i32> {
    let catalog = ImageCatalog::discover()?;
    let rt = DockerRuntime::connect().await?;
    let wanted: Vec<&str> = if args.images.is_empty() {
        catalog
            .images
            .iter()
            .map(|i| i.reference.as_str())
            .collect()
    } else {
        args.images.iter().map(String::as_str).collect()
    };
    let done = crate::images::ensure_images(rt.docker(), &catalog, &wanted, args.force).await?;
    for (image, outcome) in done {
        let what = match outcome {
            BuildOutcome::Built => "built",
            BuildOutcome::UpToDate => "up to date",
        };
        println!("{image}: {what}");
    }
    Ok(0)
}

pub async fn run_scenarios_cleanup(args: CleanupArgs) -> anyhow::Result<i32> {
    let rt = DockerRuntime::connect().await?;
    let report = rt.cleanup_older_than(args.older_than).await?;
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

pub async fn run_template_test(args: TemplateTestArgs) -> anyhow::Result<i32> {
    let files = expand(&args.paths)?;
    let rt = DockerRuntime::connect().await?;
    let mut failed = 0;
    for file in &files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {name}"))?;
        let t = match forge_core::template::load(&name, &text) {
            Ok(t) => t,
            Err(e) => {
                println!("template {name}\nresult: FAIL: invalid template:\n{e}\n");
                failed += 1;
                continue;
            }
        };
        let report = test_template(&rt, &name, &t, &BTreeMap::new()).await;
        println!("{}", report.render());
        if !report.passed() {
            failed += 1;
        }
    }
    println!(
        "{} of {} templates passed",
        files.len() - failed,
        files.len()
    );
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Files as given; directories expand to their `*.yaml`/`*.yml` files, sorted.
fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| is_yaml(f))
                .collect();
            in_dir.sort();
            out.extend(in_dir);
        } else {
            out.push(p.clone());
        }
    }
    anyhow::ensure!(!out.is_empty(), "no template files found");
    Ok(out)
}

fn is_yaml(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// Re-exported so the binary can offer `forge scenarios list` with the runtime's view.
pub async fn list_labs() -> anyhow::Result<Vec<crate::LabSummary>> {
    let rt = DockerRuntime::connect().await?;
    Ok(rt.list_labs().await?)
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
