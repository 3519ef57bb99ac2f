//! What runs inside a lab's containers while it launches — the template's setup commands and
//! the image's health probe — and the [`Gate`] that orders them across the lab's containers.
//!
//! Per container: start → plumb → (every container of the lab plumbed: setup may talk to its
//! neighbours) → setup → probe. A container without setup steps has nothing left that could
//! change its health once it runs, so its probe starts right after the container does and
//! overlaps everybody's plumbing and setup. The probe is the image's own HEALTHCHECK command,
//! run by us through exec and retried quickly: the engine's first probe would come only after
//! the image's interval (30 s), and API 1.41 has no start interval.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::DockerRuntime;
use crate::error::RuntimeError;
use crate::{ExecCommand, ExecRequest, exec};

/// Time one setup command may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a lab container may take to pass its health probe at launch.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// Time one probe may take (the images' HEALTHCHECK says 5 s too).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause after a failed probe; doubled up to [`PROBE_PAUSE_MAX`]. A service that is not
/// listening yet usually is a few milliseconds later.
const PROBE_PAUSE: Duration = Duration::from_millis(10);
const PROBE_PAUSE_MAX: Duration = Duration::from_millis(250);

/// The engine's HEALTHCHECK test as a command to exec; `None` when the image has none.
pub(super) fn health_probe(test: &[String]) -> Option<ExecRequest> {
    let req = match test.split_first()? {
        (kind, argv) if kind == "CMD" && !argv.is_empty() => ExecRequest::argv(argv.to_vec()),
        (kind, [cmd]) if kind == "CMD-SHELL" => ExecRequest::shell(cmd.clone()),
        _ => return None,
    };
    Some(req.timeout(PROBE_TIMEOUT).max_output(4 * 1024))
}

/// Runs `probe` until it passes, backing off from [`PROBE_PAUSE`] to [`PROBE_PAUSE_MAX`], for
/// at most [`HEALTH_TIMEOUT`]; the error names the container, the probe and its last output.
pub(super) async fn wait_healthy(
    rt: &DockerRuntime,
    target: &str,
    display: &str,
    scenario: &str,
    probe: &ExecRequest,
) -> Result<(), RuntimeError> {
    let started = Instant::now();
    let mut pause = PROBE_PAUSE;
    loop {
        let r = exec::run(rt.docker(), target, display, scenario, probe.clone()).await?;
        if !r.timed_out && r.exit_code == 0 {
            return Ok(());
        }
        if started.elapsed() + pause > HEALTH_TIMEOUT {
            return Err(RuntimeError::Unhealthy {
                container: display.to_owned(),
                probe: match &probe.command {
                    ExecCommand::Argv(v) => v.join(" "),
                    ExecCommand::Shell(s) => s.clone(),
                },
                waited: started.elapsed(),
                exit_code: r.exit_code,
                output: format!("{}{}", r.stdout, r.stderr)
                    .trim()
                    .chars()
                    .take(400)
                    .collect(),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(PROBE_PAUSE_MAX);
    }
}

/// Runs a container's setup commands in order; a non-zero exit fails the launch.
pub(super) async fn run_setup(
    rt: &DockerRuntime,
    target: &str,
    display: &str,
    scenario: &str,
    steps: &[String],
) -> Result<(), RuntimeError> {
    for cmd in steps {
        let req = ExecRequest::shell(cmd.clone())
            .timeout(SETUP_TIMEOUT)
            .max_output(16 * 1024);
        let r = exec::run(rt.docker(), target, display, scenario, req).await?;
        if r.timed_out || r.exit_code != 0 {
            let output = format!("{}{}", r.stdout, r.stderr)
                .trim()
                .chars()
                .take(400)
                .collect();
            return Err(RuntimeError::Setup {
                container: display.to_owned(),
                command: cmd.clone(),
                exit_code: r.exit_code,
                output,
            });
        }
    }
    Ok(())
}

/// How far a launch has come, as its per-container tasks see it.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// `Some(true)` once the fabric is up, `Some(false)` when building it failed.
    fabric: Option<bool>,
    plumbed: usize,
    /// Something failed: whoever waits gives up (the launch tears down).
    failed: bool,
}

/// Where a launch's per-container tasks wait for the fabric, for each other's links, or for a
/// failure elsewhere that makes their work pointless.
pub(super) struct Gate {
    containers: usize,
    tx: watch::Sender<Progress>,
}

impl Gate {
    pub(super) fn new(containers: usize) -> Self {
        Self {
            containers,
            tx: watch::Sender::new(Progress::default()),
        }
    }

    pub(super) fn fabric_done(&self, ok: bool) {
        self.tx.send_modify(|p| {
            p.fabric = Some(ok);
            p.failed |= !ok;
        });
    }

    pub(super) fn plumbed(&self) {
        self.tx.send_modify(|p| p.plumbed += 1);
    }

    pub(super) fn fail(&self) {
        self.tx.send_modify(|p| p.failed = true);
    }

    async fn until(&self, done: impl Fn(&Progress) -> bool) -> Progress {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        rx.wait_for(|p| done(p))
            .await
            .map(|p| *p)
            .unwrap_or(Progress {
                failed: true,
                ..Progress::default()
            })
    }

    /// Waits for the fabric; false when the launch failed instead.
    pub(super) async fn fabric_ready(&self) -> bool {
        let p = self.until(|p| p.failed || p.fabric.is_some()).await;
        !p.failed && p.fabric == Some(true)
    }

    /// Waits until every container is plumbed; false when the launch failed instead.
    pub(super) async fn all_plumbed(&self) -> bool {
        let n = self.containers;
        !self.until(|p| p.failed || p.plumbed >= n).await.failed
    }

    /// Resolves once anything in the launch failed.
    pub(super) async fn failed(&self) {
        self.until(|p| p.failed).await;
    }
}
