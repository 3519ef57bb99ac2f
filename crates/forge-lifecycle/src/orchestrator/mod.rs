//! forge_orchestrator (:8083): the scenario state machine (docs/design.md §5).
//!
//! Consumes `spawn.request`: training gate → `creating` → lab launch through the runtime →
//! `running` → `scenario.created`, with a timer for `timeout_minutes` that publishes
//! `scenario.execute`. Consumes `scenario.scored`: tears the lab down → `completed` or
//! `timeout`. A lab the runtime cannot keep whole, a launch failure or a gate deny end as
//! `failed` with the reason; a charged scenario that fails before it ever ran is refunded.
//! Every transition is audited and counted.
//!
//! A message is acked only after the state change it causes is durable; a redelivered message
//! finds the scenario past `pending` and changes nothing, so it never builds a second lab.
//! On start, [`Orchestrator::recover`] makes store and host agree again after a crash.

mod admission;
mod api;
mod consumers;
mod host;
mod labs;
mod pools;
mod pools_api;
mod recover;
mod timers;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use forge_bus::messages::ScenarioCreated;
use forge_bus::{Bus, BusExt};
use forge_catalog::Catalog;
use forge_core::audit::{AuditEvent, AuditSink, Outcome};
use forge_core::template::ScenarioTemplate;
use forge_core::{ScenarioId, ScenarioStatus};
use forge_policy::PolicyEngine;
use forge_runtime::{LabSpec, Runtime};
use forge_store::{ScenarioRecord, Store, StoreError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::authz::ScenarioAccess;

pub use api::{ScenarioView, router};
pub use host::{HOST_LABEL, HostConfig};
pub use labs::{CheckView, LabRow, MAX_LAB_LIFETIME};
pub use pools::POOL_LABEL;
pub use pools_api::{PoolList, PoolView};
pub use recover::RecoverReport;

use admission::Admission;
use host::Slots;
use pools::Pools;

/// Who the orchestrator's audit events and decisions name.
const ACTOR: &str = "forge_orchestrator";

#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// A launch that takes longer fails the scenario.
    pub launch_timeout: Duration,
    /// Labs built at the same time; more wait their turn (the engine is the bottleneck).
    pub max_parallel_launches: usize,
    /// How long after expiry an evaluation may take before the lab is ended without a score.
    pub evaluation_grace: Duration,
    /// Extra labels on every lab container (a test run's id, for cleanup). The host label
    /// ([`HOST_LABEL`]) is added to them.
    pub labels: BTreeMap<String, String>,
    /// This lab host: id, capacity, lease.
    pub host: HostConfig,
    /// Warm pools: template name → labs kept launched and healthy for it on this host.
    pub pools: BTreeMap<String, u32>,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            launch_timeout: Duration::from_secs(180),
            max_parallel_launches: 8,
            evaluation_grace: Duration::from_secs(120),
            labels: BTreeMap::new(),
            host: HostConfig::default(),
            pools: BTreeMap::new(),
        }
    }
}

/// What the orchestrator is built from.
pub struct OrchestratorDeps {
    pub config: OrchestratorConfig,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub catalog: Arc<Catalog>,
    pub policy: Arc<dyn PolicyEngine>,
    pub runtime: Arc<dyn Runtime>,
    pub audit: Arc<dyn AuditSink>,
    pub access: ScenarioAccess,
}

/// The orchestrator; cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    deps: OrchestratorDeps,
    launches: Semaphore,
    /// Pool refills hold at most half the launch permits, so a learner's cold spawn never
    /// queues behind a refill (a burst of claims is followed by a burst of refills).
    pool_launches: Semaphore,
    slots: Slots,
    pools: Pools,
    timers: Mutex<HashMap<ScenarioId, tokio::task::AbortHandle>>,
}

/// Why handling a message failed in a way that deserves a redelivery.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("policy engine unavailable: {0}")]
    PolicyUnavailable(String),
    #[error("bus: {0}")]
    Bus(#[from] forge_bus::BusError),
}

impl Orchestrator {
    pub fn new(mut deps: OrchestratorDeps) -> Self {
        let launches = Semaphore::new(deps.config.max_parallel_launches.max(1));
        let pool_launches = Semaphore::new((deps.config.max_parallel_launches / 2).max(1));
        let host = deps.config.host.id.clone();
        deps.config.labels.insert(HOST_LABEL.to_owned(), host);
        let slots = Slots::new(deps.config.host.capacity);
        Self {
            inner: Arc::new(Inner {
                deps,
                launches,
                pool_launches,
                slots,
                pools: Pools::default(),
                timers: Mutex::default(),
            }),
        }
    }

    pub(crate) fn deps(&self) -> &OrchestratorDeps {
        &self.inner.deps
    }

    pub(crate) fn access(&self) -> &ScenarioAccess {
        &self.inner.deps.access
    }

    /// Takes a `pending` scenario to `running` (or `failed`) on this host, once a slot is
    /// free. Safe to call again for the same scenario: anything past `pending` is left alone.
    pub async fn handle_spawn(&self, id: &ScenarioId) -> Result<(), OrchestratorError> {
        let slot = self
            .inner
            .slots
            .gate()
            .acquire_owned()
            .await
            .expect("the slots semaphore is never closed");
        self.spawn_in(id, slot).await
    }

    /// [`Orchestrator::handle_spawn`] in the slot `slot`, which the lab keeps until it ends.
    pub(crate) async fn spawn_in(
        &self,
        id: &ScenarioId,
        slot: OwnedSemaphorePermit,
    ) -> Result<(), OrchestratorError> {
        match self.admit(id).await? {
            Admission::Admitted(rec, template) => {
                self.inner.slots.hold(id, slot);
                self.make_room().await;
                self.build(*rec, template).await
            }
            Admission::Denied | Admission::Skipped => Ok(()),
        }
    }

    /// Launches the lab of an admitted (`creating`) scenario and moves it to `running`.
    pub(crate) async fn build(
        &self,
        rec: ScenarioRecord,
        template: Arc<ScenarioTemplate>,
    ) -> Result<(), OrchestratorError> {
        let d = self.deps();
        let id = &rec.scenario_id;
        let _permit = self.inner.launches.acquire().await;
        let mut spec = LabSpec::new(id.clone(), rec.tenant_id.clone(), (*template).clone());
        for (k, v) in &d.config.labels {
            spec = spec.with_label(k, v);
        }
        let launched = tokio::time::timeout(d.config.launch_timeout, d.runtime.launch(spec)).await;
        let handle = match launched {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                let _ = d.runtime.teardown(id).await;
                return self
                    .fail(
                        &rec,
                        &[ScenarioStatus::Creating],
                        &format!("lab launch failed: {e}"),
                    )
                    .await;
            }
            Err(_) => {
                let _ = d.runtime.teardown(id).await;
                let why = format!(
                    "lab launch took longer than {}s",
                    d.config.launch_timeout.as_secs()
                );
                return self.fail(&rec, &[ScenarioStatus::Creating], &why).await;
            }
        };
        let containers: Vec<String> = handle.containers.keys().cloned().collect();
        metrics::histogram!("forge_lab_launch_seconds", "track" => rec.track.as_str())
            .record(handle.timings.total.as_secs_f64());
        self.go_running(rec, &handle.network_id, containers).await
    }

    /// `creating → running` of a scenario whose lab stands on this host (just launched, or
    /// a warm lab it took): records the lab, announces it, starts the timer.
    pub(crate) async fn go_running(
        &self,
        rec: ScenarioRecord,
        network_id: &str,
        containers: Vec<String>,
    ) -> Result<(), OrchestratorError> {
        let d = self.deps();
        let id = &rec.scenario_id;
        d.store
            .set_runtime_info(id, network_id, &containers)
            .await?;
        let rec = match d
            .store
            .transition(
                id,
                &[ScenarioStatus::Creating],
                ScenarioStatus::Running,
                None,
            )
            .await
        {
            Ok(r) => r,
            Err(e) if lost_race(&e) => {
                // Ended while we were building (DELETE): the lab must not outlive it.
                let _ = d.runtime.teardown(id).await;
                self.inner.slots.release(id);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.audit_transition(&rec, ScenarioStatus::Running, None);
        self.announce_running(&rec, network_id, containers).await?;
        self.refresh_gauges().await;
        Ok(())
    }

    /// A scenario that just became `running` on this host: `scenario.created`, its timer.
    pub(crate) async fn announce_running(
        &self,
        rec: &ScenarioRecord,
        network_id: &str,
        containers: Vec<String>,
    ) -> Result<(), OrchestratorError> {
        let id = &rec.scenario_id;
        let created = ScenarioCreated {
            scenario_id: id.clone(),
            tenant_id: rec.tenant_id.clone(),
            track: rec.track,
            template: rec.template.clone(),
            network_id: network_id.to_owned(),
            containers,
            expires_at: rec.expires_at,
        };
        self.deps().bus.publish_msg(&created).await?;
        self.arm_timer(rec);
        Ok(())
    }

    /// Marks the scenario failed (from one of `from`) with `why`, and makes sure no lab remains
    /// on this host; a lab on another host is that host's to remove (it reconciles).
    pub(crate) async fn fail(
        &self,
        rec: &ScenarioRecord,
        from: &[ScenarioStatus],
        why: &str,
    ) -> Result<(), OrchestratorError> {
        let d = self.deps();
        let id = &rec.scenario_id;
        let current = match d
            .store
            .transition(id, from, ScenarioStatus::Failed, Some(why))
            .await
        {
            Ok(r) => {
                tracing::info!(scenario_id = %id, reason = why, "scenario failed");
                self.audit_transition(rec, ScenarioStatus::Failed, Some(why));
                Some(r)
            }
            Err(e) if lost_race(&e) => d.store.get_any(id).await?,
            Err(e) => return Err(e.into()),
        };
        if self.owns(current.as_ref().unwrap_or(rec)) {
            self.end_here(id).await;
        }
        self.refresh_gauges().await;
        // Last, so a refund error never leaves a lab behind; a second `fail` retries it.
        match current {
            Some(cur) => self.refund_unstarted(&cur, why).await,
            None => Ok(()),
        }
    }

    /// Refunds the charge of a scenario that ended `failed` without ever running: the learner
    /// got no lab. The store writes the refund once (and queues it for the billing gateway when
    /// the charge went there), so failing a scenario twice refunds it once.
    async fn refund_unstarted(
        &self,
        rec: &ScenarioRecord,
        why: &str,
    ) -> Result<(), OrchestratorError> {
        if rec.status != ScenarioStatus::Failed || rec.started_at.is_some() {
            return Ok(());
        }
        // The stored reason: after a lost race it is the first failure's, not ours.
        let reason = rec.error.as_deref().unwrap_or(why);
        let refunded = self
            .deps()
            .store
            .refund(&rec.scenario_id, reason, Utc::now())
            .await?;
        let Some(r) = refunded.filter(|r| r.created) else {
            return Ok(());
        };
        let refund = &r.refund;
        tracing::info!(scenario_id = %rec.scenario_id, event_id = %refund.event_id,
            amount_cents = refund.amount_cents, "charge refunded: the lab never ran");
        self.deps().audit.record(
            AuditEvent::new(
                Utc::now(),
                "billing.refund",
                ACTOR,
                rec.scenario_id.as_str(),
                "refund",
                Outcome::Success,
            )
            .with_detail("tenant_id", refund.tenant_id.clone())
            .with_detail("request_id", refund.request_id.clone())
            .with_detail("event_id", refund.event_id.clone())
            .with_detail("amount_cents", refund.amount_cents)
            .with_detail("currency", refund.currency.clone())
            .with_detail("queued", r.queued)
            .with_detail("reason", reason),
        );
        Ok(())
    }

    /// This host's part of a lab's end: no timer, no lab, a free slot.
    async fn end_here(&self, id: &ScenarioId) {
        self.cancel_timer(id);
        if let Err(e) = self.deps().runtime.teardown(id).await {
            tracing::warn!(scenario_id = %id, error = %e, "teardown");
        }
        self.inner.slots.release(id);
    }

    /// Ends a running lab: teardown, then the final status. Used for scored scenarios and for
    /// timeouts whose evaluation never arrived.
    pub async fn finish(
        &self,
        id: &ScenarioId,
        to: ScenarioStatus,
        error: Option<&str>,
    ) -> Result<(), OrchestratorError> {
        let d = self.deps();
        let Some(rec) = d.store.get_any(id).await? else {
            return Ok(());
        };
        crate::authz::trace_scenario(&tracing::Span::current(), &rec);
        // The owner removes the lab first, so `completed` means the lab is gone; on another
        // host only the status moves, and the owner reconciles its lab away.
        if self.owns(&rec) {
            self.end_here(id).await;
        }
        match d
            .store
            .transition(id, &[ScenarioStatus::Running], to, error)
            .await
        {
            Ok(rec) => self.audit_transition(&rec, to, error),
            Err(e) if lost_race(&e) => {}
            Err(e) => return Err(e.into()),
        }
        self.refresh_gauges().await;
        Ok(())
    }

    /// Ends a lab early at its user's request: `failed` with who ended it.
    pub async fn end_early(
        &self,
        rec: &ScenarioRecord,
        by: &str,
    ) -> Result<ScenarioRecord, OrchestratorError> {
        let why = format!("ended early by {by}");
        let from = [
            ScenarioStatus::Pending,
            ScenarioStatus::Creating,
            ScenarioStatus::Running,
        ];
        self.fail(rec, &from, &why).await?;
        Ok(self
            .deps()
            .store
            .get_any(&rec.scenario_id)
            .await?
            .unwrap_or_else(|| rec.clone()))
    }

    fn audit_transition(&self, rec: &ScenarioRecord, to: ScenarioStatus, error: Option<&str>) {
        tracing::info!(
            scenario_id = %rec.scenario_id,
            tenant_id = %rec.tenant_id,
            track = rec.track.as_str(),
            host = self.host().id.as_str(),
            status = to.as_str(),
            "scenario is {to}"
        );
        metrics::counter!("forge_scenario_transitions_total", "track" => rec.track.as_str(), "to" => to.as_str())
            .increment(1);
        let outcome = if to == ScenarioStatus::Failed {
            Outcome::Error
        } else {
            Outcome::Success
        };
        let mut ev = AuditEvent::new(
            Utc::now(),
            format!("scenario.{to}"),
            ACTOR,
            rec.scenario_id.as_str(),
            "update",
            outcome,
        )
        .with_detail("tenant_id", rec.tenant_id.clone())
        .with_detail("track", rec.track.as_str())
        .with_detail("template", rec.template.clone())
        .with_detail("status", to.as_str());
        if let Some(e) = error {
            ev = ev.with_detail("error", e);
        }
        self.deps().audit.record(ev);
    }

    /// Sets `forge_active_scenarios{track}` from the store (the truth, also after a restart).
    pub(crate) async fn refresh_gauges(&self) {
        let active = [
            ScenarioStatus::Pending,
            ScenarioStatus::Creating,
            ScenarioStatus::Running,
        ];
        let Ok(recs) = self.deps().store.list_by_status(&active).await else {
            return;
        };
        for track in forge_core::Track::ALL {
            let n = recs.iter().filter(|r| r.track == track).count();
            metrics::gauge!("forge_active_scenarios", "track" => track.as_str()).set(n as f64);
        }
    }
}

/// A compare-and-set that found the scenario elsewhere (or gone): someone else moved it first.
fn lost_race(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::InvalidTransition { .. }
            | StoreError::Conflict { .. }
            | StoreError::NotFound(_)
    )
}
