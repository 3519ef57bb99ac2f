//! `forge images build|list`: the local lab images (`FROM scratch` + static busybox), built
//! through the Docker Engine from the `images/` catalog. Where the catalog and busybox are is
//! decided here (flags, their environment variables, then the nearest `images/` above the
//! current directory); the runtime library only takes the answers.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use forge_runtime::DockerRuntime;
use forge_runtime::images::{BuildOutcome, DEFAULT_BUSYBOX, ImageCatalog, find_images_dir};

/// `forge images …`
#[derive(Debug, Clone, Subcommand)]
pub enum ImagesCommand {
    /// Build the lab images (only missing or changed ones unless --force)
    Build(ImagesBuildArgs),
    /// List the images of the catalog
    List(CatalogArgs),
}

/// Where the image catalog is, and what it is built from.
#[derive(Debug, Clone, Args)]
pub struct CatalogArgs {
    /// The images directory; default: the nearest `images/` above the current directory,
    /// else the source tree's
    #[arg(long, env = "FORGE_IMAGES_DIR")]
    pub images_dir: Option<PathBuf>,
    /// The statically linked busybox copied into every image
    #[arg(long, env = "FORGE_BUSYBOX", default_value = DEFAULT_BUSYBOX)]
    pub busybox: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ImagesBuildArgs {
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// Rebuild even when the image is present and up to date
    #[arg(long)]
    pub force: bool,
    /// Only these images (`forge/web:1`); default: the whole catalog
    pub images: Vec<String>,
}

pub async fn run(cmd: ImagesCommand) -> anyhow::Result<u8> {
    match cmd {
        ImagesCommand::Build(args) => build(args).await,
        ImagesCommand::List(args) => {
            let catalog = catalog(&args)?;
            for i in &catalog.images {
                println!("{:<20} {}", i.reference, i.description);
            }
            Ok(0)
        }
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
    Ok(ImageCatalog::discover(found.as_deref())?.with_busybox(&args.busybox))
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
    let done = rt.ensure_images(&catalog, &wanted, args.force).await?;
    for (image, outcome) in done {
        let what = match outcome {
            BuildOutcome::Built => "built",
            BuildOutcome::UpToDate => "up to date",
        };
        println!("{image}: {what}");
    }
    Ok(0)
}
