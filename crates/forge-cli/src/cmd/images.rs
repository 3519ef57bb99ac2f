//! `forge images build|list`: the local lab images (busybox, the debootstrapped Debian base,
//! and Dockerfile images on it), built through the Docker Engine from the `images/` catalog.
//! Where the catalog, the busybox and the Debian mirror are is decided here (flags, their
//! environment variables, then the nearest `images/` above the current directory, and the
//! mirror apt uses); the runtime library only takes the answers.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use forge_runtime::DockerRuntime;
use forge_runtime::images::{
    BuildEvent, BuildOptions, BuildOutcome, BuildProgress, DEFAULT_BUSYBOX, ImageCatalog,
    ImageState, ImageStatus, find_images_dir,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// `forge images …`
#[derive(Debug, Clone, Subcommand)]
pub enum ImagesCommand {
    /// Build the lab images (only missing or stale ones unless --force)
    Build(ImagesBuildArgs),
    /// List the images of the catalog: kind, built / stale / missing, size
    List(CatalogArgs),
}

/// Where the image catalog is, and what it is built from.
#[derive(Debug, Clone, Args)]
pub struct CatalogArgs {
    /// The images directory; default: the nearest `images/` above the current directory,
    /// else the source tree's
    #[arg(long, env = "FORGE_IMAGES_DIR")]
    pub images_dir: Option<PathBuf>,
    /// The statically linked busybox copied into every busybox image
    #[arg(long, env = "FORGE_BUSYBOX", default_value = DEFAULT_BUSYBOX)]
    pub busybox: PathBuf,
    /// The Debian mirror the base image is bootstrapped from; default: the one apt uses
    /// (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list)
    #[arg(long, env = "FORGE_DEBIAN_MIRROR")]
    pub debian_mirror: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ImagesBuildArgs {
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// Rebuild the named images (all without names) even when up to date, without the
    /// layer cache
    #[arg(long)]
    pub force: bool,
    /// Print every line of build output (apt, debootstrap), not only the steps
    #[arg(long, short)]
    pub verbose: bool,
    /// Give up on an image whose build takes longer
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Only these images (`forge/web:1`, or an alias) and what they are built on; default:
    /// the whole catalog
    pub images: Vec<String>,
}

pub async fn run(cmd: ImagesCommand) -> anyhow::Result<u8> {
    match cmd {
        ImagesCommand::Build(args) => build(args).await,
        ImagesCommand::List(args) => list(args).await,
    }
}

/// The catalog at `--images-dir`, else the nearest `images/` above the current directory,
/// else the source tree's.
pub fn catalog(args: &CatalogArgs) -> anyhow::Result<ImageCatalog> {
    let found = match &args.images_dir {
        Some(dir) => Some(dir.clone()),
        None => std::env::current_dir()
            .ok()
            .and_then(|here| find_images_dir(&here)),
    };
    Ok(ImageCatalog::discover(found.as_deref())?
        .with_busybox(&args.busybox)
        .with_mirror(args.debian_mirror.clone()))
}

async fn build(args: ImagesBuildArgs) -> anyhow::Result<u8> {
    let catalog = catalog(&args.catalog)?;
    let rt = DockerRuntime::connect()
        .await
        .context("connecting to the Docker Engine")?;
    let wanted: Vec<&str> = if args.images.is_empty() {
        catalog
            .images
            .iter()
            .map(|i| i.reference.as_str())
            .collect()
    } else {
        args.images.iter().map(String::as_str).collect()
    };
    let tty = std::io::stderr().is_terminal();
    let progress = Arc::new(Bars::new(tty, args.verbose));
    let opts = BuildOptions {
        force: args.force,
        progress: progress.clone(),
        timeout: args.timeout,
        ..Default::default()
    };
    let start = Instant::now();
    // On Ctrl-C the build is dropped, which kills debootstrap and removes its directory.
    let done = tokio::select! {
        done = rt.build_images(&catalog, &wanted, &opts) => done?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted");
            return Ok(130);
        }
    };
    let built = done
        .iter()
        .filter(|(_, o)| *o == BuildOutcome::Built)
        .count();
    if !tty {
        for (image, outcome) in &done {
            let what = match outcome {
                BuildOutcome::Built => "built",
                BuildOutcome::UpToDate => "up to date",
            };
            println!("{image}: {what}");
        }
    }
    eprintln!(
        "{built} built, {} up to date in {:.1}s",
        done.len() - built,
        start.elapsed().as_secs_f64()
    );
    Ok(0)
}

async fn list(args: CatalogArgs) -> anyhow::Result<u8> {
    let catalog = catalog(&args)?;
    let statuses = match DockerRuntime::connect().await {
        Ok(rt) => rt.image_status(&catalog).await?,
        Err(e) => {
            eprintln!("warning: {e}; showing the catalog without states");
            catalog
                .images
                .iter()
                .map(|i| ImageStatus {
                    reference: i.reference.clone(),
                    aliases: i.aliases.clone(),
                    kind: i.kind.name(),
                    description: i.description.clone(),
                    state: ImageState::Unknown("no engine".into()),
                    size: None,
                })
                .collect()
        }
    };
    println!(
        "{:<28} {:<10} {:<8} {:>9}  DESCRIPTION",
        "IMAGE", "KIND", "STATE", "SIZE"
    );
    for s in statuses {
        let (state, note) = match s.state {
            ImageState::Built => ("built", None),
            ImageState::Stale => ("stale", None),
            ImageState::Missing => ("missing", None),
            ImageState::Unknown(why) => ("unknown", Some(why)),
        };
        let size = s.size.map(human_size).unwrap_or_else(|| "-".into());
        let desc = match note {
            Some(why) => format!("{} ({why})", s.description),
            None => s.description,
        };
        println!(
            "{:<28} {:<10} {state:<8} {size:>9}  {desc}",
            s.reference, s.kind
        );
        for a in s.aliases {
            println!("  = {a}");
        }
    }
    Ok(0)
}

/// Bytes as `docker images` shows them (decimal units).
fn human_size(bytes: i64) -> String {
    let b = bytes as f64;
    match b {
        _ if b >= 1e9 => format!("{:.2}GB", b / 1e9),
        _ if b >= 1e6 => format!("{:.1}MB", b / 1e6),
        _ if b >= 1e3 => format!("{:.1}kB", b / 1e3),
        _ => format!("{bytes}B"),
    }
}

/// One line per image on a terminal (a spinner with the current step, then the result);
/// plain lines otherwise. `verbose` adds every line of build output.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    tty: bool,
    verbose: bool,
}

impl Bars {
    fn new(tty: bool, verbose: bool) -> Self {
        let target = if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            tty,
            verbose,
        }
    }

    fn bar(&self, image: &str) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.entry(image.to_owned())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:<28} {elapsed:>4} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(image.to_owned());
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .clone()
    }

    fn finish(&self, image: &str, message: String) {
        let bar = self.bar(image);
        bar.set_style(
            ProgressStyle::with_template("  {prefix:<28} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.finish_with_message(message);
    }

    fn line(&self, text: String) {
        if self.tty {
            self.multi.println(text).ok();
        } else {
            eprintln!("{text}");
        }
    }
}

impl BuildProgress for Bars {
    fn event(&self, event: BuildEvent<'_>) {
        match event {
            BuildEvent::UpToDate { image } => {
                if self.tty {
                    self.finish(image, "up to date".into());
                }
            }
            BuildEvent::Started {
                image,
                kind,
                reason,
            } => {
                if self.tty {
                    self.bar(image)
                        .set_message(format!("{reason}, building ({kind})"));
                } else {
                    self.line(format!("{image}: {reason}, building ({kind})"));
                }
            }
            BuildEvent::Step { image, line } => {
                if self.tty {
                    self.bar(image).set_message(line.to_owned());
                }
                if self.verbose || !self.tty {
                    self.line(format!("{image}: {line}"));
                }
            }
            BuildEvent::Output { image, line } => {
                if self.verbose {
                    self.line(format!("{image} | {line}"));
                }
            }
            BuildEvent::Waiting { image, elapsed } => {
                if !self.tty {
                    self.line(format!("{image}: still building ({}s)", elapsed.as_secs()));
                }
            }
            BuildEvent::Built { image, elapsed } => {
                let text = format!("built in {:.1}s", elapsed.as_secs_f64());
                if self.tty {
                    self.finish(image, text);
                } else {
                    self.line(format!("{image}: {text}"));
                }
            }
            BuildEvent::Failed { image, error } => {
                if self.tty {
                    let first = error.lines().next().unwrap_or(error).to_owned();
                    self.bar(image)
                        .abandon_with_message(format!("failed: {first}"));
                } else {
                    self.line(format!("{image}: failed"));
                }
            }
        }
    }
}
