//! Start-up convergence after a crash (docs/design.md §6: no orphan containers or namespaces, no
//! scenario stuck in `creating`).
//!
//! - `creating`: the launch was interrupted; its half-built lab is torn down and the scenario
//!   fails with that reason (a retry would bill nothing new, but the learner has a fresh spawn a
//!   click away and a half-built lab is never trustworthy).
//! - `running`: kept when its lab is whole on this host (timer re-armed), else failed.
//! - `pending`: handled again (the in-process bus lost the message; on NATS a redelivery would
//!   find it done).
//! - every lab on the host that belongs to no live scenario is removed.

use std::collections::BTreeSet;

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
}

impl Orchestrator {
    pub async fn recover(&self) -> Result<RecoverReport, OrchestratorError> {
        let d = self.deps();
        let mut report = RecoverReport::default();
        let labs = match d.runtime.list_labs().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list labs during recovery");
                Vec::new()
            }
        };

        for rec in d.store.list_by_status(&[ScenarioStatus::Creating]).await? {
            let why = "the orchestrator restarted while the lab was being created";
            self.fail(&rec, &[ScenarioStatus::Creating], why).await?;
            report.failed_creating.push(rec.scenario_id.to_string());
        }

        let mut alive = BTreeSet::new();
        for rec in d.store.list_by_status(&[ScenarioStatus::Running]).await? {
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
                self.arm_timer(&rec);
                report.kept_running.push(id);
            } else {
                let why = "the lab was lost while the orchestrator was down";
                self.fail(&rec, &[ScenarioStatus::Running], why).await?;
                report.failed_running.push(id);
            }
        }

        // Only labs this orchestrator owns: with extra labels configured (a test run), labs
        // without them belong to someone else; without, every lab on the host is ours.
        let owned = |l: &forge_runtime::LabSummary| {
            let wanted = &d.config.labels;
            wanted.is_empty()
                || (!l.containers.is_empty()
                    && wanted.iter().all(|(k, v)| l.labels.get(k) == Some(v)))
        };
        for lab in labs
            .iter()
            .filter(|l| owned(l) && !alive.contains(&l.scenario_id))
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
            report.resumed_pending.push(rec.scenario_id.to_string());
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.handle_spawn(&rec.scenario_id).await {
                    tracing::warn!(error = %e, scenario_id = %rec.scenario_id, "resuming a pending scenario");
                }
            });
        }
        self.refresh_gauges().await;
        tracing::info!(?report, "recovery finished");
        Ok(report)
    }
}
