//! The gate seam: the policy decisions the spawn service asks for before it creates (and
//! charges) a scenario. forge-policy's embedded engine and remote OPA client implement
//! [`SpawnGate`] (the platform adapts them); tests use [`StaticGate`].
//!
//! - `spawn_gate` (may this caller spawn this track now), input (policies/spawn_gate.rego):
//!   `{"subject": {sub, tenant_id, roles}, "tenant": {id, plan, entitled_tracks,
//!   max_active_scenarios, active_scenarios} | null, "request": {track, template}}`;
//! - `training_gate` (may this template run), input: the resolved template flattened
//!   (`forge_core::template::policy_input`), the same document the orchestrator decides on.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::tenants::Tenant;
use forge_auth::Caller;

/// The decision: allowed, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateDecision {
    pub allow: bool,
    #[serde(default)]
    pub deny_reasons: Vec<String>,
}

impl GateDecision {
    pub fn allow() -> Self {
        Self {
            allow: true,
            deny_reasons: Vec::new(),
        }
    }

    pub fn deny(reasons: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            allow: false,
            deny_reasons: reasons.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// The policy engine cannot be reached (502).
    #[error("policy engine is unavailable: {0}")]
    Unavailable(String),
    /// The policy could not be evaluated (500).
    #[error("policy evaluation failed: {0}")]
    Other(String),
}

/// Decides the front door's gates.
#[async_trait]
pub trait SpawnGate: Send + Sync {
    /// Decides `spawn_gate` on [`gate_input`].
    async fn decide(&self, input: Value) -> Result<GateDecision, GateError>;

    /// Decides `training_gate` on the spawn's template flattened
    /// (`forge_core::template::policy_input`). No default: a gate that forgot it would let
    /// every template through and charge for labs the orchestrator then refuses.
    /// By reference: the front door keeps each template's input ready, and a clone of it per
    /// spawn showed up in the front door's profile.
    async fn decide_training(&self, input: &Value) -> Result<GateDecision, GateError>;
}

/// The gate's input document.
pub fn gate_input(
    caller: &Caller,
    tenant: Option<&Tenant<'_>>,
    active_scenarios: u64,
    track: &str,
    template: &str,
) -> Value {
    json!({
        "subject": {
            "sub": caller.sub,
            "tenant_id": caller.tenant_id,
            "roles": caller.roles,
        },
        "tenant": tenant.map(|t| json!({
            "id": t.id,
            "plan": t.plan_name,
            "entitled_tracks": t.plan.entitled_tracks,
            "max_active_scenarios": t.plan.max_active_scenarios,
            "active_scenarios": active_scenarios,
        })),
        "request": { "track": track, "template": template },
    })
}

/// A gate that returns a fixed answer, or evaluates a closure; for tests and for running the
/// service without a policy engine in development.
type DecideFn = dyn Fn(&Value) -> Result<GateDecision, GateError> + Send + Sync;

pub struct StaticGate {
    f: Box<DecideFn>,
    training: Box<DecideFn>,
}

impl StaticGate {
    /// Decides `spawn_gate` with `f`; the training gate allows every template.
    pub fn new(
        f: impl Fn(&Value) -> Result<GateDecision, GateError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            f: Box::new(f),
            training: Box::new(|_| Ok(GateDecision::allow())),
        }
    }

    /// The same gate, deciding `training_gate` with `f`.
    pub fn with_training(
        self,
        f: impl Fn(&Value) -> Result<GateDecision, GateError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            training: Box::new(f),
            ..self
        }
    }

    /// Allows everything.
    pub fn allow_all() -> Self {
        Self::new(|_| Ok(GateDecision::allow()))
    }

    /// What spawn_gate.rego decides, for the parts tests need: role, tenant, entitlement, quota.
    pub fn like_policy() -> Self {
        Self::new(|input| {
            let mut reasons = Vec::new();
            let roles = &input["subject"]["roles"];
            if !roles
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == "forge.spawn"))
            {
                reasons.push("subject.roles must include forge.spawn".to_owned());
            }
            let tenant = &input["tenant"];
            let track = &input["request"]["track"];
            if tenant.is_null() {
                reasons.push(format!(
                    "tenant {} is unknown (no tenant record)",
                    input["subject"]["tenant_id"]
                ));
            } else {
                let entitled = tenant["entitled_tracks"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if !entitled.contains(track) {
                    reasons.push(format!(
                        "tenant {} is not entitled to track {}",
                        tenant["id"], track
                    ));
                }
                if tenant["active_scenarios"].as_u64() >= tenant["max_active_scenarios"].as_u64() {
                    reasons.push(format!(
                        "tenant {} has {} active scenarios; the {} plan allows {}",
                        tenant["id"],
                        tenant["active_scenarios"],
                        tenant["plan"],
                        tenant["max_active_scenarios"]
                    ));
                }
            }
            Ok(if reasons.is_empty() {
                GateDecision::allow()
            } else {
                GateDecision::deny(reasons)
            })
        })
    }
}

#[async_trait]
impl SpawnGate for StaticGate {
    async fn decide(&self, input: Value) -> Result<GateDecision, GateError> {
        (self.f)(&input)
    }

    async fn decide_training(&self, input: &Value) -> Result<GateDecision, GateError> {
        (self.training)(input)
    }
}
