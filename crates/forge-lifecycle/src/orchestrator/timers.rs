//! The lab's timer: at expiry it asks for the final evaluation (`scenario.execute`, reason
//! timeout) and, when none finished within the grace period, ends the lab without a score. An
//! instructor may extend a lab on any orchestrator (`labs.rs`), so the timer reads the
//! scenario again when its expiry comes and waits for the new one instead.

use std::time::Duration;

use chrono::Utc;
use forge_bus::BusExt;
use forge_bus::messages::{EndReason, ExecuteRequested};
use forge_core::{ScenarioId, ScenarioStatus};
use forge_store::ScenarioRecord;

use super::{ACTOR, Orchestrator};

impl Orchestrator {
    /// Publishes `scenario.execute` (reason timeout) at expiry, and ends the lab without a
    /// score if no evaluation finished within the grace period after it. At expiry the timer
    /// reads the scenario again: an instructor may have extended it meanwhile (on any
    /// orchestrator), and then it waits for the new expiry instead.
    pub(crate) fn arm_timer(&self, rec: &ScenarioRecord) {
        let this = self.clone();
        let id = rec.scenario_id.clone();
        let mut expires_at = rec.expires_at;
        let grace = self.deps().config.evaluation_grace;
        let task = tokio::spawn(async move {
            loop {
                let wait = (expires_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::time::sleep(wait).await;
                match this.deps().store.get_any(&id).await {
                    Ok(Some(r)) if r.status.is_terminal() => return,
                    Ok(Some(r)) if r.expires_at > Utc::now() => expires_at = r.expires_at,
                    // Expired, gone, or unreadable: the expiry we know is the one to keep.
                    _ => break,
                }
            }
            let exec = ExecuteRequested {
                scenario_id: id.clone(),
                reason: EndReason::Timeout,
                requested_by: ACTOR.to_owned(),
                requested_at: Utc::now(),
            };
            let d = this.deps();
            if let Err(e) = d.bus.publish_msg(&exec).await {
                tracing::warn!(error = %e, scenario_id = %id, "cannot publish timeout evaluation");
            }
            tokio::time::sleep(grace).await;
            if let Ok(Some(r)) = d.store.get_any(&id).await
                && r.status == ScenarioStatus::Running
            {
                let why = "timed out and no evaluation finished within the grace period";
                let _ = this.finish(&id, ScenarioStatus::Timeout, Some(why)).await;
            }
        });
        let mut timers = self.inner.timers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = timers.insert(rec.scenario_id.clone(), task.abort_handle()) {
            old.abort();
        }
    }

    pub(crate) fn cancel_timer(&self, id: &ScenarioId) {
        let mut timers = self.inner.timers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = timers.remove(id) {
            t.abort();
        }
    }

    pub(crate) fn cancel_all_timers(&self) {
        let mut timers = self.inner.timers.lock().unwrap_or_else(|e| e.into_inner());
        for (_, t) in timers.drain() {
            t.abort();
        }
    }
}
