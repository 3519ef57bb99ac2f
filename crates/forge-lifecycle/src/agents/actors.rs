//! The runner as `forge template test` uses it ([`LabActors`]): start a tested lab's agents,
//! wait for what is due at start, and sum their timeline up for the report.

use std::sync::Arc;
use std::time::Duration;

use forge_core::ScenarioId;
use forge_core::template::ScenarioTemplate;
use forge_core::timeline::{ActionOutcome, Timeline};
use forge_runtime::template_test::LabActors;

use super::Agents;

/// Longest a template test waits for the actions due at start.
const START_SETTLE: Duration = Duration::from_secs(120);

/// One line about a timeline, for reports.
pub fn summary(t: &Timeline) -> String {
    let count = |o: ActionOutcome| t.entries.iter().filter(|e| e.outcome == o).count();
    let used = t.entries.last().map_or(0, |e| e.exploits_used);
    format!(
        "{} actions: {} succeeded, {} failed, {} denied, {} errors; exploits {used} of {}",
        t.entries.len(),
        count(ActionOutcome::Succeeded),
        count(ActionOutcome::Failed),
        count(ActionOutcome::Denied),
        count(ActionOutcome::Error),
        t.attacker_max_exploits
    )
}

#[async_trait::async_trait]
impl LabActors for Agents {
    async fn start(&self, scenario: &ScenarioId, t: &ScenarioTemplate) -> Result<(), String> {
        let started = Agents::start(self, scenario, Arc::new(t.clone()));
        let all = futures::future::join_all(started);
        tokio::time::timeout(START_SETTLE, all)
            .await
            .map(drop)
            .map_err(|_| format!("actions due at start did not finish in {START_SETTLE:?}"))
    }

    async fn stop(&self, scenario: &ScenarioId) -> Option<String> {
        Agents::stop(self, scenario).map(|t| summary(&t))
    }
}
