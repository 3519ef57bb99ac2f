//! Ensuring images: in dependency order, build what is missing or stale, tag aliases, drop
//! what was replaced; and the status of every image for `forge images list`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use bollard::Docker;
use futures::StreamExt;

use super::engine::{self, Build, Present};
use super::{
    BuildEvent, BuildOptions, BuildOutcome, BuildProgress, DIGEST_LABEL, ImageCatalog, ImageDef,
    ImageKind, ImageState, ImageStatus, KIND_LABEL, SYSCTLS_LABEL, base, busybox, dockerfile,
    mirror,
};
use crate::error::RuntimeError;
use crate::labels;

/// Images of one level built at once: builds are mostly waiting for the mirror, but the
/// machines we run on have few cores.
const PARALLEL_BUILDS: usize = 2;

/// What an image should be: its digest, and what a build needs that computing the digest
/// already produced.
struct Want {
    digest: String,
    /// The build context (busybox and Dockerfile images).
    context: Option<Vec<u8>>,
    /// The mirror (bases).
    mirror: Option<String>,
}

/// Builds every image in `references`, and the catalog images they are built on, that is
/// missing or out of date (the requested ones regardless with `force`).
pub(crate) async fn ensure_images(
    docker: &Docker,
    catalog: &ImageCatalog,
    references: &[&str],
    opts: &BuildOptions,
) -> Result<Vec<(String, BuildOutcome)>, RuntimeError> {
    let levels = catalog.build_order(references)?;
    let requested: HashSet<&str> = references
        .iter()
        .filter_map(|r| catalog.get(r))
        .map(|d| d.reference.as_str())
        .collect();
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut outcomes = Vec::new();
    let mut replaced = Vec::new();
    for level in levels {
        let ids_now = &ids;
        let jobs = level.into_iter().map(|def| {
            let force = opts.force && requested.contains(def.reference.as_str());
            ensure_one(docker, catalog, def, ids_now, force, opts)
        });
        let results: Vec<Result<Done, RuntimeError>> = futures::stream::iter(jobs)
            .buffered(PARALLEL_BUILDS)
            .collect()
            .await;
        let mut failed = None;
        for r in results {
            match r {
                Ok(done) => {
                    outcomes.push((done.reference.clone(), done.outcome));
                    replaced.extend(done.replaced);
                    ids.insert(done.reference, done.id);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    // Dependents before what they were built on, so each old image is untagged and childless
    // by the time its removal is tried.
    for id in replaced.iter().rev() {
        engine::remove_replaced(docker, id).await;
    }
    Ok(outcomes)
}

struct Done {
    reference: String,
    id: String,
    outcome: BuildOutcome,
    /// The id the reference had before a rebuild.
    replaced: Option<String>,
}

async fn ensure_one(
    docker: &Docker,
    catalog: &ImageCatalog,
    def: &ImageDef,
    ids: &HashMap<String, String>,
    force: bool,
    opts: &BuildOptions,
) -> Result<Done, RuntimeError> {
    let image = def.reference.as_str();
    let progress = opts.progress.as_ref();
    let want = match want(docker, catalog, def, ids).await {
        Ok(Some(w)) => w,
        Ok(None) => {
            return Err(RuntimeError::ImageBuild {
                image: image.to_owned(),
                message: "an image it is built on was not built".into(),
            });
        }
        Err(e) => {
            progress.event(BuildEvent::Failed {
                image,
                error: &e.to_string(),
            });
            return Err(e);
        }
    };
    let current = engine::inspect(docker, image).await?;
    let reason = match &current {
        None => "missing",
        Some(_) if force => "forced",
        Some(p) if p.digest != want.digest => "stale",
        Some(p) => {
            tag_aliases(docker, def, &p.id).await?;
            progress.event(BuildEvent::UpToDate { image });
            return Ok(Done {
                reference: def.reference.clone(),
                id: p.id.clone(),
                outcome: BuildOutcome::UpToDate,
                replaced: None,
            });
        }
    };
    progress.event(BuildEvent::Started {
        image,
        kind: def.kind.name(),
        reason,
    });
    let started = Instant::now();
    let built = heartbeat(
        tokio::time::timeout(opts.timeout, build(docker, catalog, def, want, force, opts)),
        image,
        progress,
        opts.heartbeat,
    )
    .await
    .unwrap_or_else(|_| {
        Err(RuntimeError::ImageBuildTimeout {
            image: image.to_owned(),
            after: opts.timeout,
        })
    });
    let id = match built {
        Ok(id) => id,
        Err(e) => {
            progress.event(BuildEvent::Failed {
                image,
                error: &e.to_string(),
            });
            return Err(e);
        }
    };
    tag_aliases(docker, def, &id).await?;
    progress.event(BuildEvent::Built {
        image,
        elapsed: started.elapsed(),
    });
    Ok(Done {
        reference: def.reference.clone(),
        replaced: current.map(|p| p.id).filter(|old| *old != id),
        id,
        outcome: BuildOutcome::Built,
    })
}

/// Runs `fut`, reporting [`BuildEvent::Waiting`] every `every` until it is done.
async fn heartbeat<F: Future>(
    fut: F,
    image: &str,
    progress: &dyn BuildProgress,
    every: Duration,
) -> F::Output {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval_at(start + every, every);
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => progress.event(BuildEvent::Waiting { image, elapsed: start.elapsed() }),
        }
    }
}

/// The image's expected digest. `None` when a catalog image it is built on has no id in
/// `ids` (it is not built, or not current).
async fn want(
    docker: &Docker,
    catalog: &ImageCatalog,
    def: &ImageDef,
    ids: &HashMap<String, String>,
) -> Result<Option<Want>, RuntimeError> {
    Ok(Some(match &def.kind {
        ImageKind::Busybox(spec) => {
            let (tar, digest) = busybox::build_context(def, spec, &catalog.busybox)?;
            Want {
                digest,
                context: Some(tar),
                mirror: None,
            }
        }
        ImageKind::Dockerfile(spec) => {
            let mut parents = Vec::new();
            for from in &spec.from {
                let id = match catalog.get(from) {
                    Some(p) => match ids.get(&p.reference) {
                        Some(id) => id.clone(),
                        None => return Ok(None),
                    },
                    // Not ours: it must be in the engine already (nothing can be pulled).
                    None => engine::inspect(docker, from)
                        .await?
                        .map(|p| p.id)
                        .ok_or_else(|| RuntimeError::ImageBuild {
                            image: def.reference.clone(),
                            message: format!(
                                "FROM {from}: not in the image catalog and not in the engine \
                                 (no registry is reachable)"
                            ),
                        })?,
                };
                parents.push((from.clone(), id));
            }
            let (tar, context_digest) = dockerfile::build_context(def)?;
            Want {
                digest: dockerfile::digest(&context_digest, &parents),
                context: Some(tar),
                mirror: None,
            }
        }
        ImageKind::Base(recipe) => {
            let mirror = match &catalog.mirror {
                Some(m) => m.clone(),
                None => mirror::detect_mirror(&catalog.apt_dir, &recipe.suite)?,
            };
            Want {
                digest: base::recipe_digest(def, recipe, &mirror)?,
                context: None,
                mirror: Some(mirror),
            }
        }
    }))
}

/// Builds `def` as `want` describes; the new image's id.
async fn build(
    docker: &Docker,
    catalog: &ImageCatalog,
    def: &ImageDef,
    want: Want,
    force: bool,
    opts: &BuildOptions,
) -> Result<String, RuntimeError> {
    let mut image_labels = HashMap::from([
        (labels::IMAGE.to_owned(), "1".to_owned()),
        (DIGEST_LABEL.to_owned(), want.digest.clone()),
        (KIND_LABEL.to_owned(), def.kind.name().to_owned()),
    ]);
    let progress = opts.progress.as_ref();
    match &def.kind {
        ImageKind::Busybox(spec) => {
            image_labels.insert(SYSCTLS_LABEL.to_owned(), spec.sysctls.join(","));
            let b = Build {
                reference: &def.reference,
                context: want.context.unwrap_or_default(),
                labels: image_labels,
                nocache: false,
            };
            engine::build(docker, b, progress).await
        }
        ImageKind::Dockerfile(_) => {
            let b = Build {
                reference: &def.reference,
                context: want.context.unwrap_or_default(),
                labels: image_labels,
                nocache: force,
            };
            engine::build(docker, b, progress).await
        }
        ImageKind::Base(recipe) => {
            let mirror = want.mirror.unwrap_or_default();
            let b = base::BaseBuild {
                def,
                recipe,
                mirror: &mirror,
                digest: &want.digest,
                work_dir: &catalog.work_dir,
                timeout: opts.timeout,
            };
            base::build(docker, b, progress).await
        }
    }
}

/// Points every alias of `def` at `id`.
async fn tag_aliases(docker: &Docker, def: &ImageDef, id: &str) -> Result<(), RuntimeError> {
    for alias in &def.aliases {
        let current = engine::inspect(docker, alias).await?;
        if current.as_ref().map(|p| p.id.as_str()) != Some(id) {
            engine::tag(docker, id, alias).await?;
        }
    }
    Ok(())
}

/// Every catalog image with its state and size, in build order.
pub(crate) async fn image_status(
    docker: &Docker,
    catalog: &ImageCatalog,
) -> Result<Vec<ImageStatus>, RuntimeError> {
    let all: Vec<&str> = catalog
        .images
        .iter()
        .map(|i| i.reference.as_str())
        .collect();
    let mut current: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for def in catalog.build_order(&all)?.into_iter().flatten() {
        let present: Option<Present> = engine::inspect(docker, &def.reference).await?;
        let state = match &present {
            None => ImageState::Missing,
            Some(p) => match want(docker, catalog, def, &current).await {
                Ok(Some(w)) if w.digest == p.digest => ImageState::Built,
                Ok(_) => ImageState::Stale,
                Err(e) => ImageState::Unknown(e.to_string()),
            },
        };
        if let (ImageState::Built, Some(p)) = (&state, &present) {
            current.insert(def.reference.clone(), p.id.clone());
        }
        out.push(ImageStatus {
            reference: def.reference.clone(),
            aliases: def.aliases.clone(),
            kind: def.kind.name(),
            description: def.description.clone(),
            state,
            size: present.and_then(|p| p.size),
        });
    }
    Ok(out)
}
