//! This orchestrator as one lab host among many (docs/distributed.md, Lab hosts).
//!
//! - **Capacity**: the host pulls `spawn.request` only while it has a free slot (the consumer's
//!   admission gate); a claimed lab keeps its slot until it ends, so a full host leaves new
//!   spawns `pending` on the bus for hosts with room.
//! - **Ownership**: a scenario's `host_id` is written by the claim (`pending → creating`);
//!   every lab container carries the `forge.host` label. Only the owner touches a lab.
//! - **Lease**: the host renews its lease every tick. Every host also sweeps: an active scenario
//!   whose host's lease ran out is failed with a reason naming the host (its lab is not torn
//!   down from here: it lives on another engine, and the owner reaps it if it ever returns).
//! - **Reconcile**: each tick the host removes labs of its own that belong to no scenario it
//!   still runs (ended by another replica, failed by a sweep while this host was away) and
//!   frees their slots.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, ScenarioStatus};
use forge_store::{LabHost, ScenarioRecord};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use super::{Orchestrator, OrchestratorError};

/// The container label naming the lab host that owns a lab.
pub const HOST_LABEL: &str = "forge.host";

/// Statuses in which a scenario holds a lab (or is about to).
const ACTIVE: [ScenarioStatus; 2] = [ScenarioStatus::Creating, ScenarioStatus::Running];

/// Who this lab host is and how much it takes.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Unique among the platform's lab hosts (letters, digits, `-`, `_`).
    pub id: String,
    /// Where this host's worker answers lab actions; other workers forward to it.
    pub url: String,
    /// Where this host's playbook runner answers; other runners forward to it.
    pub runner_url: String,
    /// Most labs at once; more wait `pending` on the bus.
    pub capacity: u32,
    /// A host that has not renewed its lease for this long has lost its labs.
    pub lease: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            id: "local".into(),
            url: String::new(),
            runner_url: String::new(),
            capacity: 20,
            lease: Duration::from_secs(30),
        }
    }
}

impl HostConfig {
    /// Checks the id (it names durable consumers and container labels) and the numbers.
    pub fn validate(&self) -> Result<(), String> {
        let ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(format!(
                "host id `{}` must be 1 to 64 letters, digits, `-` or `_`",
                self.id
            ));
        }
        if self.capacity == 0 {
            return Err("host capacity must be at least 1 lab".into());
        }
        if self.lease < Duration::from_secs(1) {
            return Err("host lease must be at least 1s".into());
        }
        Ok(())
    }

    /// How often the lease is renewed and the host reconciled: a third of the lease (so two
    /// renewals may be lost before it runs out), at most 2 s (so freed slots come back soon).
    pub fn tick(&self) -> Duration {
        (self.lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }
}

/// The host's slots and the labs holding them.
pub(crate) struct Slots {
    free: Arc<Semaphore>,
    held: Mutex<HashMap<ScenarioId, OwnedSemaphorePermit>>,
    pub(crate) started_at: DateTime<Utc>,
}

impl Slots {
    pub(crate) fn new(capacity: u32) -> Self {
        Self {
            free: Arc::new(Semaphore::new(capacity as usize)),
            held: Mutex::default(),
            started_at: Utc::now(),
        }
    }

    /// The gate of the `spawn.request` consumer.
    pub(crate) fn gate(&self) -> Arc<Semaphore> {
        self.free.clone()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<ScenarioId, OwnedSemaphorePermit>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `id` keeps `permit` until [`Slots::release`].
    pub(crate) fn hold(&self, id: &ScenarioId, permit: OwnedSemaphorePermit) {
        self.held().insert(id.clone(), permit);
    }

    /// Takes a free slot for `id` if there is one (a lab adopted at start-up; when the host
    /// restarted with less capacity, the lab runs on without one).
    pub(crate) fn try_hold(&self, id: &ScenarioId) {
        if let Ok(p) = self.free.clone().try_acquire_owned() {
            self.hold(id, p);
        }
    }

    pub(crate) fn release(&self, id: &ScenarioId) {
        self.held().remove(id);
    }

    fn holders(&self) -> Vec<ScenarioId> {
        self.held().keys().cloned().collect()
    }

    /// Labs holding a slot.
    pub fn in_use(&self) -> usize {
        self.held().len()
    }
}

impl Orchestrator {
    pub(crate) fn host(&self) -> &HostConfig {
        &self.deps().config.host
    }

    /// Whether this host owns `rec`'s lab (a scenario without a host predates lab hosts and
    /// belongs to whoever runs it: there was only one).
    pub(crate) fn owns(&self, rec: &ScenarioRecord) -> bool {
        rec.host_id.as_deref().is_none_or(|h| h == self.host().id)
    }

    /// This lab host's id.
    pub fn host_id(&self) -> &str {
        &self.host().id
    }

    /// Labs on this host that hold a slot.
    pub fn labs_in_use(&self) -> usize {
        self.inner.slots.in_use()
    }

    /// Renews the lease, sweeps expired hosts and reconciles this host's labs every
    /// [`HostConfig::tick`] until `shutdown`.
    pub(crate) fn run_host(&self, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let this = self.clone();
        crate::spawn_every(self.host().tick(), shutdown, move || {
            let this = this.clone();
            async move {
                if let Err(e) = this.renew_lease().await {
                    tracing::warn!(error = %e, host = %this.host().id, "cannot renew the host lease");
                }
                if let Err(e) = this.sweep_expired_hosts().await {
                    tracing::warn!(error = %e, "cannot sweep expired lab hosts");
                }
                if let Err(e) = this.reconcile().await {
                    tracing::warn!(error = %e, "cannot reconcile this host's labs");
                }
            }
        })
    }

    pub(crate) async fn renew_lease(&self) -> Result<(), OrchestratorError> {
        let h = self.host();
        let now = Utc::now();
        let lease = chrono::Duration::from_std(h.lease).unwrap_or(chrono::Duration::seconds(30));
        self.deps()
            .store
            .renew_lease(&LabHost {
                host_id: h.id.clone(),
                url: h.url.clone(),
                runner_url: h.runner_url.clone(),
                capacity: h.capacity,
                started_at: self.inner.slots.started_at,
                heartbeat_at: now,
                lease_expires_at: now + lease,
            })
            .await?;
        Ok(())
    }

    /// Fails the active scenarios of every other host whose lease ran out.
    pub async fn sweep_expired_hosts(&self) -> Result<Vec<ScenarioId>, OrchestratorError> {
        let d = self.deps();
        let now = Utc::now();
        let hosts = d.store.lab_hosts().await?;
        for h in &hosts {
            metrics::gauge!("forge_host_lease_expired", "host" => h.host_id.clone())
                .set(if h.expired(now) { 1.0 } else { 0.0 });
        }
        let expired: HashMap<String, LabHost> = hosts
            .into_iter()
            .filter(|h| h.host_id != self.host().id && h.expired(now))
            .map(|h| (h.host_id.clone(), h))
            .collect();
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let mut failed = Vec::new();
        for rec in d.store.list_by_status(&ACTIVE).await? {
            let Some(host) = rec.host_id.as_deref().and_then(|h| expired.get(h)) else {
                continue;
            };
            let why = format!(
                "lab host `{}` stopped renewing its lease (last heartbeat {}, lease expired {}); \
                 its lab is lost",
                host.host_id,
                host.heartbeat_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                host.lease_expires_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            if self.fail(&rec, &ACTIVE, &why).await.is_ok() {
                failed.push(rec.scenario_id.clone());
            }
        }
        Ok(failed)
    }

    /// Removes this host's labs that no scenario it runs needs any more, and frees their slots.
    pub async fn reconcile(&self) -> Result<Vec<ScenarioId>, OrchestratorError> {
        let d = self.deps();
        let host = self.host().id.clone();
        let mine: Vec<ScenarioRecord> = d
            .store
            .list_by_status(&ACTIVE)
            .await?
            .into_iter()
            .filter(|r| r.host_id.as_deref() == Some(host.as_str()))
            .collect();
        for status in ACTIVE {
            let n = mine.iter().filter(|r| r.status == status).count();
            metrics::gauge!("forge_labs", "host" => host.clone(), "status" => status.as_str())
                .set(n as f64);
        }
        let mine: BTreeSet<ScenarioId> = mine.into_iter().map(|r| r.scenario_id).collect();
        // The snapshot above may predate a claim made since: look again before acting.
        for id in self.inner.slots.holders() {
            if !mine.contains(&id) && !self.still_mine(&id).await? {
                self.inner.slots.release(&id);
            }
        }
        let labs = match d.runtime.list_labs().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list labs to reconcile");
                return Ok(Vec::new());
            }
        };
        let (mut removed, mut stuck) = (Vec::new(), 0u32);
        for lab in labs.iter().filter(|l| self.labelled_mine(l)) {
            let Ok(id) = lab.scenario_id.parse::<ScenarioId>() else {
                continue;
            };
            if mine.contains(&id) || self.is_pool_lab(&id) || self.still_mine(&id).await? {
                continue;
            }
            self.inner.slots.release(&id);
            self.cancel_timer(&id);
            match d.runtime.teardown(&id).await {
                Ok(_) => {
                    tracing::info!(scenario_id = %id, "removed a lab this host no longer owns");
                    removed.push(id);
                }
                Err(e) => {
                    stuck += 1;
                    tracing::warn!(error = %e, scenario_id = %id, "removing a stale lab");
                }
            }
        }
        // Labs without a live scenario that are still there after this pass: a leak.
        metrics::gauge!("forge_lab_orphans", "host" => host).set(f64::from(stuck));
        Ok(removed)
    }

    /// Whether `id` is active on this host, read now.
    async fn still_mine(&self, id: &ScenarioId) -> Result<bool, OrchestratorError> {
        Ok(self.deps().store.get_any(id).await?.is_some_and(|r| {
            ACTIVE.contains(&r.status) && r.host_id.as_deref() == Some(self.host().id.as_str())
        }))
    }

    /// Whether a lab on the engine is this host's: every configured label matches (the host
    /// label is one), so hosts sharing an engine never touch each other's labs. A lab without
    /// a host label predates lab hosts, like a scenario without a `host_id` (see `owns`).
    pub(crate) fn labelled_mine(&self, lab: &forge_runtime::LabSummary) -> bool {
        !lab.containers.is_empty()
            && self.deps().config.labels.iter().all(|(k, v)| {
                lab.labels.get(k) == Some(v) || (k == HOST_LABEL && !lab.labels.contains_key(k))
            })
    }
}
