//! Keeps labs whole (docs/design.md §4): lab containers run with restart policy `no` because a
//! Docker restart gives a container a fresh network namespace without our veths. The
//! supervisor watches the runtime's [`RuntimeEvent`]s; a container that dies while its lab is
//! alive ([`Runtime::lab_alive`]) is revived ([`Runtime::revive`]: started again and
//! re-plumbed from its labels), counted in `forge_container_restarts_total`. When that fails
//! `max_attempts` times, or the container crash-loops, the lab is reported failed with a
//! reason on the event channel (`forge_lab_failures_total`), never left silently disconnected.
//! OOM kills are counted in `forge_container_oom_total`.
//!
//! It also converges after the engine (or this process) restarted: on start and after every
//! reconnect of the event stream it subscribes first, then revives the stopped containers of
//! live labs, so a death between the two is seen by one or the other.
//!
//! It only speaks to the [`Runtime`] trait, so it supervises any backend (the fake included).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forge_core::ScenarioId;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Runtime, RuntimeError, RuntimeEvent};

/// Pause before re-subscribing after the event stream ended or could not be opened.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

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
    rt: Arc<dyn Runtime>,
    cfg: SupervisorConfig,
    tx: mpsc::UnboundedSender<LabEvent>,
    /// Containers (`scenario/container`) being recovered right now.
    in_flight: Mutex<HashSet<String>>,
    /// Recent deaths per container, for crash-loop detection.
    history: Mutex<HashMap<String, Vec<Instant>>>,
}

impl Supervisor {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        cfg: SupervisorConfig,
    ) -> (Self, mpsc::UnboundedReceiver<LabEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Self {
            rt: runtime,
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

    pub async fn run(self) {
        let me = Arc::new(self);
        loop {
            match me.rt.events(&me.cfg.label_filters).await {
                Ok(mut events) => {
                    // Subscribed first, then scan: a death between the two is seen by one or
                    // the other.
                    me.clone().recover().await;
                    while let Some(ev) = events.next().await {
                        match ev {
                            RuntimeEvent::OomKilled { .. } => {
                                metrics::counter!("forge_container_oom_total", "service" => "forge_runtime")
                                    .increment(1);
                            }
                            RuntimeEvent::Died {
                                scenario_id,
                                container,
                            } => {
                                tokio::spawn(me.clone().on_death(scenario_id, container));
                            }
                        }
                    }
                    tracing::debug!("runtime event stream ended; resubscribing");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to runtime events"),
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }

    /// Revives stopped containers of labs that are still alive.
    async fn recover(self: Arc<Self>) {
        match self.rt.stopped_containers(&self.cfg.label_filters).await {
            Ok(stopped) => {
                for c in stopped {
                    tokio::spawn(self.clone().on_death(c.scenario_id, c.container));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list stopped lab containers"),
        }
    }

    async fn on_death(self: Arc<Self>, scenario: String, container: String) {
        let Ok(id) = scenario.parse::<ScenarioId>() else {
            return;
        };
        if !self.rt.lab_alive(&id).await {
            return;
        }
        let key = format!("{scenario}/{container}");
        // One recovery per container at a time; deaths during it are its own doing.
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            return;
        }
        let outcome = self.recover_container(&id, &container, &key).await;
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        // Reported only once the container is out of `in_flight`, so a death right after the
        // report is recovered again rather than taken for our own doing.
        if let Some(ev) = outcome {
            let _ = self.tx.send(ev);
        }
    }

    /// Brings one container back; `None` when there was nothing to report (it runs, or its lab
    /// went away meanwhile).
    async fn recover_container(
        &self,
        scenario: &ScenarioId,
        name: &str,
        key: &str,
    ) -> Option<LabEvent> {
        match self.rt.container_state(scenario, name).await {
            Ok(s) if s.is_running() => return None,
            Ok(_) => {}
            Err(_) => return None, // removed: a teardown, not a crash
        }
        let sid = scenario.as_str();
        if self.crash_looping(key) {
            return Some(self.fail(
                sid,
                name,
                format!(
                    "container {name} crash-looped: more than {} restarts in {:?}",
                    self.cfg.max_restarts, self.cfg.window
                ),
            ));
        }
        let mut last = String::new();
        for attempt in 1..=self.cfg.max_attempts {
            if !self.rt.lab_alive(scenario).await {
                return None;
            }
            if attempt > 1 {
                tokio::time::sleep(self.cfg.backoff * attempt).await;
                // A half-revived container is stopped so the next attempt starts clean.
                let _ = self.rt.kill(scenario, name).await;
            }
            match self.rt.revive(scenario, name).await {
                Ok(()) => {
                    // `service`: the lab container's name in its template (router, web, …).
                    metrics::counter!("forge_container_restarts_total", "service" => name.to_owned())
                        .increment(1);
                    tracing::info!(scenario = sid, container = %name, attempt, "lab container restarted and re-plumbed");
                    return Some(LabEvent::Restarted {
                        scenario_id: sid.into(),
                        container: name.into(),
                        attempt,
                    });
                }
                Err(e) => {
                    // Gone in the meantime (teardown racing us) is not a failure.
                    if let Err(RuntimeError::NoSuchContainer { .. }) =
                        self.rt.container_state(scenario, name).await
                    {
                        return None;
                    }
                    tracing::warn!(scenario = sid, container = %name, attempt, error = %e, "restart failed");
                    last = e.to_string();
                }
            }
        }
        if !self.rt.lab_alive(scenario).await {
            return None;
        }
        Some(self.fail(
            sid,
            name,
            format!(
                "container {name} could not be restarted after {} attempts: {last}",
                self.cfg.max_attempts
            ),
        ))
    }

    fn crash_looping(&self, key: &str) -> bool {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let deaths = h.entry(key.to_owned()).or_default();
        deaths.retain(|t| t.elapsed() < self.cfg.window);
        deaths.push(Instant::now());
        deaths.len() as u32 > self.cfg.max_restarts
    }

    /// Counts and logs a lab failure and gives the event reporting it.
    fn fail(&self, scenario: &str, container: &str, reason: String) -> LabEvent {
        metrics::counter!("forge_lab_failures_total", "service" => "forge_runtime").increment(1);
        tracing::error!(scenario, container, %reason, "lab failed");
        LabEvent::Failed {
            scenario_id: scenario.into(),
            container: container.into(),
            reason,
        }
    }
}
