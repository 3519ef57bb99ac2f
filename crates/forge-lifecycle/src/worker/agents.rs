//! The worker's side of a lab's agents (crate::agents): they start when the lab runs
//! (`scenario.created`, per host) and stop when it is evaluated, whose evidence then carries
//! their timeline as an `agent_timeline` artifact.

use forge_bus::messages::ScenarioCreated;
use forge_bus::{ConsumerConfig, Outcome, subjects};
use forge_core::timeline::TIMELINE_ARTIFACT;
use forge_core::{Artifact, ArtifactType, ScenarioId, ScenarioStatus};
use tracing::Instrument as _;

use super::{Worker, WorkerError};
use crate::agents::AgentAlert;
use crate::settle;

impl Worker {
    /// `scenario.created` for this host's labs: durable `agents-<host>`, like the execute one.
    pub fn agents_consumer(&self) -> ConsumerConfig {
        let durable = format!("agents-{}", self.deps().host_id);
        ConsumerConfig::new(subjects::SCENARIO_CREATED, durable).concurrency(16)
    }

    /// Starts the agents of a lab that has just started running on this host.
    pub async fn on_created(self, msg: ScenarioCreated) -> Outcome {
        let span = crate::authz::scenario_span(subjects::SCENARIO_CREATED, &msg.scenario_id);
        let done = self.start_agents(&msg.scenario_id).instrument(span).await;
        settle(done, subjects::SCENARIO_CREATED, &msg.scenario_id)
    }

    async fn start_agents(&self, id: &ScenarioId) -> Result<(), WorkerError> {
        let d = self.deps();
        let Some(agents) = &d.agents else {
            return Ok(());
        };
        let Some(rec) = d.store.get_any(id).await? else {
            return Ok(());
        };
        let mine = rec.host_id.as_deref().is_none_or(|h| h == d.host_id);
        if rec.status != ScenarioStatus::Running || !mine {
            return Ok(());
        }
        let t = self.template(&rec)?;
        drop(agents.start(id, t));
        Ok(())
    }

    /// What the lab's agents raised for the learner.
    pub(crate) fn agent_alerts(&self, id: &ScenarioId) -> Vec<AgentAlert> {
        self.deps()
            .agents
            .as_ref()
            .map(|a| a.alerts(id))
            .unwrap_or_default()
    }

    /// Stops the lab's agents and returns their timeline as an artifact (the same bytes for a
    /// redelivered evaluation: the runner keeps what it stopped).
    pub(crate) fn agent_timeline(&self, id: &ScenarioId) -> Option<(Artifact, Vec<u8>)> {
        let t = self.deps().agents.as_ref()?.finish(id)?;
        let bytes = t.to_bytes();
        let artifact = Artifact::describe(ArtifactType::AgentTimeline, TIMELINE_ARTIFACT, &bytes);
        Some((artifact, bytes))
    }
}
