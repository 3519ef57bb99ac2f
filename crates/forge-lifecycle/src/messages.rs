//! What the lifecycle services tell each other over the bus (spec: NATS Subjects) and the one
//! rule deciding who may touch a scenario.
//!
//! `spawn.request` (spawn → orchestrator) → `scenario.created` (orchestrator → worker, for
//! observers) → `scenario.execute` (submit or timeout → worker) → `scenario.completed` (worker →
//! scoreboard) → `scenario.scored` (scoreboard → orchestrator, which tears the lab down).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use forge_auth::Caller;
use forge_core::{Artifact, CriterionResult, ScenarioId, Track};
use forge_store::ScenarioRecord;
use serde::{Deserialize, Serialize};

/// Our addition to the spec's subjects: the scoreboard announces a published score.
pub const SCENARIO_SCORED: &str = "scenario.scored";

/// Role of a tenant's instructors: may check, submit and open shells in any lab of the tenant.
pub const INSTRUCTOR_ROLE: &str = "forge.instructor";

/// Why a scenario is being evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    Submit,
    Timeout,
}

/// `scenario.created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioCreated {
    pub scenario_id: ScenarioId,
    pub tenant_id: String,
    pub track: Track,
    pub template: String,
    pub network_id: String,
    pub containers: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// `scenario.execute`: collect the evidence now. Message id `execute:<scenario_id>`, so a
/// submit racing the timeout evaluates once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequested {
    pub scenario_id: ScenarioId,
    pub reason: EndReason,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
}

impl ExecuteRequested {
    pub fn msg_id(id: &ScenarioId) -> String {
        format!("execute:{id}")
    }
}

/// One collected artifact on the bus (content base64, so the payload stays JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectedArtifact {
    pub artifact: Artifact,
    pub content_b64: String,
}

impl CollectedArtifact {
    pub fn new(artifact: Artifact, content: &[u8]) -> Self {
        Self {
            artifact,
            content_b64: base64::engine::general_purpose::STANDARD.encode(content),
        }
    }

    pub fn content(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.content_b64)
    }
}

/// `scenario.completed`: the evidence of one evaluation. Message id `completed:<scenario_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioCompleted {
    pub scenario_id: ScenarioId,
    pub run_id: String,
    pub tenant_id: String,
    pub track: Track,
    pub template: String,
    pub reason: EndReason,
    pub collected_at: DateTime<Utc>,
    pub criteria: Vec<CriterionResult>,
    pub artifacts: Vec<CollectedArtifact>,
}

impl ScenarioCompleted {
    pub fn msg_id(id: &ScenarioId) -> String {
        format!("completed:{id}")
    }
}

/// `scenario.scored`. Message id `scored:<scenario_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioScored {
    pub scenario_id: ScenarioId,
    pub tenant_id: String,
    pub track: Track,
    pub template: String,
    pub reason: EndReason,
    pub score: f64,
    pub passed: u32,
    pub total: u32,
}

impl ScenarioScored {
    pub fn msg_id(id: &ScenarioId) -> String {
        format!("scored:{id}")
    }
}

/// Whether `caller` may work in the lab (check, submit, terminal, end): its owner, or an
/// instructor or orchestrator of the same tenant. Lookups are tenant-scoped before this runs.
pub fn may_operate(caller: &Caller, record: &ScenarioRecord) -> bool {
    caller.tenant_id == record.tenant_id
        && (caller.sub == record.owner_sub
            || caller.has_role(INSTRUCTOR_ROLE)
            || caller.has_role(forge_auth::roles::ORCHESTRATOR))
}
