//! `forge template new|validate|test|list`: what a template author runs before anything else.
//! `new` scaffolds a starter lab that validates and passes `test` as written.
//! `test` proves a template solvable on the local Docker Engine: launch, check unsolved, run
//! the solution, check solved, tear down; a lab's agents act meanwhile, under the action gate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use clap::{Subcommand, ValueEnum};
use forge_catalog::Catalog;
use forge_core::ScenarioId;
use forge_core::template::{Diagnostic, TemplateErrors, load};
use forge_runtime::DockerRuntime;
use forge_runtime::template_test::test_template_with;
use serde::Serialize;

use crate::config::TemplateDirArg;

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Track {
    Netplus,
    Ccna,
    Cissp,
}

impl Track {
    fn as_str(self) -> &'static str {
        match self {
            Track::Netplus => "netplus",
            Track::Ccna => "ccna",
            Track::Cissp => "cissp",
        }
    }
}

/// The starter lab `forge template new` writes (placeholders `{{NAME}}`, `{{TRACK}}`,
/// `{{FILE}}`).
const SCAFFOLD: &str = include_str!("template_scaffold.yaml");

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// Scaffold a lab: a commented starter template for TRACK that validates and passes
    /// `forge template test` as written
    New {
        #[arg(value_enum)]
        track: Track,
        /// The lab's metadata.name: lowercase letters, digits and dashes, at most 63
        name: String,
        /// Where to write it (default: NAME.yaml; `-` for stdout); an existing file is kept
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Validate template files; exit 0 when every file is valid, 1 otherwise
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Prove templates solvable: launch, check unsolved, run the solution, check solved;
    /// exit 0 when every template passes
    Test {
        /// Template files, or directories of *.yaml / *.yml files
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The lab images the templates use are built first when missing
        #[command(flatten)]
        images: crate::cmd::images::CatalogArgs,
    },
    /// List the lab catalog (bundled templates plus TEMPLATE_DIR)
    List {
        #[command(flatten)]
        templates: TemplateDirArg,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Serialize)]
struct FileReport {
    file: String,
    valid: bool,
    name: Option<String>,
    errors: Vec<Diagnostic>,
}

pub async fn run(cmd: TemplateCommand) -> anyhow::Result<u8> {
    match cmd {
        TemplateCommand::New {
            track,
            name,
            output,
        } => new(track, &name, output),
        TemplateCommand::Validate { paths, format } => Ok(validate(&paths, format)),
        TemplateCommand::Test { paths, images } => test(&paths, &images).await,
        TemplateCommand::List { templates, format } => list(templates.template_dir, format),
    }
}

/// The scaffold for `track` named `name`, `file` being where it will live (for its comment).
fn scaffold(track: Track, name: &str, file: &str) -> anyhow::Result<String> {
    ensure!(
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "invalid lab name `{name}`: use lowercase letters, digits and dashes, at most 63 characters"
    );
    let text = SCAFFOLD
        .replace("{{NAME}}", name)
        .replace("{{TRACK}}", track.as_str())
        .replace("{{FILE}}", file);
    // The scaffold promises a valid template: prove it before writing anything.
    load(file, &text).map_err(|e| anyhow::anyhow!("internal error: scaffold is invalid:\n{e}"))?;
    Ok(text)
}

fn new(track: Track, name: &str, output: Option<PathBuf>) -> anyhow::Result<u8> {
    let path = output.unwrap_or_else(|| PathBuf::from(format!("{name}.yaml")));
    if path.as_os_str() == "-" {
        print!("{}", scaffold(track, name, &format!("{name}.yaml"))?);
        return Ok(0);
    }
    let file = path.display().to_string();
    let text = scaffold(track, name, &file)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot create {file} (an existing file is never replaced)"))?;
    std::io::Write::write_all(&mut f, text.as_bytes())
        .with_context(|| format!("cannot write {file}"))?;
    println!("wrote {file} ({} lab {name})", track.as_str());
    println!(
        "next: edit it, then `forge template validate {file}` and `forge template test {file}`"
    );
    Ok(0)
}

fn validate(paths: &[PathBuf], format: Format) -> u8 {
    let reports: Vec<FileReport> = paths.iter().map(|p| validate_one(p)).collect();
    let ok = reports.iter().all(|r| r.valid);
    match format {
        Format::Json => {
            let out = serde_json::json!({ "valid": ok, "files": reports });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Text => {
            for r in &reports {
                if r.valid {
                    println!("ok    {} ({})", r.file, r.name.as_deref().unwrap_or(""));
                } else {
                    let errors = TemplateErrors::new(r.file.clone(), r.errors.clone());
                    eprintln!("{errors}");
                    println!(
                        "FAIL  {} ({} error{})",
                        r.file,
                        r.errors.len(),
                        if r.errors.len() == 1 { "" } else { "s" }
                    );
                }
            }
        }
    }
    if ok { 0 } else { 1 }
}

fn validate_one(path: &Path) -> FileReport {
    let file = path.display().to_string();
    let text = match forge_catalog::read_yaml_file(path) {
        Ok(t) => t,
        Err(e) => {
            return FileReport {
                file,
                valid: false,
                name: None,
                errors: e.errors,
            };
        }
    };
    match load(&file, &text) {
        Ok(t) => FileReport {
            file,
            valid: true,
            name: Some(t.metadata.name),
            errors: vec![],
        },
        Err(e) => FileReport {
            file,
            valid: false,
            name: None,
            errors: e.errors,
        },
    }
}

fn list(dir: Option<PathBuf>, format: Format) -> anyhow::Result<u8> {
    let catalog = Catalog::load(dir.as_deref())?;
    let rows = catalog.summaries();
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => {
            println!("{:<30} {:<8} {:<13} DESCRIPTION", "NAME", "TRACK", "TIER");
            for r in rows {
                let name = if r.default {
                    format!("{} *", r.name)
                } else {
                    r.name
                };
                println!(
                    "{:<30} {:<8} {:<13} {}",
                    name, r.track, r.tier, r.description
                );
            }
            println!("\n* the track's default template");
        }
    }
    Ok(0)
}

async fn test(paths: &[PathBuf], images: &crate::cmd::images::CatalogArgs) -> anyhow::Result<u8> {
    let files = expand(paths)?;
    let rt = DockerRuntime::connect()
        .await
        .context("connecting to the Docker Engine")?;
    let mut failed = 0;
    let mut templates = Vec::new();
    for file in &files {
        let name = file.display().to_string();
        let loaded = forge_catalog::read_yaml_file(file).and_then(|text| load(&name, &text));
        match loaded {
            Ok(t) => templates.push((name, t)),
            Err(e) => {
                println!("template {name}\nresult: FAIL: invalid template:\n{e}\n");
                failed += 1;
            }
        }
    }
    let mut refs: Vec<&str> = templates
        .iter()
        .flat_map(|(_, t)| t.spec.assets.containers.iter().map(|c| c.image.as_str()))
        .collect();
    refs.sort_unstable();
    refs.dedup();
    let catalog = crate::cmd::images::catalog(images)?;
    rt.ensure_images(&catalog, &refs, false)
        .await
        .context("building the lab images the templates use")?;
    // The labs' agents act as on the platform: the same runner, under the bundled action
    // gate (its decisions are not audited anywhere: a template test is an author's dry run).
    let rt = std::sync::Arc::new(rt);
    let policy = forge_policy::EmbeddedEngine::builder()
        .audit(
            std::sync::Arc::new(forge_core::audit::NullAuditSink),
            "forge-cli",
        )
        .build()
        .context("loading the bundled policies")?;
    let agents = forge_lifecycle::agents::Agents::new(
        rt.clone(),
        std::sync::Arc::new(policy),
        std::sync::Arc::new(forge_core::audit::NullAuditSink),
    );
    for (name, t) in &templates {
        let report = test_template_with(
            rt.as_ref(),
            ScenarioId::generate(),
            name,
            t,
            &BTreeMap::new(),
            Some(&agents),
        )
        .await;
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
    ensure!(
        !out.is_empty(),
        "no template files found in the given directories"
    );
    Ok(out)
}

fn is_yaml(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaffold_is_a_valid_template_of_each_track() {
        for track in [Track::Netplus, Track::Ccna, Track::Cissp] {
            let text = scaffold(track, "my-first-lab", "my-first-lab.yaml").unwrap();
            let t = load("my-first-lab.yaml", &text).unwrap();
            assert_eq!(t.metadata.name, "my-first-lab");
            assert!(
                t.metadata
                    .labels
                    .iter()
                    .any(|l| l == &format!("class:{}", track.as_str())),
                "{:?}",
                t.metadata.labels
            );
            assert!(!t.spec.solution.is_empty());
            assert!(!text.contains("{{"), "a placeholder is left: {text}");
        }
    }

    #[test]
    fn the_scaffold_refuses_names_the_dsl_refuses() {
        for bad in ["", "My-Lab", "lab_1", "lab.yaml", &"a".repeat(64)] {
            let e = scaffold(Track::Ccna, bad, "x.yaml").unwrap_err();
            assert!(e.to_string().contains("invalid lab name"), "{bad}: {e}");
        }
    }

    #[test]
    fn new_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.yaml");
        std::fs::write(&path, "mine").unwrap();
        let e = new(Track::Cissp, "lab", Some(path.clone())).unwrap_err();
        assert!(format!("{e:#}").contains("never replaced"), "{e:#}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
        let fresh = dir.path().join("fresh.yaml");
        assert_eq!(new(Track::Cissp, "fresh", Some(fresh.clone())).unwrap(), 0);
        assert!(
            std::fs::read_to_string(&fresh)
                .unwrap()
                .contains("class:cissp")
        );
    }
}
