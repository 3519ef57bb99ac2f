//! Every subject on the bus and every message that travels on it (spec: NATS Subjects, plus
//! our `scenario.scored`), in one place so producers and consumers cannot drift apart.
//!
//! `spawn.request` (front door → orchestrator) → `scenario.created` (orchestrator → observers)
//! → `scenario.execute` (submit or timeout → worker) → `scenario.completed` (worker →
//! scoreboard) → `scenario.scored` (scoreboard → orchestrator, which tears the lab down, and
//! the observer hub). Each message type names its own message id, which is what makes a
//! redelivered or repeated publish a no-op (the bus deduplicates by it).

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

use forge_core::{Artifact, CriterionResult, ScenarioId, Track};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The subjects (spec: Appendix, NATS Subjects; `scenario.scored` is ours).
pub mod subjects {
    pub const SPAWN_REQUEST: &str = "spawn.request";
    pub const SCENARIO_CREATED: &str = "scenario.created";
    pub const SCENARIO_EXECUTE: &str = "scenario.execute";
    pub const SCENARIO_COMPLETED: &str = "scenario.completed";
    /// Our addition: the scoreboard announces a published score.
    pub const SCENARIO_SCORED: &str = "scenario.scored";
    pub const TELEMETRY_METRICS: &str = "telemetry.metrics";
    pub const TELEMETRY_LOGS: &str = "telemetry.logs";
    pub const AUDIT_EVENTS: &str = "audit.events";

    /// Every subject above, for backends that must declare them (the NATS stream).
    pub const ALL: [&str; 8] = [
        SPAWN_REQUEST,
        SCENARIO_CREATED,
        SCENARIO_EXECUTE,
        SCENARIO_COMPLETED,
        SCENARIO_SCORED,
        TELEMETRY_METRICS,
        TELEMETRY_LOGS,
        AUDIT_EVENTS,
    ];

    /// The wildcard that covers every dead-letter subject.
    pub const DEAD_LETTERS: &str = "deadletter.>";

    /// Where a consumer puts a message it gives up on: `deadletter.<subject>`.
    pub fn dead_letter(subject: &str) -> String {
        format!("deadletter.{subject}")
    }
}

/// A message type: the subject it travels on, and its message id, which is what the bus
/// deduplicates on (so a repeated publish of the same fact is delivered once).
pub trait BusMessage: Serialize + DeserializeOwned + Send + Sync {
    const SUBJECT: &'static str;
    fn msg_id(&self) -> String;
}

/// A message about one scenario whose id is `<prefix>:<scenario_id>`: one such fact per
/// scenario.
macro_rules! once_per_scenario {
    ($message:ty, $subject:expr, $prefix:literal) => {
        impl BusMessage for $message {
            const SUBJECT: &'static str = $subject;
            fn msg_id(&self) -> String {
                format!(concat!($prefix, ":{}"), self.scenario_id)
            }
        }
    };
}

/// `spawn.request`: a persisted `pending` scenario to build. Message id
/// `{tenant_id}:{request_id}`, so a retried spawn is delivered once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequested {
    pub scenario_id: ScenarioId,
    pub tenant_id: String,
    pub owner_sub: String,
    pub track: Track,
    pub template: String,
    pub request_id: String,
    /// The lab host whose warm lab this scenario took (its id is the lab's): only that host
    /// adopts it, and no host builds it cold. `None` for a cold spawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_host: Option<String>,
}

impl BusMessage for SpawnRequested {
    const SUBJECT: &'static str = subjects::SPAWN_REQUEST;
    fn msg_id(&self) -> String {
        format!("{}:{}", self.tenant_id, self.request_id)
    }
}

/// Why a scenario is being evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    Submit,
    Timeout,
}

/// `scenario.created`: a lab is running. Message id `created:<scenario_id>`.
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

once_per_scenario!(ScenarioCreated, subjects::SCENARIO_CREATED, "created");

/// `scenario.execute`: collect the evidence now. Message id `execute:<scenario_id>`, so a
/// submit racing the timeout evaluates once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequested {
    pub scenario_id: ScenarioId,
    pub reason: EndReason,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
}

once_per_scenario!(ExecuteRequested, subjects::SCENARIO_EXECUTE, "execute");

/// One collected artifact, by reference: the worker has staged its bytes in the evidence store
/// under `key` (content-addressed, `<scenario_id>/staged/<content_hash>`), and the bus carries
/// only this. A completion is a few KiB however much a lab printed, so neither the bus nor its
/// redeliveries hold megabytes of command output; the scoreboard reads the bytes back and
/// checks them against `artifact.content_hash` before bundling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagedArtifact {
    pub artifact: Artifact,
    pub key: String,
}

impl StagedArtifact {
    /// The staging key of an artifact of `scenario_id` (its content hash names it).
    pub fn key_for(scenario_id: &ScenarioId, artifact: &Artifact) -> String {
        format!("{scenario_id}/staged/{}", artifact.content_hash)
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
    pub artifacts: Vec<StagedArtifact>,
    /// The request id of the scenario's spawn, so its logs can be followed here too.
    #[serde(default)]
    pub request_id: String,
}

once_per_scenario!(ScenarioCompleted, subjects::SCENARIO_COMPLETED, "completed");

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

once_per_scenario!(ScenarioScored, subjects::SCENARIO_SCORED, "scored");

/// `telemetry.logs`: a structured log event of any service (the observer hub redacts PII
/// and caps label cardinality before keeping it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    pub service: String,
    #[serde(default)]
    pub level: String,
    pub message: String,
    #[serde(default)]
    pub scenario_id: Option<String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Set by the hub: which kinds of PII were found (and redacted) in `message`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pii: Vec<String>,
}

/// `telemetry.metrics`: one metric sample of any service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    pub service: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_artifacts_are_named_by_scenario_and_content() {
        let a = Artifact::describe(forge_core::ArtifactType::CommandOutput, "c1", b"\x00\xffx");
        let id: ScenarioId = "scn-0123456789ab".parse().unwrap();
        let key = StagedArtifact::key_for(&id, &a);
        assert_eq!(key, format!("scn-0123456789ab/staged/{}", a.content_hash));
        let json = serde_json::to_value(StagedArtifact { artifact: a, key }).unwrap();
        assert!(json.get("content_b64").is_none(), "references only: {json}");
    }

    #[test]
    fn dead_letter_subject() {
        assert_eq!(
            subjects::dead_letter(subjects::SPAWN_REQUEST),
            "deadletter.spawn.request"
        );
        crate::validate_subject(&subjects::dead_letter(subjects::SCENARIO_EXECUTE)).unwrap();
    }
}
