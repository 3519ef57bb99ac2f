//! Admission of a `pending` scenario on this host: still pending, template in the catalog,
//! training gate, then the claim (`pending → creating`) — or, for a warm lab, its adoption.

use std::sync::Arc;

use forge_core::template::{ScenarioTemplate, policy_input};
use forge_core::{ScenarioId, ScenarioStatus};
use forge_policy::{DecisionContext, PolicyError, PolicyName};
use forge_store::ScenarioRecord;

use super::{ACTOR, Orchestrator, OrchestratorError, lost_race};

/// Outcome of [`Orchestrator::admit`].
pub(crate) enum Admission {
    Admitted(Box<ScenarioRecord>, Arc<ScenarioTemplate>),
    /// The scenario failed admission (failed with the reasons, audited).
    Denied,
    /// Not pending (already handled) or unknown.
    Skipped,
}

impl Orchestrator {
    /// Training gate and `pending → creating`.
    pub(crate) async fn admit(&self, id: &ScenarioId) -> Result<Admission, OrchestratorError> {
        let Some(rec) = self.pending(id).await? else {
            return Ok(Admission::Skipped);
        };
        let Some(template) = self.gate(&rec).await? else {
            return Ok(Admission::Denied);
        };
        // The claim is the one step that picks this host: another host claiming it at the
        // same time gets a conflict and leaves it.
        let rec = match self.deps().store.claim(id, &self.host().id).await {
            Ok(r) => r,
            Err(e) if lost_race(&e) => return Ok(Admission::Skipped),
            Err(e) => return Err(e.into()),
        };
        self.audit_transition(&rec, ScenarioStatus::Creating, None);
        self.refresh_gauges().await;
        Ok(Admission::Admitted(Box::new(rec), template))
    }

    /// The scenario when it is still `pending`; `None` when it is unknown or past `pending`.
    pub(crate) async fn pending(
        &self,
        id: &ScenarioId,
    ) -> Result<Option<ScenarioRecord>, OrchestratorError> {
        let Some(rec) = self.deps().store.get_any(id).await? else {
            tracing::warn!(scenario_id = %id, "spawn.request for an unknown scenario");
            return Ok(None);
        };
        if rec.status != ScenarioStatus::Pending {
            // A redelivery after a crash between `failed` and its refund: refund now (once;
            // the store makes a second refund a no-op).
            self.refund_unstarted(&rec, "failed before it ran").await?;
            return Ok(None);
        }
        Ok(Some(rec))
    }

    /// The template of a pending scenario when it is in the catalog and the training gate
    /// allows it; else the scenario fails with the reason and `None` is returned.
    pub(crate) async fn gate(
        &self,
        rec: &ScenarioRecord,
    ) -> Result<Option<Arc<ScenarioTemplate>>, OrchestratorError> {
        let d = self.deps();
        let id = &rec.scenario_id;
        let Some(entry) = d.catalog.get(&rec.template) else {
            let why = format!("template `{}` is not in the catalog", rec.template);
            self.fail(rec, &[ScenarioStatus::Pending], &why).await?;
            return Ok(None);
        };
        let template = entry.template.clone();
        let ctx = DecisionContext {
            actor: Some(ACTOR.to_owned()),
            resource_id: Some(id.to_string()),
        };
        let input = policy_input(&template);
        let decision = match d
            .policy
            .decide_with(PolicyName::TrainingGate, &input, &ctx)
            .await
        {
            Ok(dec) => dec,
            Err(e @ PolicyError::Unavailable { .. }) => {
                return Err(OrchestratorError::PolicyUnavailable(e.to_string()));
            }
            Err(e) => {
                let why = format!("training gate could not decide: {e}");
                self.fail(rec, &[ScenarioStatus::Pending], &why).await?;
                return Ok(None);
            }
        };
        if !decision.allow {
            let why = format!("training gate denied: {}", decision.deny_reasons.join("; "));
            self.fail(rec, &[ScenarioStatus::Pending], &why).await?;
            return Ok(None);
        }
        Ok(Some(template))
    }
}
