//! Warm pools (docs/design.md §5, §8): labs of a template launched, set up and healthy ahead
//! of time on this host, so that a spawn finds its lab already running.
//!
//! - **Refill**: every tick, and once claims pause (half a second without one, at most three
//!   seconds after a claim, so a burst is not slowed by its refill), each pooled template is topped up to
//!   its size with labs launched under a fresh scenario id, labelled [`POOL_LABEL`] and with no
//!   tenant, and then entered in the store's pool; refills launch with at most half the host's
//!   launch permits, so a learner's cold spawn never queues behind them. Pool labs count against the host's capacity,
//!   never against a tenant's quota: a refill leaves at least one slot free of learners' labs
//!   and pool labs together, and a cold spawn that finds the host full of them evicts the
//!   oldest pool lab, so pools never keep a spawn of another template waiting. A template whose launch fails is retried
//!   after a growing pause, not every tick.
//! - **Claim**: the front door takes a lab from the store, creates the scenario with the lab's
//!   id and starts it (`running` on this host) before it answers; `spawn.request` names this
//!   host, which takes the lab over: slot, `creating` and `running` audited, timer,
//!   `scenario.created` — the tail of a cold spawn. The learner's clock starts at the spawn,
//!   and the lab keeps nothing from its time in the pool but its age.
//! - **Drain**: a lab whose template left the configuration or changed (another digest) leaves
//!   the pool and is torn down; so is a lab the engine reports broken, and a lab taken by a
//!   spawn that never created its scenario (after a grace period).
//! - **Restart**: `recover` empties this host's pool in the store and removes the labs; the
//!   refill then starts over (a lab that outlived a crash is not trusted).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use forge_core::template::ScenarioTemplate;
use forge_core::{ScenarioId, ScenarioStatus};
use forge_runtime::LabSpec;
use forge_store::{ScenarioRecord, WarmLab};
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::task::JoinHandle;

use super::{Orchestrator, OrchestratorError};

/// The label that marks a warm lab's containers, with its template's name.
pub const POOL_LABEL: &str = "forge.pool";

/// How long a lab taken from the pool may stay without its scenario before it is removed (the
/// spawn that took it failed or died between taking it and storing the scenario).
const UNCLAIMED_GRACE: Duration = Duration::from_secs(30);

/// A refill after claims waits for this long without a claim, and no longer than the max.
const REFILL_QUIET: Duration = Duration::from_millis(500);
const REFILL_QUIET_MAX: Duration = Duration::from_secs(3);

/// Pause after a failed launch of a template's pool lab, doubled per failure up to the max.
const BACKOFF_FIRST: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Where a pool lab of this host is.
#[derive(Debug, Clone)]
enum Stage {
    Launching,
    Ready {
        network_id: String,
        containers: Vec<String>,
    },
    /// Gone from the store's pool without a scenario yet (seen first then).
    Unclaimed {
        network_id: String,
        containers: Vec<String>,
        since: Instant,
    },
}

#[derive(Debug, Clone)]
struct PoolLab {
    template: String,
    stage: Stage,
}

/// This host's pools: sizes, the labs it launched for them, failure backoff.
#[derive(Default)]
pub(crate) struct Pools {
    labs: Mutex<HashMap<ScenarioId, PoolLab>>,
    backoff: Mutex<HashMap<String, (Instant, Duration)>>,
    wake: Notify,
}

impl Pools {
    fn labs(&self) -> std::sync::MutexGuard<'_, HashMap<ScenarioId, PoolLab>> {
        self.labs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `id` is one of this host's pool labs (not yet adopted).
    pub(crate) fn contains(&self, id: &ScenarioId) -> bool {
        self.labs().contains_key(id)
    }

    /// Takes `id` out of the pool for adoption: its lab, once, to whoever asks first.
    fn take(&self, id: &ScenarioId) -> Option<(String, Vec<String>)> {
        let mut labs = self.labs();
        match labs.get(id).map(|l| l.stage.clone()) {
            Some(Stage::Ready {
                network_id,
                containers,
            })
            | Some(Stage::Unclaimed {
                network_id,
                containers,
                ..
            }) => {
                labs.remove(id);
                Some((network_id, containers))
            }
            _ => None,
        }
    }

    fn in_backoff(&self, template: &str) -> bool {
        let b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        b.get(template)
            .is_some_and(|(until, _)| Instant::now() < *until)
    }

    fn launch_failed(&self, template: &str) {
        let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let next = b
            .get(template)
            .map_or(BACKOFF_FIRST, |(_, d)| (*d * 2).min(BACKOFF_MAX));
        b.insert(template.to_owned(), (Instant::now() + next, next));
    }

    fn launch_worked(&self, template: &str) {
        self.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(template);
    }
}

impl Orchestrator {
    fn pools(&self) -> &Pools {
        &self.inner.pools
    }

    /// Whether `id` is a pool lab of this host (reconcile leaves those alone).
    pub(crate) fn is_pool_lab(&self, id: &ScenarioId) -> bool {
        self.pools().contains(id)
    }

    /// Keeps the pools filled every tick and after every claim, until `shutdown`.
    pub(crate) fn run_pools(&self, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let this = self.clone();
        let tick = self.host().tick();
        tokio::spawn(async move {
            if this.deps().config.pools.is_empty() {
                return;
            }
            loop {
                if let Err(e) = this.tend_pools().await {
                    tracing::warn!(error = %e, "cannot tend the warm pools");
                }
                let claimed = tokio::select! {
                    _ = this.pools().wake.notified() => true,
                    _ = tokio::time::sleep(tick) => false,
                    _ = shutdown.wait_for(|s| *s) => return,
                };
                if claimed && !this.claims_paused(&mut shutdown).await {
                    return;
                }
            }
        })
    }

    /// After a claim: waits until claims pause for [`REFILL_QUIET`] (at most
    /// [`REFILL_QUIET_MAX`]), so a burst of spawns is served from the pool without the refill's
    /// launches competing with it for the host's CPU. `false` on shutdown.
    async fn claims_paused(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let deadline = tokio::time::Instant::now() + REFILL_QUIET_MAX;
        loop {
            let paused = tokio::select! {
                _ = self.pools().wake.notified() => false,
                _ = tokio::time::sleep(REFILL_QUIET) => true,
                _ = tokio::time::sleep_until(deadline) => true,
                _ = shutdown.wait_for(|s| *s) => return false,
            };
            if paused {
                return true;
            }
        }
    }

    /// One pass: drain what is stale, settle labs taken from the store, refill.
    pub async fn tend_pools(&self) -> Result<(), OrchestratorError> {
        let d = self.deps();
        let host = self.host().id.clone();
        let rows = d.store.list_warm(Some(&host)).await?;
        let current = |w: &WarmLab| {
            d.config.pools.contains_key(&w.template)
                && d.catalog
                    .get(&w.template)
                    .is_some_and(|e| e.digest == w.template_digest)
        };
        for w in rows.iter().filter(|w| !current(w)) {
            if d.store.remove_warm(&w.scenario_id).await? {
                tracing::info!(scenario_id = %w.scenario_id, template = %w.template,
                    "draining a warm lab of a changed or unpooled template");
                self.drop_pool_lab(&w.scenario_id).await;
            }
        }
        self.settle_taken(&rows).await?;

        let mut have: BTreeMap<&str, u32> = BTreeMap::new();
        for w in rows.iter().filter(|w| current(w)) {
            *have.entry(w.template.as_str()).or_default() += 1;
        }
        let launching: Vec<String> = self
            .pools()
            .labs()
            .values()
            .filter(|l| matches!(l.stage, Stage::Launching))
            .map(|l| l.template.clone())
            .collect();
        for (template, size) in &d.config.pools {
            let ready = have.get(template.as_str()).copied().unwrap_or(0);
            metrics::gauge!("forge_pool_ready", "template" => template.clone())
                .set(f64::from(ready));
            let mut count = ready + launching.iter().filter(|t| *t == template).count() as u32;
            while count < *size && !self.pools().in_backoff(template) {
                // Never the host's last free slot (learners' labs and pool labs together).
                let used = self.inner.slots.in_use() + self.pools().labs().len();
                if used + 1 >= self.host().capacity as usize {
                    return Ok(());
                }
                let Some(entry) = d.catalog.get(template) else {
                    break;
                };
                self.start_pool_lab(template, entry.template.clone(), entry.digest.clone());
                count += 1;
            }
        }
        Ok(())
    }

    /// Labs this host launched that the store's pool no longer lists: adopted here (nothing to
    /// do), taken by a spawn whose `spawn.request` reached another host (adopt now), or taken
    /// by a spawn that never stored its scenario (remove after the grace).
    async fn settle_taken(&self, rows: &[WarmLab]) -> Result<(), OrchestratorError> {
        let gone: Vec<(ScenarioId, Stage)> = self
            .pools()
            .labs()
            .iter()
            .filter(|(id, l)| {
                !matches!(l.stage, Stage::Launching) && !rows.iter().any(|w| &w.scenario_id == *id)
            })
            .map(|(id, l)| (id.clone(), l.stage.clone()))
            .collect();
        for (id, stage) in gone {
            match self.deps().store.get_any(&id).await? {
                Some(rec) if rec.status == ScenarioStatus::Pending || self.started_here(&rec) => {
                    let slot = self.inner.slots.gate().try_acquire_owned().ok();
                    self.adopt_warm(&id, slot).await?;
                }
                Some(_) => {
                    // Taken and already handled elsewhere (failed or ended): not ours to keep.
                    self.drop_pool_lab(&id).await;
                }
                None => {
                    let since = match &stage {
                        Stage::Unclaimed { since, .. } => *since,
                        Stage::Ready {
                            network_id,
                            containers,
                        } => {
                            let now = Instant::now();
                            if let Some(l) = self.pools().labs().get_mut(&id) {
                                l.stage = Stage::Unclaimed {
                                    network_id: network_id.clone(),
                                    containers: containers.clone(),
                                    since: now,
                                };
                            }
                            now
                        }
                        Stage::Launching => continue,
                    };
                    if since.elapsed() >= UNCLAIMED_GRACE {
                        tracing::info!(scenario_id = %id, "removing a warm lab taken by a spawn that never stored its scenario");
                        self.drop_pool_lab(&id).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Launches one pool lab of `template` in `slot`, in the background.
    fn start_pool_lab(&self, template: &str, t: Arc<ScenarioTemplate>, digest: String) {
        let id = ScenarioId::generate();
        self.pools().labs().insert(
            id.clone(),
            PoolLab {
                template: template.to_owned(),
                stage: Stage::Launching,
            },
        );
        let this = self.clone();
        let template = template.to_owned();
        tokio::spawn(async move {
            let started = Instant::now();
            match this.launch_pool_lab(&id, &template, t, digest).await {
                Ok(()) => {
                    this.pools().launch_worked(&template);
                    metrics::histogram!("forge_pool_refill_seconds", "template" => template)
                        .record(started.elapsed().as_secs_f64());
                }
                Err(why) => {
                    tracing::warn!(scenario_id = %id, template = %template, error = %why,
                        "cannot launch a warm lab; retrying later");
                    metrics::counter!("forge_pool_launch_failures_total", "template" => template.clone())
                        .increment(1);
                    this.pools().launch_failed(&template);
                    this.drop_pool_lab(&id).await;
                }
            }
        });
    }

    async fn launch_pool_lab(
        &self,
        id: &ScenarioId,
        template: &str,
        t: Arc<ScenarioTemplate>,
        digest: String,
    ) -> Result<(), String> {
        let d = self.deps();
        // The refills' share first, so they never hold every launch permit.
        let _share = self.inner.pool_launches.acquire().await;
        let _permit = self.inner.launches.acquire().await;
        // No tenant: the lab is nobody's until a spawn takes it (the store says whose it is).
        let mut spec = LabSpec::new(id.clone(), "", (*t).clone()).with_label(POOL_LABEL, template);
        for (k, v) in &d.config.labels {
            spec = spec.with_label(k, v);
        }
        let handle =
            match tokio::time::timeout(d.config.launch_timeout, d.runtime.launch(spec)).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => return Err(format!("lab launch failed: {e}")),
                Err(_) => return Err("lab launch timed out".into()),
            };
        let containers: Vec<String> = handle.containers.keys().cloned().collect();
        {
            let mut labs = self.pools().labs();
            let Some(lab) = labs.get_mut(id) else {
                return Err("the pool lab was dropped while it launched".into());
            };
            lab.stage = Stage::Ready {
                network_id: handle.network_id.clone(),
                containers: containers.clone(),
            };
        }
        let warm = WarmLab {
            scenario_id: id.clone(),
            template: template.to_owned(),
            template_digest: digest,
            host_id: self.host().id.clone(),
            network_id: handle.network_id,
            containers,
            ready_at: Utc::now(),
        };
        d.store
            .put_warm(&warm)
            .await
            .map_err(|e| format!("cannot enter the lab in the pool: {e}"))?;
        tracing::info!(scenario_id = %id, template, "warm lab ready");
        Ok(())
    }

    /// Removes a pool lab of this host: out of the map, torn down.
    async fn drop_pool_lab(&self, id: &ScenarioId) {
        self.pools().labs().remove(id);
        if let Err(e) = self.deps().runtime.teardown(id).await {
            tracing::warn!(scenario_id = %id, error = %e, "removing a warm lab");
        }
        self.pools().wake.notify_one();
    }

    /// Before a cold launch: when learners' labs and pool labs together exceed the capacity,
    /// the oldest ready pool lab that no spawn took first makes room.
    pub(crate) async fn make_room(&self) {
        let capacity = self.host().capacity as usize;
        while self.inner.slots.in_use() + self.pools().labs().len() > capacity {
            let ready: Vec<ScenarioId> = self
                .pools()
                .labs()
                .iter()
                .filter(|(_, l)| matches!(l.stage, Stage::Ready { .. }))
                .map(|(id, _)| id.clone())
                .collect();
            let mut evicted = false;
            for id in ready {
                if matches!(self.deps().store.remove_warm(&id).await, Ok(true)) {
                    tracing::info!(scenario_id = %id, "evicting a warm lab to make room for a spawn");
                    self.drop_pool_lab(&id).await;
                    evicted = true;
                    break;
                }
            }
            if !evicted {
                return;
            }
        }
    }

    /// A pool lab the engine reports broken leaves the pool (when no spawn took it first: an
    /// adopted lab is the scenario's, and fails like one). `true` when `id` was a pool lab.
    pub(crate) async fn pool_lab_failed(&self, id: &ScenarioId) -> bool {
        if !self.is_pool_lab(id) {
            return false;
        }
        if matches!(self.deps().store.remove_warm(id).await, Ok(true)) {
            tracing::warn!(scenario_id = %id, "a warm lab broke; replacing it");
            self.drop_pool_lab(id).await;
            return true;
        }
        false
    }

    /// Takes over the warm lab a spawn took (`id` is both). Usually the front door started the
    /// scenario already (`pending → running` on this host, in the spawn's answer path); else
    /// (it could not) this is the cold path without the launch: still pending, training gate,
    /// then `pending → running` in one store step. Either way this host then holds a slot for
    /// it, audits `creating` and `running` like a cold lab, arms its timer and announces it.
    /// Falls back to a cold launch when this host has no such lab (it restarted, and `recover`
    /// removed it).
    pub(crate) async fn adopt_warm(
        &self,
        id: &ScenarioId,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(), OrchestratorError> {
        let Some((network_id, containers)) = self.pools().take(id) else {
            return match slot {
                Some(slot) => self.spawn_in(id, slot).await,
                None => Ok(()),
            };
        };
        let started = Instant::now();
        // The scenario holds a slot from now on (a host restarted with less capacity may have
        // none to give: the lab runs on without one, as after a recovery).
        if let Some(slot) = slot {
            self.inner.slots.hold(id, slot);
        }
        self.pools().wake.notify_one();
        let d = self.deps();
        let rec = match d.store.get_any(id).await? {
            // The front door started it (the usual case): the store step is done.
            Some(rec) if self.started_here(&rec) => rec,
            _ => {
                let Some(rec) = self.pending(id).await? else {
                    return self.drop_unless_active(id).await;
                };
                // Denied: `fail` tore the lab down.
                if self.gate(&rec).await?.is_none() {
                    return Ok(());
                }
                let lab = WarmLab {
                    scenario_id: id.clone(),
                    template: rec.template.clone(),
                    template_digest: String::new(),
                    host_id: self.host().id.clone(),
                    network_id: network_id.clone(),
                    containers: containers.clone(),
                    ready_at: Utc::now(),
                };
                match d.store.start_warm(&lab).await {
                    Ok(r) => r,
                    Err(e) if super::lost_race(&e) => return self.drop_unless_active(id).await,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        self.audit_transition(&rec, ScenarioStatus::Creating, None);
        self.audit_transition(&rec, ScenarioStatus::Running, None);
        self.announce_running(&rec, &network_id, containers).await?;
        metrics::counter!("forge_pool_adoptions_total", "template" => rec.template.clone())
            .increment(1);
        metrics::histogram!("forge_pool_adopt_seconds").record(started.elapsed().as_secs_f64());
        // Off the answer's path: the gauges read every active scenario.
        let this = self.clone();
        tokio::spawn(async move { this.refresh_gauges().await });
        Ok(())
    }

    /// Whether `rec`, a scenario on one of this host's warm labs, was started by the front door:
    /// it is `running` here (this host has yet to take it over).
    fn started_here(&self, rec: &ScenarioRecord) -> bool {
        rec.status == ScenarioStatus::Running
            && rec.host_id.as_deref() == Some(self.host().id.as_str())
    }

    /// After a lost race for a taken lab: keep it if its scenario runs here, else remove it.
    async fn drop_unless_active(&self, id: &ScenarioId) -> Result<(), OrchestratorError> {
        let active = self.deps().store.get_any(id).await?.is_some_and(|r| {
            matches!(r.status, ScenarioStatus::Creating | ScenarioStatus::Running)
                && r.host_id.as_deref() == Some(self.host().id.as_str())
        });
        if !active {
            self.drop_pool_lab(id).await;
        }
        Ok(())
    }

    /// At start-up: this host's pool entries leave the store (their labs are then orphans that
    /// `recover` removes). Returns their ids.
    pub(crate) async fn empty_pool_at_start(&self) -> Result<Vec<String>, OrchestratorError> {
        let d = self.deps();
        let mut removed = Vec::new();
        for w in d.store.list_warm(Some(&self.host().id)).await? {
            if d.store.remove_warm(&w.scenario_id).await? {
                removed.push(w.scenario_id.to_string());
            }
        }
        Ok(removed)
    }
}
