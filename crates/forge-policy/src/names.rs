//! The four gates and the Rego packages that implement them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// One of the platform's policy decisions (spec: OPA Policy Structure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    /// May this scenario template run? (`policies/training_gate.rego`)
    TrainingGate,
    /// May this caller spawn a lab on this track now? (`policies/spawn_gate.rego`)
    SpawnGate,
    /// May this agent perform this action inside its lab? (`policies/action_gate.rego`)
    ActionGate,
    /// May this LLM proposal run, and does it need a human first? (`policies/llm_gate.rego`)
    LlmGate,
}

impl PolicyName {
    pub const ALL: [PolicyName; 4] = [
        Self::TrainingGate,
        Self::SpawnGate,
        Self::ActionGate,
        Self::LlmGate,
    ];

    /// The name used in metrics, audit events, the CLI and [`crate::Decision::policy`].
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TrainingGate => "training_gate",
            Self::SpawnGate => "spawn_gate",
            Self::ActionGate => "action_gate",
            Self::LlmGate => "llm_gate",
        }
    }

    /// The Rego package, dotted: `frostgate.forge.training`.
    pub const fn package(self) -> &'static str {
        match self {
            Self::TrainingGate => "frostgate.forge.training",
            Self::SpawnGate => "frostgate.forge.spawn",
            Self::ActionGate => "frostgate.forge.action",
            Self::LlmGate => "frostgate.forge.llm",
        }
    }

    /// The package as an OPA Data API path: `frostgate/forge/training`.
    pub const fn data_path(self) -> &'static str {
        match self {
            Self::TrainingGate => "frostgate/forge/training",
            Self::SpawnGate => "frostgate/forge/spawn",
            Self::ActionGate => "frostgate/forge/action",
            Self::LlmGate => "frostgate/forge/llm",
        }
    }

    /// Rules besides `allow` and `deny_reasons` that are copied into [`crate::Decision::extra`].
    pub const fn extra_rules(self) -> &'static [&'static str] {
        match self {
            Self::LlmGate => &["requires_approval", "approval_reasons"],
            _ => &[],
        }
    }

    /// JSON pointer into the input naming the resource a decision is about, for the audit
    /// event's `resource_id` when the caller gives none.
    pub(crate) const fn resource_pointer(self) -> &'static str {
        match self {
            Self::TrainingGate => "/metadata/name",
            Self::SpawnGate => "/subject/tenant_id",
            Self::ActionGate => "/scenario/id",
            Self::LlmGate => "/scenario/id",
        }
    }

    /// The gate whose package is `package` (dotted, without `data.`).
    pub fn from_package(package: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.package() == package)
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyName {
    type Err = PolicyError;

    /// Accepts the policy name (`training_gate`), its short form (`training`) or its package.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| {
                s == p.as_str() || s == p.package() || Some(s) == p.as_str().strip_suffix("_gate")
            })
            .ok_or_else(|| PolicyError::UnknownPolicy(s.to_owned()))
    }
}
