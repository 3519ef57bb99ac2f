//! Keeps labs whole (design.md §4): lab containers run with restart policy `no` because a
//! Docker restart gives a container a fresh network namespace without our veths. The
//! supervisor watches the engine's `die`/`oom` events for lab containers; one that dies while
//! its lab is alive (namespace present, not being torn down) is started again and re-plumbed
//! from its labels, counted in `forge_container_restarts_total`. When that fails
//! `max_attempts` times, or the container crash-loops, the lab is reported failed with a
//! reason on the event channel — never left silently disconnected.
//!
//! It also converges after the daemon (or this process) restarted: on start and after every
//! reconnect of the event stream it revives stopped containers of live labs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::docker::revive;
use crate::error::status_of;
use crate::{DockerRuntime, labels, netns};

/// What the supervisor reports to the orchestrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabEvent {
    /// A container died and is running and re-plumbed again.
    Restarted {
        scenario_id: String,
        container: String,
        attempt: u32,
    },
    /// A container could not be brought back; the lab should be marked failed.
    Failed {
        scenario_id: String,
        container: String,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Restart attempts per death before the lab is reported failed.
    pub max_attempts: u32,
    /// Pause before attempt n is `backoff * n`.
    pub backoff: Duration,
    /// More than `max_restarts` restarts of one container within `window` is a crash loop.
    pub max_restarts: u32,
    pub window: Duration,
    /// Extra `label` filters (`key` or `key=value`) narrowing which labs are supervised, e.g.
    /// one test run's.
    pub label_filters: Vec<String>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Duration::from_millis(250),
            max_restarts: 5,
            window: Duration::from_secs(300),
            label_filters: Vec::new(),
        }
    }
}

/// The supervisor task. Create with [`Supervisor::new`], run with [`Supervisor::spawn`].
pub struct Supervisor {
    rt: DockerRuntime,
    cfg: SupervisorConfig,
    tx: mpsc::UnboundedSender<LabEvent>,
    in_flight: Arc<Mutex<HashSet<String>>>,
    history: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
}

impl Supervisor {
    pub fn new(
        rt: DockerRuntime,
        cfg: SupervisorConfig,
    ) -> (Self, mpsc::UnboundedReceiver<LabEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Self {
            rt,
            cfg,
            tx,
            in_flight: Default::default(),
            history: Default::default(),
        };
        (s, rx)
    }

    /// Runs until the returned task is aborted.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    fn labels(&self) -> Vec<String> {
        let mut l = vec![labels::SCENARIO_ID.to_owned()];
        l.extend(self.cfg.label_filters.iter().cloned());
        l
    }

    pub async fn run(self) {
        let me = Arc::new(self);
        let mut since: Option<i64> = None;
        loop {
            let filters = HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                ("event".to_owned(), vec!["die".to_owned(), "oom".to_owned()]),
                ("label".to_owned(), me.labels()),
            ]);
            let opts = EventsOptions {
                since: since.map(|s| s.to_string()),
                until: None,
                filters: Some(filters),
            };
            let mut events = me.rt.docker().events(Some(opts));
            // Subscribed first, then scan: a death between the two is seen by one or the other.
            me.clone().recover().await;
            while let Some(ev) = events.next().await {
                let Ok(ev) = ev else { break };
                since = ev.time.or(since);
                let action = ev.action.as_deref().unwrap_or_default();
                let Some(actor) = ev.actor else { continue };
                let (Some(id), attrs) = (actor.id, actor.attributes.unwrap_or_default()) else {
                    continue;
                };
                let scenario = attrs.get(labels::SCENARIO_ID).cloned().unwrap_or_default();
                if action == "oom" {
                    metrics::counter!("forge_container_oom_total", "service" => "forge_runtime")
                        .increment(1);
                    continue;
                }
                tokio::spawn(me.clone().on_death(id, scenario));
            }
            // Stream ended (daemon restart, timeout): reconnect after a pause.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Revives stopped containers of labs that are still alive.
    async fn recover(self: Arc<Self>) {
        let filters = HashMap::from([
            ("label".to_owned(), self.labels()),
            (
                "status".to_owned(),
                vec!["exited".to_owned(), "dead".to_owned()],
            ),
        ]);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let Ok(stopped) = self.rt.docker().list_containers(Some(opts)).await else {
            return;
        };
        for c in stopped {
            let scenario = c
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::SCENARIO_ID))
                .cloned()
                .unwrap_or_default();
            if let Some(id) = c.id {
                tokio::spawn(self.clone().on_death(id, scenario));
            }
        }
    }

    fn lab_alive(&self, scenario: &str) -> bool {
        let ns = scenario
            .strip_prefix("scn-")
            .map(|h| format!("forge_scn_{h}"));
        !self.rt.is_tearing_down(scenario) && ns.is_some_and(|ns| netns::namespace_exists(&ns))
    }

    async fn on_death(self: Arc<Self>, id: String, scenario: String) {
        if !self.lab_alive(&scenario) {
            return;
        }
        // One recovery per container at a time; deaths during it are its own doing.
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone())
        {
            return;
        }
        self.recover_container(&id, &scenario).await;
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    async fn recover_container(&self, id: &str, scenario: &str) {
        let docker = self.rt.docker();
        let name = match docker.inspect_container(id, None).await {
            Ok(info) if info.state.as_ref().and_then(|s| s.running) == Some(true) => return,
            Ok(info) => info
                .config
                .and_then(|c| c.labels)
                .and_then(|mut l| l.remove(labels::CONTAINER))
                .unwrap_or_default(),
            Err(_) => return, // removed: a teardown, not a crash
        };
        if self.crash_looping(id) {
            return self.fail(
                scenario,
                &name,
                format!(
                    "container {name} crash-looped: more than {} restarts in {:?}",
                    self.cfg.max_restarts, self.cfg.window
                ),
            );
        }
        let mut last = String::new();
        for attempt in 1..=self.cfg.max_attempts {
            if !self.lab_alive(scenario) {
                return;
            }
            if attempt > 1 {
                tokio::time::sleep(self.cfg.backoff * attempt).await;
                // A half-revived container is stopped so the next attempt starts clean.
                let _ = docker
                    .kill_container(id, None::<bollard::query_parameters::KillContainerOptions>)
                    .await;
            }
            match revive(&self.rt, id).await {
                Ok(()) => {
                    metrics::counter!("forge_container_restarts_total", "service" => "forge_runtime").increment(1);
                    tracing::info!(scenario, container = %name, attempt, "lab container restarted and re-plumbed");
                    let _ = self.tx.send(LabEvent::Restarted {
                        scenario_id: scenario.into(),
                        container: name.clone(),
                        attempt,
                    });
                    return;
                }
                Err(e) => {
                    if let crate::RuntimeError::Docker { .. } = &e {
                        // Gone in the meantime (teardown racing us) is not a failure.
                        if docker
                            .inspect_container(id, None)
                            .await
                            .err()
                            .is_some_and(|e| status_of(&e) == Some(404))
                        {
                            return;
                        }
                    }
                    tracing::warn!(scenario, container = %name, attempt, error = %e, "restart failed");
                    last = e.to_string();
                }
            }
        }
        if self.lab_alive(scenario) {
            self.fail(
                scenario,
                &name,
                format!(
                    "container {name} could not be restarted after {} attempts: {last}",
                    self.cfg.max_attempts
                ),
            );
        }
    }

    fn crash_looping(&self, id: &str) -> bool {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let deaths = h.entry(id.to_owned()).or_default();
        deaths.retain(|t| t.elapsed() < self.cfg.window);
        deaths.push(Instant::now());
        deaths.len() as u32 > self.cfg.max_restarts
    }

    fn fail(&self, scenario: &str, container: &str, reason: String) {
        metrics::counter!("forge_lab_failures_total", "service" => "forge_runtime").increment(1);
        tracing::error!(scenario, container, %reason, "lab failed");
        let _ = self.tx.send(LabEvent::Failed {
            scenario_id: scenario.into(),
            container: container.into(),
            reason,
        });
    }
}
