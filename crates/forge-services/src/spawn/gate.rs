//! The spawn gate seam: the policy decision the spawn service asks for before it creates a
//! scenario. forge-policy's embedded engine and remote OPA client implement [`SpawnGate`] (the
//! lead adapts them); tests use [`StaticGate`].
//!
//! Input (policies/spawn_gate.rego):
//! `{"subject": {sub, tenant_id, roles}, "tenant": {id, plan, entitled_tracks,
//!   max_active_scenarios, active_scenarios} | null, "request": {track, template}}`.

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

/// Decides `spawn_gate`.
#[async_trait]
pub trait SpawnGate: Send + Sync {
    async fn decide(&self, input: Value) -> Result<GateDecision, GateError>;
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
}

impl StaticGate {
    pub fn new(
        f: impl Fn(&Value) -> Result<GateDecision, GateError> + Send + Sync + 'static,
    ) -> Self {
        Self { f: Box::new(f) }
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
}
