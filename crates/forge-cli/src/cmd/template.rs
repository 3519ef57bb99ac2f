//! `forge template validate|list`: what a template author runs before anything else.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use forge_catalog::Catalog;
use forge_core::template::{Diagnostic, TemplateErrors, load};
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// Validate template files; exit 0 when every file is valid, 1 otherwise
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Prove templates solvable: launch, check unsolved, run the solution, check solved
    Test(forge_runtime::cli::TemplateTestArgs),
    /// List the lab catalog (bundled templates plus TEMPLATE_DIR)
    List {
        #[arg(long, env = "TEMPLATE_DIR")]
        template_dir: Option<PathBuf>,
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
        TemplateCommand::Validate { paths, format } => Ok(validate(&paths, format)),
        TemplateCommand::Test(args) => {
            let c = forge_runtime::cli::run_template_test(args).await?;
            Ok(u8::try_from(c.clamp(0, 255)).unwrap_or(1))
        }
        TemplateCommand::List {
            template_dir,
            format,
        } => list(template_dir, format),
    }
}

fn validate(paths: &[PathBuf], format: Format) -> u8 {
    let reports: Vec<FileReport> = paths.iter().map(validate_one).collect();
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

fn validate_one(path: &PathBuf) -> FileReport {
    let file = path.display().to_string();
    let text = match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => return failed(file, Diagnostic::new("", "file is not valid UTF-8")),
        },
        Err(e) => return failed(file, Diagnostic::new("", format!("cannot read file: {e}"))),
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

fn failed(file: String, d: Diagnostic) -> FileReport {
    FileReport {
        file,
        valid: false,
        name: None,
        errors: vec![d],
    }
}

fn list(dir: Option<PathBuf>, format: Format) -> anyhow::Result<u8> {
    let catalog = Catalog::load(dir.as_deref())?;
    let rows = catalog.summaries();
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => {
            println!("{:<28} {:<8} {:<13} DESCRIPTION", "NAME", "TRACK", "TIER");
            for r in rows {
                let name = if r.default {
                    format!("{} *", r.name)
                } else {
                    r.name
                };
                println!(
                    "{:<28} {:<8} {:<13} {}",
                    name, r.track, r.tier, r.description
                );
            }
            println!("\n* the track's default template");
        }
    }
    Ok(0)
}
