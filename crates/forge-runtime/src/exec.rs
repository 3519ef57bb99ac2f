//! Running things in Docker lab containers: commands with timeouts and capped output, redacted
//! state snapshots, interactive TTYs. (Files: [`crate::files`].)
//!
//! Timeouts kill for real: Docker has no "kill exec" call, so on timeout the exec's process
//! (Docker reports its host PID) and every descendant of it are sent SIGKILL from the host.
//! Only processes this exec started are touched.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ContainerInspectResponse;
use futures::{Stream, StreamExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::{RuntimeError, status_of};
use crate::{
    ContainerSnapshot, ContainerState, ExecRequest, ExecResult, REDACTED, TtyResize, TtySession,
};

/// Maps "container absent / not running" answers onto precise errors.
pub(crate) fn exec_err(display: &str, scenario: &str, e: bollard::errors::Error) -> RuntimeError {
    match status_of(&e) {
        Some(404) => RuntimeError::NoSuchContainer {
            scenario: scenario.into(),
            container: display.into(),
        },
        Some(409) => RuntimeError::NotRunning {
            container: display.into(),
        },
        _ => RuntimeError::Exec {
            container: display.into(),
            message: e.to_string(),
        },
    }
}

/// A started exec with its streams.
struct Attached {
    id: String,
    output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    input: Pin<Box<dyn AsyncWrite + Send>>,
}

/// Creates an exec in `target` and starts it attached to its streams (`start`: the engine's
/// defaults when `None`). Commands and terminals both start this way, so "absent / not running"
/// maps onto the same errors for both.
async fn attach(
    docker: &Docker,
    target: &str,
    display: &str,
    scenario: &str,
    create: CreateExecOptions<String>,
    start: Option<StartExecOptions>,
) -> Result<Attached, RuntimeError> {
    let exec = docker
        .create_exec(target, create)
        .await
        .map_err(|e| exec_err(display, scenario, e))?;
    match docker
        .start_exec(&exec.id, start)
        .await
        .map_err(|e| exec_err(display, scenario, e))?
    {
        StartExecResults::Attached { output, input } => Ok(Attached {
            id: exec.id,
            output,
            input,
        }),
        // We never ask for a detached start; nothing could be read from one.
        StartExecResults::Detached => Err(RuntimeError::Exec {
            container: display.into(),
            message: "exec started detached".into(),
        }),
    }
}

/// Runs one command to completion or timeout.
pub(crate) async fn run(
    docker: &Docker,
    target: &str,
    display: &str,
    scenario: &str,
    req: ExecRequest,
) -> Result<ExecResult, RuntimeError> {
    let started = Instant::now();
    let opts = CreateExecOptions::<String> {
        attach_stdin: Some(req.stdin.is_some()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(req.to_argv()),
        ..Default::default()
    };
    let Attached {
        id: exec_id,
        mut output,
        mut input,
    } = attach(docker, target, display, scenario, opts, None).await?;
    if let Some(data) = req.stdin.clone() {
        // Write, then half-close so the process sees EOF.
        tokio::spawn(async move {
            let _ = input.write_all(&data).await;
            let _ = input.shutdown().await;
        });
    } else {
        drop(input);
    }

    let cap = req.max_output_bytes;
    let (mut out, mut err, mut truncated) = (Vec::new(), Vec::new(), false);
    let deadline = tokio::time::Instant::now() + req.timeout;
    let mut timed_out = false;
    loop {
        match tokio::time::timeout_at(deadline, output.next()).await {
            Err(_) => {
                timed_out = true;
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(RuntimeError::Exec {
                    container: display.into(),
                    message: e.to_string(),
                });
            }
            Ok(Some(Ok(chunk))) => {
                let (buf, bytes) = match chunk {
                    LogOutput::StdErr { message } => (&mut err, message),
                    other => (&mut out, other.into_bytes()),
                };
                let room = cap.saturating_sub(buf.len());
                if bytes.len() > room {
                    truncated = true;
                }
                buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        }
    }
    drop(output);
    let exit_code = if timed_out {
        kill_exec(docker, &exec_id).await;
        -1
    } else {
        exit_code(docker, &exec_id).await.unwrap_or(-1)
    };
    Ok(ExecResult {
        exit_code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        truncated,
        duration: started.elapsed(),
        timed_out,
    })
}

/// The exit code once Docker has recorded it (the stream can end a moment earlier).
async fn exit_code(docker: &Docker, exec_id: &str) -> Option<i64> {
    for _ in 0..50 {
        let info = docker.inspect_exec(exec_id).await.ok()?;
        if info.running != Some(true) {
            return info.exit_code;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// SIGKILLs the exec's process and all its descendants (host PIDs).
async fn kill_exec(docker: &Docker, exec_id: &str) {
    let Ok(info) = docker.inspect_exec(exec_id).await else {
        return;
    };
    let Some(root) = info.pid.filter(|p| *p > 0) else {
        return;
    };
    let victims = tokio::task::spawn_blocking(move || descendants(root as i32))
        .await
        .unwrap_or_default();
    for pid in victims {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// `root` and every process below it, from `/proc/<pid>/stat` parent links.
fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The comm field may contain spaces and parens; fields resume after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// `docker inspect` reduced to a [`ContainerSnapshot`], every environment value redacted.
pub(crate) async fn snapshot(
    docker: &Docker,
    target: &str,
    display: &str,
    scenario: &str,
) -> Result<ContainerSnapshot, RuntimeError> {
    let info = inspect(docker, target, display, scenario).await?;
    Ok(to_snapshot(display, info))
}

/// `docker inspect` of a lab container, errors mapped by [`exec_err`] so that every call naming
/// a container reports a missing one as `NoSuchContainer`.
pub(crate) async fn inspect(
    docker: &Docker,
    target: &str,
    display: &str,
    scenario: &str,
) -> Result<ContainerInspectResponse, RuntimeError> {
    docker
        .inspect_container(target, None)
        .await
        .map_err(|e| exec_err(display, scenario, e))
}

fn to_snapshot(display: &str, info: ContainerInspectResponse) -> ContainerSnapshot {
    let state = info.state.unwrap_or_default();
    let status = state
        .status
        .map(|s| ContainerState::from_engine(s.as_ref()))
        .unwrap_or(ContainerState::Unknown);
    let config = info.config.unwrap_or_default();
    let host = info.host_config.unwrap_or_default();
    ContainerSnapshot {
        container: display.to_owned(),
        image: config.image.or(info.image).unwrap_or_default(),
        state: status,
        // Docker reports the zero time for a container that never started.
        started_at: state.started_at.filter(|t| !t.starts_with("0001-01-01")),
        restart_count: info.restart_count.unwrap_or(0).max(0) as u64,
        exit_code: if status.is_running() {
            None
        } else {
            state.exit_code
        },
        hostname: config.hostname.filter(|h| !h.is_empty()),
        env: redacted_env(config.env.unwrap_or_default()),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        read_only_root: host.readonly_rootfs.unwrap_or(false),
        capabilities: host.cap_add.unwrap_or_default(),
        memory_bytes: host.memory.filter(|m| *m > 0),
        pids_limit: host.pids_limit.filter(|p| *p > 0),
        health: state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none"),
    }
}

/// `KEY=value` entries → `KEY` → `<redacted>`: the keys tell what a lab is configured with,
/// the values may be secrets.
fn redacted_env(env: Vec<String>) -> BTreeMap<String, String> {
    env.into_iter()
        .map(|item| {
            let key = item.split_once('=').map(|(k, _)| k).unwrap_or(&item);
            (key.to_owned(), REDACTED.to_owned())
        })
        .collect()
}

/// Resizes an interactive exec.
struct DockerTtyResize {
    docker: Docker,
    exec_id: String,
}

#[async_trait]
impl TtyResize for DockerTtyResize {
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), RuntimeError> {
        self.docker
            .resize_exec(
                &self.exec_id,
                ResizeExecOptions {
                    width: cols,
                    height: rows,
                },
            )
            .await
            .map_err(|e| RuntimeError::docker("resize terminal", e))
    }
}

pub(crate) async fn tty(
    docker: &Docker,
    target: &str,
    display: &str,
    scenario: &str,
    cmd: Option<Vec<String>>,
) -> Result<TtySession, RuntimeError> {
    let opts = CreateExecOptions::<String> {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(true),
        env: Some(vec!["TERM=xterm-256color".into()]),
        cmd: Some(cmd.unwrap_or_else(|| vec!["/bin/sh".into(), "-l".into()])),
        ..Default::default()
    };
    let start = StartExecOptions {
        detach: false,
        tty: true,
        output_capacity: None,
    };
    let Attached { id, output, input } =
        attach(docker, target, display, scenario, opts, Some(start)).await?;
    let output = output.map(|r| {
        r.map(|o| o.into_bytes().to_vec())
            .map_err(|e| RuntimeError::docker("terminal output", e))
    });
    Ok(TtySession {
        output: Box::pin(output),
        input,
        resizer: Box::new(DockerTtyResize {
            docker: docker.clone(),
            exec_id: id,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_env_value() {
        let env = redacted_env(vec!["A=secret".into(), "PATH=/bin".into(), "EMPTY".into()]);
        assert_eq!(
            env.into_iter().collect::<Vec<_>>(),
            [
                ("A".to_owned(), REDACTED.to_owned()),
                ("EMPTY".to_owned(), REDACTED.to_owned()),
                ("PATH".to_owned(), REDACTED.to_owned()),
            ]
        );
    }

    #[test]
    fn snapshot_of_a_stopped_container_has_its_exit_code() {
        let info: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "State": {"Status": "exited", "ExitCode": 137, "StartedAt": "0001-01-01T00:00:00Z"},
            "Config": {"Image": "forge/web:1", "Env": ["TOKEN=s3cr3t"], "Hostname": "web"},
            "HostConfig": {"ReadonlyRootfs": true, "CapAdd": ["NET_RAW"], "Memory": 0, "PidsLimit": 64},
            "RestartCount": 2
        }))
        .unwrap();
        let snap = to_snapshot("web", info);
        assert_eq!(snap.state, ContainerState::Exited);
        assert_eq!(snap.exit_code, Some(137));
        assert_eq!(snap.started_at, None);
        assert_eq!(snap.restart_count, 2);
        assert_eq!(snap.env["TOKEN"], REDACTED);
        assert_eq!((snap.memory_bytes, snap.pids_limit), (None, Some(64)));
        assert!(snap.read_only_root && snap.capabilities == ["NET_RAW"]);
    }
}
