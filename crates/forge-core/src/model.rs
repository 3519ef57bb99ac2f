//! The spec's data models (Data Models section) with their JSON shapes.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::ScenarioId;

/// A training track. The catalog and the policies know exactly these three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Track {
    Netplus,
    Ccna,
    Cissp,
}

impl Track {
    pub const ALL: [Track; 3] = [Track::Netplus, Track::Ccna, Track::Cissp];

    pub fn as_str(self) -> &'static str {
        match self {
            Track::Netplus => "netplus",
            Track::Ccna => "ccna",
            Track::Cissp => "cissp",
        }
    }
}

impl fmt::Display for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// An unknown track name; the message lists the supported ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported track `{0}`; supported tracks are netplus, ccna, cissp")]
pub struct UnknownTrack(pub String);

impl FromStr for Track {
    type Err = UnknownTrack;
    fn from_str(s: &str) -> Result<Self, UnknownTrack> {
        match s {
            "netplus" => Ok(Track::Netplus),
            "ccna" => Ok(Track::Ccna),
            "cissp" => Ok(Track::Cissp),
            other => Err(UnknownTrack(other.to_owned())),
        }
    }
}

/// Body of `POST /v1/spawn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    pub track: String,
    /// Idempotency key; may instead come from the `x-request-id` header.
    #[serde(default)]
    pub request_id: Option<String>,
    /// A template name from the catalog; defaults to the track's default template.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Life-cycle states of a scenario (spec: ScenarioState).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioStatus {
    Pending,
    Creating,
    Running,
    Completed,
    Failed,
    Timeout,
}

impl ScenarioStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
        }
    }

    /// Completed, failed and timeout are final: no transition leaves them.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Timeout)
    }

    /// Whether the state machine allows `self -> next`.
    pub fn can_move_to(self, next: ScenarioStatus) -> bool {
        use ScenarioStatus::*;
        matches!(
            (self, next),
            (Pending, Creating)
                | (Creating, Running)
                | (Pending | Creating | Running, Failed)
                | (Running, Completed | Timeout)
        )
    }
}

impl fmt::Display for ScenarioStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for ScenarioStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown scenario status `{s}`"))
    }
}

/// Status of one scenario (spec: ScenarioState).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioState {
    pub scenario_id: ScenarioId,
    pub status: ScenarioStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub network_id: String,
    pub containers: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Kinds of evidence artifact (docs/design.md §7.6 maps DSL evidence types onto these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactType {
    CommandOutput,
    FileCapture,
    NetworkCapture,
    StateSnapshot,
    /// What a lab's agents did and what the action gate decided (`timeline`).
    AgentTimeline,
}

impl ArtifactType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CommandOutput => "command_output",
            Self::FileCapture => "file_capture",
            Self::NetworkCapture => "network_capture",
            Self::StateSnapshot => "state_snapshot",
            Self::AgentTimeline => "agent_timeline",
        }
    }
}

/// One piece of collected evidence (spec: Artifact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    #[serde(rename = "type")]
    pub kind: ArtifactType,
    /// Unique within a bundle, e.g. `route-add.0.command_output`.
    pub name: String,
    /// Lowercase hex SHA-256 of the content.
    pub content_hash: String,
    pub size_bytes: u64,
    /// Path inside `evidence.tar.zst`, e.g. `artifacts/route-add.0.command_output.json`.
    pub path: String,
}

impl Artifact {
    /// Describes `content` as an artifact, hashing it.
    pub fn describe(kind: ArtifactType, name: impl Into<String>, content: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let name = name.into();
        Self {
            kind,
            path: format!("artifacts/{name}"),
            name,
            content_hash: hex::encode(Sha256::digest(content)),
            size_bytes: content.len() as u64,
        }
    }
}

/// Verdict on one success criterion (spec: CriterionResult).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CriterionResult {
    pub criterion_id: String,
    pub passed: bool,
    pub evidence_refs: Vec<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// The criterion's weight (docs/design.md §7.2); 1.0 when absent.
    #[serde(default = "default_weight")]
    pub weight: f64,
}

pub(crate) fn default_weight() -> f64 {
    1.0
}

/// Everything collected for one evaluation (spec: EvidenceBundle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceBundle {
    pub scenario_id: ScenarioId,
    pub collected_at: DateTime<Utc>,
    pub artifacts: Vec<Artifact>,
    pub criteria_results: Vec<CriterionResult>,
}

/// The published score (spec: ScoreResult).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreResult {
    pub scenario_id: ScenarioId,
    /// 0.0 to 1.0, weighted (docs/design.md §7.2).
    pub score: f64,
    pub passed: u32,
    pub total: u32,
    pub criteria: Vec<CriterionResult>,
    pub computed_at: DateTime<Utc>,
}
