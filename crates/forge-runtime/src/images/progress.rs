//! How builds report progress ([`BuildProgress`]: the CLI draws bars, the platform logs) and
//! what bounds them ([`BuildOptions`]).

use std::sync::Arc;
use std::time::Duration;

/// Default bound on building one image (debootstrap included).
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// One thing that happened while images were ensured.
#[derive(Debug, Clone, Copy)]
pub enum BuildEvent<'a> {
    /// The image is present and its digest matches: nothing to do.
    UpToDate {
        image: &'a str,
    },
    /// The image is being built; `reason` is `missing`, `stale` or `forced`.
    Started {
        image: &'a str,
        kind: &'static str,
        reason: &'static str,
    },
    /// A step of the build: `Step 2/4 : RUN …`, the debootstrap command, the import.
    Step {
        image: &'a str,
        line: &'a str,
    },
    /// A line of the build's output (apt, debootstrap).
    Output {
        image: &'a str,
        line: &'a str,
    },
    /// The build is still running (every [`BuildOptions::heartbeat`]).
    Waiting {
        image: &'a str,
        elapsed: Duration,
    },
    Built {
        image: &'a str,
        elapsed: Duration,
    },
    Failed {
        image: &'a str,
        error: &'a str,
    },
}

/// Where build progress goes: the CLI draws it, the platform logs it ([`LogProgress`]).
pub trait BuildProgress: Send + Sync {
    fn event(&self, event: BuildEvent<'_>);
}

/// Build progress as `tracing` events: starts, steps, heartbeats and results at info, the
/// builds' own output at debug.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogProgress;

impl BuildProgress for LogProgress {
    fn event(&self, event: BuildEvent<'_>) {
        match event {
            BuildEvent::UpToDate { image } => tracing::debug!(image, "image up to date"),
            BuildEvent::Started {
                image,
                kind,
                reason,
            } => tracing::info!(image, kind, reason, "building image"),
            BuildEvent::Step { image, line } => {
                tracing::info!(image, step = line, "image build step")
            }
            BuildEvent::Output { image, line } => tracing::debug!(image, "{line}"),
            BuildEvent::Waiting { image, elapsed } => {
                tracing::info!(image, elapsed_s = elapsed.as_secs(), "still building image")
            }
            BuildEvent::Built { image, elapsed } => {
                tracing::info!(
                    image,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "image built"
                )
            }
            BuildEvent::Failed { image, error } => {
                tracing::warn!(image, error, "image build failed")
            }
        }
    }
}

/// How `ensure_images` builds.
#[derive(Clone)]
pub struct BuildOptions {
    /// Rebuild the requested images (not the ones they are built on) even when up to date,
    /// without the layer cache.
    pub force: bool,
    pub progress: Arc<dyn BuildProgress>,
    /// Bound on building one image; past it the build fails (and debootstrap is killed).
    pub timeout: Duration,
    /// How often a running build reports [`BuildEvent::Waiting`].
    pub heartbeat: Duration,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            force: false,
            progress: Arc::new(LogProgress),
            timeout: DEFAULT_BUILD_TIMEOUT,
            heartbeat: Duration::from_secs(15),
        }
    }
}
