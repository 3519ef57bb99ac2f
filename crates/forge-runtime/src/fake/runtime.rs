//! The [`Runtime`] implementation of [`FakeRuntime`]: the Docker backend's contract (checked
//! by the conformance suite) over an in-memory record of labs.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use forge_core::ScenarioId;
use forge_core::template::{Limits, plan_lab};
use futures::StreamExt;
use futures::channel::mpsc;
use futures::stream::BoxStream;

use super::{FakeContainer, FakeExec, FakeLab, FakeRuntime, State, Subscriber, tty};
use crate::{
    ContainerSnapshot, ContainerState, ExecCommand, ExecRequest, ExecResult, FileContent,
    LabContainer, LabHandle, LabSpec, LabSummary, LaunchTimings, REDACTED, ReconcileReport,
    Runtime, RuntimeError, RuntimeEvent, StoppedContainer, TeardownReport, TtySession,
    container_name, files, hardening, labels, labels_match,
};

/// What each launch phase "took": small and non-zero, so callers that report timings see
/// plausible numbers.
const PHASE: Duration = Duration::from_millis(1);

fn no_such(scenario: &ScenarioId, container: &str) -> RuntimeError {
    RuntimeError::NoSuchContainer {
        scenario: scenario.to_string(),
        container: container.to_owned(),
    }
}

impl State {
    fn lab(&self, scenario: &ScenarioId) -> Option<&FakeLab> {
        self.labs.get(scenario.as_str())
    }

    fn container(
        &self,
        scenario: &ScenarioId,
        container: &str,
    ) -> Result<(&FakeLab, &FakeContainer), RuntimeError> {
        let lab = self
            .lab(scenario)
            .ok_or_else(|| no_such(scenario, container))?;
        let c = lab
            .containers
            .iter()
            .find(|c| c.name == container)
            .ok_or_else(|| no_such(scenario, container))?;
        Ok((lab, c))
    }

    fn container_mut(
        &mut self,
        scenario: &ScenarioId,
        container: &str,
    ) -> Result<&mut FakeContainer, RuntimeError> {
        self.labs
            .get_mut(scenario.as_str())
            .and_then(|l| l.containers.iter_mut().find(|c| c.name == container))
            .ok_or_else(|| no_such(scenario, container))
    }

    /// Like `container`, and it must be running (exec, terminal).
    fn running(&self, scenario: &ScenarioId, container: &str) -> Result<(), RuntimeError> {
        let (_, c) = self.container(scenario, container)?;
        if c.state.is_running() {
            Ok(())
        } else {
            Err(RuntimeError::NotRunning {
                container: container.to_owned(),
            })
        }
    }
}

/// The same checks as the Docker backend makes before it creates anything.
fn validate(spec: &LabSpec) -> Result<forge_core::template::LabPlan, RuntimeError> {
    let containers = &spec.template.spec.assets.containers;
    if containers.is_empty() {
        return Err(RuntimeError::EmptyTemplate);
    }
    let plan = plan_lab(&spec.template).map_err(|e| RuntimeError::Plan(e.to_string()))?;
    for c in containers {
        hardening::check_name(&c.name)?;
        hardening::capabilities(c)?;
    }
    Ok(plan)
}

/// `max` bytes of `s` at most (on a char boundary), and whether it was cut.
fn cap(s: String, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_owned(), true)
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        if self.state().engine_down {
            return Err(RuntimeError::Backend(
                "the engine is down (FakeRuntime::set_engine_down)".into(),
            ));
        }
        Ok(())
    }

    async fn launch(&self, spec: LabSpec) -> Result<LabHandle, RuntimeError> {
        let delay = self.state().launch_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(reason) = self.state().fail_next_launch.take() {
            return Err(RuntimeError::Backend(reason));
        }
        let plan = validate(&spec)?;
        let scenario = spec.scenario_id.clone();
        let mut st = self.state();
        if st.labs.contains_key(scenario.as_str()) {
            return Err(RuntimeError::LabExists {
                scenario: scenario.to_string(),
            });
        }
        let now = Utc::now();
        // Caller's labels first so the runtime's own always win, as on Docker.
        let mut lab_labels = spec.labels.clone();
        lab_labels.extend([
            (labels::SCENARIO_ID.to_owned(), scenario.to_string()),
            (labels::TENANT_ID.to_owned(), spec.tenant_id.clone()),
            (
                labels::CREATED_AT.to_owned(),
                now.to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
            (
                labels::TEMPLATE.to_owned(),
                spec.template.metadata.name.clone(),
            ),
        ]);
        let containers: Vec<FakeContainer> = spec
            .template
            .spec
            .assets
            .containers
            .iter()
            .map(|c| FakeContainer {
                name: c.name.clone(),
                id: format!("fake-{}-{}", scenario.suffix(), c.name),
                state: ContainerState::Running,
                started_at: now,
                restart_count: 0,
                exit_code: None,
                files: BTreeMap::new(),
            })
            .collect();
        let ids = containers
            .iter()
            .map(|c| (c.name.clone(), c.id.clone()))
            .collect();
        st.labs.insert(
            scenario.to_string(),
            FakeLab {
                id: scenario.clone(),
                tenant_id: spec.tenant_id,
                template: spec.template,
                created_at: now,
                labels: lab_labels,
                containers,
            },
        );
        let timings = LaunchTimings {
            images_checked: PHASE,
            fabric_ready: PHASE,
            containers_created: PHASE * 2,
            containers_started: PHASE * 3,
            links_plumbed: PHASE * 4,
            setup_done: PHASE * 5,
            healthy: PHASE * 5,
            total: delay + PHASE * 5,
        };
        Ok(LabHandle {
            network_id: scenario.network_id(),
            scenario_id: scenario,
            containers: ids,
            plan,
            timings,
        })
    }

    async fn exec(
        &self,
        scenario: &ScenarioId,
        container: &str,
        req: ExecRequest,
    ) -> Result<ExecResult, RuntimeError> {
        let call = FakeExec {
            scenario: scenario.clone(),
            container: container.to_owned(),
            argv: req.to_argv(),
            command: match &req.command {
                ExecCommand::Shell(s) => s.clone(),
                ExecCommand::Argv(v) => v.join(" "),
            },
            stdin: req.stdin.clone(),
        };
        let checked = {
            let mut st = self.state();
            st.exec_calls.push(call.clone());
            st.running(scenario, container)
        };
        checked?;
        // Handlers run without the state lock: they may call back into the fake.
        let scripted = self.handlers().iter().find_map(|h| h(&call));
        let mut r = scripted.unwrap_or(ExecResult {
            exit_code: 0,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            duration: Duration::ZERO,
            timed_out: false,
        });
        let (stdout, cut_out) = cap(r.stdout, req.max_output_bytes);
        let (stderr, cut_err) = cap(r.stderr, req.max_output_bytes);
        r.stdout = stdout;
        r.stderr = stderr;
        r.truncated |= cut_out || cut_err;
        Ok(r)
    }

    async fn read_file(
        &self,
        scenario: &ScenarioId,
        container: &str,
        path: &str,
        max_bytes: usize,
    ) -> Result<FileContent, RuntimeError> {
        files::require_absolute(path)?;
        let st = self.state();
        let (_, c) = st.container(scenario, container)?;
        let all = c
            .files
            .get(path)
            .ok_or_else(|| RuntimeError::FileNotFound {
                container: container.to_owned(),
                path: path.to_owned(),
            })?;
        let bytes = all[..all.len().min(max_bytes)].to_vec();
        Ok(FileContent {
            path: path.to_owned(),
            truncated: bytes.len() < all.len(),
            size: all.len() as u64,
            bytes,
        })
    }

    async fn snapshot(
        &self,
        scenario: &ScenarioId,
        container: &str,
    ) -> Result<ContainerSnapshot, RuntimeError> {
        let st = self.state();
        let (lab, c) = st.container(scenario, container)?;
        let spec = &lab.template.spec;
        let def = spec
            .assets
            .containers
            .iter()
            .find(|d| d.name == container)
            .ok_or_else(|| no_such(scenario, container))?;
        let n = spec.assets.containers.len().max(1) as u64;
        let memory = (spec.limits.memory_mb.saturating_mul(1024 * 1024) / n) as i64;
        Ok(ContainerSnapshot {
            container: c.name.clone(),
            image: def.image.clone(),
            state: c.state,
            started_at: Some(c.started_at.to_rfc3339_opts(SecondsFormat::Nanos, true)),
            restart_count: c.restart_count,
            exit_code: if c.state.is_running() {
                None
            } else {
                c.exit_code
            },
            hostname: Some(c.name.clone()),
            env: def
                .environment
                .keys()
                .map(|k| (k.clone(), REDACTED.to_owned()))
                .collect(),
            labels: lab.container_labels(c),
            read_only_root: true,
            capabilities: hardening::capabilities(def)?,
            memory_bytes: (memory > 0).then_some(memory),
            pids_limit: Some(spec.limits.pids.unwrap_or(Limits::DEFAULT_PIDS) as i64),
            health: None,
        })
    }

    async fn exec_tty(
        &self,
        scenario: &ScenarioId,
        container: &str,
        cmd: Option<Vec<String>>,
    ) -> Result<TtySession, RuntimeError> {
        self.state().running(scenario, container)?;
        self.state().tty_opened.push((container.to_owned(), cmd));
        Ok(tty::echo_session(self.clone()))
    }

    async fn teardown(&self, scenario: &ScenarioId) -> Result<TeardownReport, RuntimeError> {
        Ok(match self.state().labs.remove(scenario.as_str()) {
            Some(lab) => TeardownReport {
                containers_removed: lab.containers.len(),
                namespace_removed: true,
            },
            None => TeardownReport::default(),
        })
    }

    async fn list_labs(&self) -> Result<Vec<LabSummary>, RuntimeError> {
        let st = self.state();
        Ok(st
            .labs
            .values()
            .map(|lab| LabSummary {
                scenario_id: lab.id.to_string(),
                network_id: lab.id.network_id(),
                tenant_id: Some(lab.tenant_id.clone()),
                template: Some(lab.template.metadata.name.clone()),
                created_at: Some(lab.created_at),
                containers: {
                    let mut cs: Vec<LabContainer> = lab
                        .containers
                        .iter()
                        .map(|c| LabContainer {
                            name: c.name.clone(),
                            docker_name: container_name(&lab.id, &c.name),
                            id: c.id.clone(),
                            state: c.state,
                        })
                        .collect();
                    cs.sort_by(|a, b| a.name.cmp(&b.name));
                    cs
                },
                namespace_exists: true,
                labels: lab.labels.clone(),
            })
            .collect())
    }

    async fn reconcile(
        &self,
        alive: &(dyn for<'s> Fn(&'s str) -> bool + Send + Sync),
    ) -> Result<ReconcileReport, RuntimeError> {
        let mut st = self.state();
        let mut report = ReconcileReport::default();
        let ids: Vec<String> = st.labs.keys().cloned().collect();
        for id in ids {
            if alive(&id) {
                report.kept.push(id);
            } else {
                st.labs.remove(&id);
                report.removed.push(id);
            }
        }
        Ok(report)
    }

    async fn events(
        &self,
        label_filters: &[String],
    ) -> Result<BoxStream<'static, RuntimeEvent>, RuntimeError> {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers().push(Subscriber {
            filters: label_filters.to_vec(),
            tx,
        });
        Ok(rx.boxed())
    }

    async fn stopped_containers(
        &self,
        label_filters: &[String],
    ) -> Result<Vec<StoppedContainer>, RuntimeError> {
        let st = self.state();
        Ok(st
            .labs
            .values()
            .flat_map(|lab| {
                lab.containers
                    .iter()
                    .filter(|c| matches!(c.state, ContainerState::Exited | ContainerState::Dead))
                    .filter(|c| labels_match(&lab.container_labels(c), label_filters))
                    .map(|c| StoppedContainer {
                        scenario_id: lab.id.to_string(),
                        container: c.name.clone(),
                    })
            })
            .collect())
    }

    async fn lab_alive(&self, scenario: &ScenarioId) -> bool {
        self.state().lab(scenario).is_some()
    }

    async fn container_state(
        &self,
        scenario: &ScenarioId,
        container: &str,
    ) -> Result<ContainerState, RuntimeError> {
        Ok(self.state().container(scenario, container)?.1.state)
    }

    async fn revive(&self, scenario: &ScenarioId, container: &str) -> Result<(), RuntimeError> {
        let mut st = self.state();
        let fail = st.fail_revive;
        let c = st.container_mut(scenario, container)?;
        if fail {
            return Err(RuntimeError::Backend(format!(
                "cannot revive container {container}: injected failure"
            )));
        }
        c.state = ContainerState::Running;
        c.exit_code = None;
        c.restart_count += 1;
        c.started_at = Utc::now();
        Ok(())
    }

    /// Stops the container without an event (the supervisor ignores deaths it causes).
    async fn kill(&self, scenario: &ScenarioId, container: &str) -> Result<(), RuntimeError> {
        let mut st = self.state();
        let c = st.container_mut(scenario, container)?;
        if c.state.is_running() {
            c.state = ContainerState::Exited;
            c.exit_code = Some(137);
        }
        Ok(())
    }
}
