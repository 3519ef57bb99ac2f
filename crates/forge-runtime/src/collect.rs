//! Evidence collection: performs one playbook step through a [`Runtime`] and returns what was
//! seen ([`Observation`], judged by `forge_core::playbook::evaluate`) plus the artifact bytes
//! to store in the evidence bundle.
//!
//! Mapping: command → `exec sh -c`; file → `read_file` (no shell); network → exec of
//! `network_probe_command`; state → [`Runtime::snapshot`]: `running` is its state, and the
//! (redacted) snapshot without the platform's labels and start time is the observation's
//! `detail`. Artifacts are JSON documents
//! `{step, observation}` so each one explains itself.

use std::time::Duration;

use forge_core::ScenarioId;
use forge_core::playbook::{Observation, PlaybookStep, network_probe_command};

use crate::error::RuntimeError;
use crate::{ExecRequest, Runtime};

/// Output kept per stream, and file content kept, per step.
pub const MAX_EVIDENCE_BYTES: usize = 1 << 20;

/// Performs `step` in the lab. Never fails: anything that stops collection becomes
/// [`Observation::Unavailable`] with the reason, which evaluates to a failed step.
pub async fn collect(
    rt: &dyn Runtime,
    scenario: &ScenarioId,
    step: &PlaybookStep,
) -> (Observation, Vec<u8>) {
    let obs = observe(rt, scenario, step)
        .await
        .unwrap_or_else(|e| Observation::Unavailable {
            reason: e.to_string(),
        });
    let artifact = serde_json::json!({ "step": step, "observation": &obs });
    let bytes = serde_json::to_vec_pretty(&artifact).unwrap_or_default();
    (obs, bytes)
}

async fn observe(
    rt: &dyn Runtime,
    scenario: &ScenarioId,
    step: &PlaybookStep,
) -> Result<Observation, RuntimeError> {
    let timeout = Duration::from_secs(step.timeout_seconds());
    match step {
        PlaybookStep::ExecuteCommand {
            container, command, ..
        } => {
            let req = ExecRequest::shell(command.clone())
                .timeout(timeout)
                .max_output(MAX_EVIDENCE_BYTES);
            let r = rt.exec(scenario, container, req).await?;
            Ok(Observation::Command {
                exit_code: r.exit_code,
                stdout: r.stdout,
                stderr: r.stderr,
                timed_out: r.timed_out,
                duration_ms: r.duration.as_millis() as u64,
            })
        }
        PlaybookStep::CheckFile {
            container, path, ..
        } => {
            match rt
                .read_file(scenario, container, path, MAX_EVIDENCE_BYTES)
                .await
            {
                Ok(f) => Ok(Observation::File {
                    exists: true,
                    content: Some(String::from_utf8_lossy(&f.bytes).into_owned()),
                }),
                Err(RuntimeError::FileNotFound { .. }) => Ok(Observation::File {
                    exists: false,
                    content: None,
                }),
                Err(e) => Err(e),
            }
        }
        PlaybookStep::ProbeNetwork {
            container, target, ..
        } => {
            let cmd = network_probe_command(target, step.timeout_seconds());
            // The probe bounds itself; the exec timeout is only a backstop.
            let req = ExecRequest::shell(cmd)
                .timeout(timeout + Duration::from_secs(2))
                .max_output(4096);
            let r = rt.exec(scenario, container, req).await?;
            let reachable = r.exit_code == 0 && !r.timed_out;
            let detail = if r.timed_out {
                "probe timed out".to_owned()
            } else {
                format!("probe exit code {}", r.exit_code)
            };
            Ok(Observation::Network { reachable, detail })
        }
        PlaybookStep::InspectState { container, .. } => {
            let mut snap = rt.snapshot(scenario, container).await?;
            // Evidence is what the learner's work can change (state, restarts, exit code,
            // health, hardening), not the platform's bookkeeping: its `forge.*` labels and the
            // engine's start time differ between a warm-pool lab and a cold one.
            snap.labels.retain(|k, _| !k.starts_with("forge."));
            let mut detail = serde_json::to_value(&snap)
                .map_err(|e| RuntimeError::Invalid(format!("snapshot of {container}: {e}")))?;
            if let Some(o) = detail.as_object_mut() {
                o.remove("started_at");
            }
            Ok(Observation::State {
                running: snap.state.is_running(),
                detail,
            })
        }
    }
}
