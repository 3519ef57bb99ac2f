//! The engine calls of the image pipeline: build a context through `POST /build` (the classic
//! builder, which works on an engine with `--userns-remap`), and inspect, tag and remove
//! images.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptions, RemoveImageOptions, TagImageOptions};
use futures::StreamExt;

use super::{BuildEvent, BuildProgress, DIGEST_LABEL};
use crate::error::{RuntimeError, status_of};

/// What the engine has under a reference.
#[derive(Debug, Clone)]
pub(super) struct Present {
    pub id: String,
    /// `forge.image.digest`, empty when the image has none.
    pub digest: String,
    pub size: Option<i64>,
    pub labels: HashMap<String, String>,
    pub tags: Vec<String>,
}

/// The image under `reference`, `None` when the engine has none.
pub(super) async fn inspect(
    docker: &Docker,
    reference: &str,
) -> Result<Option<Present>, RuntimeError> {
    match docker.inspect_image(reference).await {
        Ok(img) => {
            let labels = img.config.and_then(|c| c.labels).unwrap_or_default();
            Ok(Some(Present {
                id: img.id.unwrap_or_default(),
                digest: labels.get(DIGEST_LABEL).cloned().unwrap_or_default(),
                size: img.size,
                labels,
                tags: img.repo_tags.unwrap_or_default(),
            }))
        }
        Err(e) if status_of(&e) == Some(404) => Ok(None),
        Err(e) => Err(RuntimeError::docker(
            format!("inspect image {reference}"),
            e,
        )),
    }
}

/// One build through the engine's classic builder. RUN steps get the engine's default build
/// network (they fetch packages from the Debian mirror); lab containers never do.
pub(super) struct Build<'a> {
    pub reference: &'a str,
    pub context: Vec<u8>,
    pub labels: HashMap<String, String>,
    /// Ignore the layer cache (a forced rebuild fetches packages again).
    pub nocache: bool,
}

/// Builds and tags `b.reference`, reporting each step; the new image's id.
pub(super) async fn build(
    docker: &Docker,
    b: Build<'_>,
    progress: &dyn BuildProgress,
) -> Result<String, RuntimeError> {
    let fail = |message: String| RuntimeError::ImageBuild {
        image: b.reference.to_owned(),
        message,
    };
    let opts = BuildImageOptions {
        t: Some(b.reference.to_owned()),
        labels: Some(b.labels.clone()),
        rm: true,
        forcerm: true,
        nocache: b.nocache,
        ..Default::default()
    };
    let mut stream = docker.build_image(
        opts,
        None,
        Some(bollard::body_full(bytes::Bytes::from(b.context))),
    );
    // The last lines of output, for the error message of a failed step.
    let mut tail: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| fail(with_tail(&e.to_string(), &tail)))?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(fail(with_tail(&detail, &tail)));
        }
        for line in info.stream.iter().flat_map(|s| s.lines()) {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if line.starts_with("Step ") {
                progress.event(BuildEvent::Step {
                    image: b.reference,
                    line,
                });
            } else {
                progress.event(BuildEvent::Output {
                    image: b.reference,
                    line,
                });
            }
            if tail.len() == 12 {
                tail.remove(0);
            }
            tail.push(line.to_owned());
        }
    }
    let built = inspect(docker, b.reference)
        .await?
        .ok_or_else(|| fail("the engine finished without an image".into()))?;
    Ok(built.id)
}

fn with_tail(message: &str, tail: &[String]) -> String {
    if tail.is_empty() {
        message.trim().to_owned()
    } else {
        format!("{}; last output:\n{}", message.trim(), tail.join("\n"))
    }
}

/// Tags image `id` as `reference` (`name:tag`).
pub(super) async fn tag(docker: &Docker, id: &str, reference: &str) -> Result<(), RuntimeError> {
    let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
    docker
        .tag_image(
            id,
            Some(TagImageOptions {
                repo: Some(repo.to_owned()),
                tag: Some(tag.to_owned()),
            }),
        )
        .await
        .map_err(|e| RuntimeError::docker(format!("tag {id} as {reference}"), e))
}

/// Removes an image this pipeline replaced, when nothing uses it any more: only images with
/// the `forge.image` label and no tags left. Failure (a lab still runs on it, a newer image
/// still has it as a parent) only leaves it for later.
pub(super) async fn remove_replaced(docker: &Docker, id: &str) {
    let Ok(Some(img)) = inspect(docker, id).await else {
        return;
    };
    let untagged = img.tags.iter().all(|t| t == "<none>:<none>");
    if !untagged || !img.labels.contains_key(crate::labels::IMAGE) {
        return;
    }
    let opts = RemoveImageOptions {
        force: false,
        noprune: false,
        ..Default::default()
    };
    if let Err(e) = docker.remove_image(id, Some(opts), None).await {
        tracing::debug!(image = id, error = %e, "replaced image kept");
    }
}
