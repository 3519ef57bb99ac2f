//! Running things in lab containers: commands with timeouts and capped output, redacted state
//! snapshots, interactive TTYs. (Files: [`crate::files`].)
//!
//! Timeouts kill for real: Docker has no "kill exec" call, so on timeout the exec's process
//! (Docker reports its host PID) and every descendant of it are sent SIGKILL from the host.
//! Only processes this exec started are touched.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;

use crate::error::{RuntimeError, status_of};
use crate::{ExecRequest, ExecResult, TtySession};

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
    let exec = docker
        .create_exec(target, opts)
        .await
        .map_err(|e| exec_err(display, scenario, e))?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = docker
        .start_exec(&exec.id, None)
        .await
        .map_err(|e| exec_err(display, scenario, e))?
    else {
        return Err(RuntimeError::Exec {
            container: display.into(),
            message: "exec started detached".into(),
        });
    };
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
                    bollard::container::LogOutput::StdErr { message } => (&mut err, message),
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
        kill_exec(docker, &exec.id).await;
        -1
    } else {
        exit_code(docker, &exec.id).await.unwrap_or(-1)
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

/// `docker inspect` as JSON with every environment value replaced by `<redacted>`.
pub(crate) async fn snapshot(
    docker: &Docker,
    target: &str,
    display: &str,
    scenario: &str,
) -> Result<serde_json::Value, RuntimeError> {
    let info = docker
        .inspect_container(target, None)
        .await
        .map_err(|e| exec_err(display, scenario, e))?;
    let mut v = serde_json::to_value(info).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    redact_env(&mut v);
    Ok(v)
}

/// `KEY=value` → `KEY=<redacted>` in `Config.Env`.
pub fn redact_env(v: &mut serde_json::Value) {
    if let Some(env) = v.pointer_mut("/Config/Env").and_then(|e| e.as_array_mut()) {
        for item in env {
            if let Some(s) = item.as_str() {
                let key = s.split_once('=').map(|(k, _)| k).unwrap_or(s);
                *item = serde_json::Value::String(format!("{key}=<redacted>"));
            }
        }
    }
}

/// Resizes (and reports on) an interactive exec.
#[derive(Clone)]
pub struct TtyResizer {
    docker: Docker,
    exec_id: String,
}

impl TtyResizer {
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), RuntimeError> {
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

    /// The shell's exit code once it has ended, `None` while it runs.
    pub async fn exit_code(&self) -> Result<Option<i64>, RuntimeError> {
        let info = self
            .docker
            .inspect_exec(&self.exec_id)
            .await
            .map_err(|e| RuntimeError::docker("inspect exec", e))?;
        Ok(if info.running == Some(true) {
            None
        } else {
            info.exit_code
        })
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
    let exec = docker
        .create_exec(target, opts)
        .await
        .map_err(|e| exec_err(display, scenario, e))?;
    let start = StartExecOptions {
        detach: false,
        tty: true,
        output_capacity: None,
    };
    let StartExecResults::Attached { output, input } = docker
        .start_exec(&exec.id, Some(start))
        .await
        .map_err(|e| exec_err(display, scenario, e))?
    else {
        return Err(RuntimeError::Exec {
            container: display.into(),
            message: "exec started detached".into(),
        });
    };
    let output = output.map(|r| {
        r.map(|o| o.into_bytes().to_vec())
            .map_err(|e| RuntimeError::docker("terminal output", e))
    });
    Ok(TtySession {
        exec_id: exec.id.clone(),
        output: Box::pin(output),
        input,
        resizer: TtyResizer {
            docker: docker.clone(),
            exec_id: exec.id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_env_value() {
        let mut v = serde_json::json!({"Config": {"Env": ["A=secret", "PATH=/bin", "EMPTY"]}});
        redact_env(&mut v);
        assert_eq!(
            v["Config"]["Env"],
            serde_json::json!(["A=<redacted>", "PATH=<redacted>", "EMPTY=<redacted>"])
        );
    }
}
