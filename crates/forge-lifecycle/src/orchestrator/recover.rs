//! Start-up convergence after a crash (docs/design.md §6: no orphan containers or namespaces, no
//! scenario stuck in `creating`).
//!
//! Only this host's scenarios and labs are touched (the `host_id` of a scenario, the
//! `forge.host` label of a lab): hosts may share a store and even a Docker Engine.
//!
//! - `creating`: the launch was interrupted; its half-built lab is torn down and the scenario
//!   fails with that reason (a retry would bill nothing new, but the learner has a fresh spawn a
//!   click away and a half-built lab is never trustworthy).
//! - `running`: kept when its lab is whole on this host (timer re-armed, slot taken), else
//!   failed.
//! - `pending`: `spawn.request` is published again (the in-process bus lost it; on NATS the
//!   bus deduplicates it, or a redelivery finds the scenario taken), so it waits for a host
//!   with a free slot like any other spawn.
//! - every lab of this host that belongs to no live scenario of it is removed (labs failed by
//!   another host's sweep while this one was away, among them), and so is its warm pool: its
//!   entries leave the store first, and the refill starts over.

use std::collections::BTreeSet;

use forge_bus::BusExt;
use forge_bus::messages::SpawnRequested;
use forge_core::ScenarioStatus;
use serde::Serialize;

use super::{Orchestrator, OrchestratorError};

/// What [`Orchestrator::recover`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoverReport {
    pub failed_creating: Vec<String>,
    pub kept_running: Vec<String>,
    pub failed_running: Vec<String>,
    pub resumed_pending: Vec<String>,
    pub orphans_removed: Vec<String>,
    /// Warm labs of this host taken out of the pool (their labs are among the orphans).
    pub pool_labs_removed: Vec<String>,
}

impl Orchestrator {
    pub async fn recover(&self) -> Result<RecoverReport, OrchestratorError> {
        let d = self.deps();
        let mut report = RecoverReport::default();
        // Announce the host first: other hosts must not take it for dead while it recovers.
        self.renew_lease().await?;
        report.pool_labs_removed = self.empty_pool_at_start().await?;
        let labs = match d.runtime.list_labs().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list labs during recovery");
                Vec::new()
            }
        };

        let creating = d.store.list_by_status(&[ScenarioStatus::Creating]).await?;
        for rec in creating.into_iter().filter(|r| self.owns(r)) {
            let why = "the orchestrator restarted while the lab was being created";
            self.fail(&rec, &[ScenarioStatus::Creating], why).await?;
            report.failed_creating.push(rec.scenario_id.to_string());
        }

        let mut alive = BTreeSet::new();
        let running = d.store.list_by_status(&[ScenarioStatus::Running]).await?;
        for rec in running.into_iter().filter(|r| self.owns(r)) {
            let id = rec.scenario_id.to_string();
            let whole = labs.iter().find(|l| l.scenario_id == id).is_some_and(|l| {
                l.namespace_exists
                    && rec
                        .containers
                        .iter()
                        .all(|c| l.containers.iter().any(|lc| &lc.name == c))
            });
            if whole {
                alive.insert(id.clone());
                self.inner.slots.try_hold(&rec.scenario_id);
                self.arm_timer(&rec);
                report.kept_running.push(id);
            } else {
                let why = "the lab was lost while the orchestrator was down";
                self.fail(&rec, &[ScenarioStatus::Running], why).await?;
                report.failed_running.push(id);
            }
        }

        for lab in labs
            .iter()
            .filter(|l| self.labelled_mine(l) && !alive.contains(&l.scenario_id))
        {
            let Ok(id) = lab.scenario_id.parse::<forge_core::ScenarioId>() else {
                continue;
            };
            match d.runtime.teardown(&id).await {
                Ok(_) => report.orphans_removed.push(lab.scenario_id.clone()),
                Err(e) => {
                    tracing::warn!(error = %e, scenario_id = %lab.scenario_id, "removing an orphan lab")
                }
            }
        }

        for rec in d.store.list_by_status(&[ScenarioStatus::Pending]).await? {
            let req = SpawnRequested {
                scenario_id: rec.scenario_id.clone(),
                tenant_id: rec.tenant_id.clone(),
                owner_sub: rec.owner_sub.clone(),
                track: rec.track,
                template: rec.template.clone(),
                request_id: rec.request_id.clone(),
                warm_host: None,
            };
            match d.bus.publish_msg(&req).await {
                Ok(_) => report.resumed_pending.push(rec.scenario_id.to_string()),
                Err(e) => {
                    tracing::warn!(error = %e, scenario_id = %rec.scenario_id, "cannot resume a pending scenario")
                }
            }
        }
        self.refresh_gauges().await;
        tracing::info!(?report, "recovery finished");
        Ok(report)
    }
}
