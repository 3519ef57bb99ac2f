//! What a gate decided, how the input is fingerprinted, and how every decision is counted and
//! audited whichever backend made it.

use std::io::Write;
use std::sync::Arc;

use forge_core::audit::{AuditEvent, AuditSink, NullAuditSink, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{PolicyError, PolicyName};

/// The outcome of one policy evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the gate lets the request through. For the llm gate this means "may run without a
    /// human"; see [`Decision::requires_approval`].
    pub allow: bool,
    /// Why not, one actionable sentence each, sorted. Empty when allowed (and, for the llm gate,
    /// when the only obstacle is a required approval).
    pub deny_reasons: Vec<String>,
    /// The gate's name (`training_gate`, ...).
    pub policy: String,
    /// A fresh UUID (or the remote OPA's `decision_id`), also recorded in the audit event.
    pub decision_id: String,
    /// SHA-256 (hex) of the input's canonical JSON (object keys sorted, no whitespace).
    pub input_hash: String,
    /// Further outputs of the gate, e.g. `requires_approval` and `approval_reasons` (llm gate).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Decision {
    /// The llm gate's `requires_approval` output; false for gates that have none.
    pub fn requires_approval(&self) -> bool {
        self.extra
            .get("requires_approval")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Builds a decision from a package document (`{"allow": .., "deny_reasons": .., ...}`) as
    /// OPA's Data API returns it. A missing `allow` is a deny (undefined means no), a missing
    /// `deny_reasons` is empty; sets arrive as arrays.
    pub(crate) fn from_document(
        policy: PolicyName,
        doc: &Map<String, Value>,
        decision_id: String,
        input_hash: String,
    ) -> Result<Self, PolicyError> {
        let allow = match doc.get("allow") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(PolicyError::Eval {
                    policy: policy.as_str().to_owned(),
                    message: format!("allow must be a boolean, got {other}"),
                });
            }
        };
        let mut deny_reasons: Vec<String> = match doc.get("deny_reasons") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(other) => {
                return Err(PolicyError::Eval {
                    policy: policy.as_str().to_owned(),
                    message: format!("deny_reasons must be a set of strings, got {other}"),
                });
            }
        };
        deny_reasons.sort();
        deny_reasons.dedup();
        let extra = policy
            .extra_rules()
            .iter()
            .filter_map(|k| {
                doc.get(*k)
                    .filter(|v| !v.is_null())
                    .map(|v| ((*k).to_owned(), v.clone()))
            })
            .collect();
        Ok(Self {
            allow,
            deny_reasons,
            policy: policy.as_str().to_owned(),
            decision_id,
            input_hash,
            extra,
        })
    }
}

/// SHA-256 (lowercase hex) of `input` serialised as canonical JSON: object keys sorted by their
/// UTF-8 bytes, no insignificant whitespace, strings and numbers as serde_json writes them.
///
/// The canonical text is written into a reused per-thread buffer and hashed in one pass: many
/// small hasher updates cost more than the hash itself.
pub fn input_hash(input: &Value) -> String {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        write_canonical(&mut buf, input);
        let digest = hex::encode(Sha256::digest(buf.as_slice()));
        // Do not pin a huge buffer to the thread after one outsized input.
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new();
        }
        digest
    })
}

fn write_canonical(w: &mut Vec<u8>, v: &Value) {
    // Writing into a Vec cannot fail, so the io results are safely ignored.
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            w.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    w.push(b',');
                }
                let _ = serde_json::to_writer(&mut *w, k);
                w.push(b':');
                write_canonical(w, v);
            }
            w.push(b'}');
        }
        Value::Array(items) => {
            w.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    w.push(b',');
                }
                write_canonical(w, item);
            }
            w.push(b']');
        }
        Value::String(s) => {
            let _ = serde_json::to_writer(&mut *w, s);
        }
        Value::Null => w.extend_from_slice(b"null"),
        Value::Bool(true) => w.extend_from_slice(b"true"),
        Value::Bool(false) => w.extend_from_slice(b"false"),
        Value::Number(n) => {
            let _ = write!(w, "{n}");
        }
    }
}

/// Who asked and about what, for the audit event. Both fields are optional: the actor defaults
/// to the engine's configured actor, the resource to a field of the input (`metadata.name` for
/// the training gate, `subject.tenant_id` for spawn, `scenario.id` for action and llm).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionContext {
    pub actor: Option<String>,
    pub resource_id: Option<String>,
}

/// Counts every decision in `forge_opa_decisions_total{policy,result}` and hands it to the audit
/// sink as a `policy.decision` event. Shared by every backend so no path can skip it.
#[derive(Clone)]
pub struct DecisionObserver {
    audit: Arc<dyn AuditSink>,
    actor: String,
}

impl std::fmt::Debug for DecisionObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionObserver")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl Default for DecisionObserver {
    fn default() -> Self {
        Self::new(Arc::new(NullAuditSink), "forge_opa")
    }
}

impl DecisionObserver {
    /// `actor` is the audit events' default actor (the service making decisions).
    pub fn new(audit: Arc<dyn AuditSink>, actor: impl Into<String>) -> Self {
        Self {
            audit,
            actor: actor.into(),
        }
    }

    /// Counts one decision (or failed decision) in `forge_opa_decisions_total`.
    pub(crate) fn count(policy: PolicyName, result: &Result<Decision, PolicyError>) {
        let label = match result {
            Ok(d) if d.allow => "allow",
            Ok(_) => "deny",
            Err(_) => "error",
        };
        metrics::counter!(
            "forge_opa_decisions_total",
            "policy" => policy.as_str(),
            "result" => label
        )
        .increment(1);
    }

    /// Records one decision (or failed decision) and passes the result through.
    pub(crate) fn observe(
        &self,
        policy: PolicyName,
        input: &Value,
        ctx: &DecisionContext,
        result: Result<Decision, PolicyError>,
    ) -> Result<Decision, PolicyError> {
        Self::count(policy, &result);

        let actor = ctx.actor.clone().unwrap_or_else(|| self.actor.clone());
        let resource = ctx.resource_id.clone().unwrap_or_else(|| {
            input
                .pointer(policy.resource_pointer())
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned()
        });
        let event = match &result {
            Ok(d) => {
                let outcome = if d.allow {
                    Outcome::Success
                } else {
                    Outcome::Denied
                };
                let mut event = AuditEvent::new(
                    chrono::Utc::now(),
                    "policy.decision",
                    actor,
                    resource,
                    "decide",
                    outcome,
                )
                .with_detail("policy", policy.as_str())
                .with_detail("decision_id", d.decision_id.as_str())
                .with_detail("input_hash", d.input_hash.as_str())
                .with_detail("deny_reasons", d.deny_reasons.clone());
                if !d.extra.is_empty() {
                    event = event.with_detail("extra", Value::Object(d.extra.clone()));
                }
                event
            }
            Err(e) => AuditEvent::new(
                chrono::Utc::now(),
                "policy.decision",
                actor,
                resource,
                "decide",
                Outcome::Error,
            )
            .with_detail("policy", policy.as_str())
            .with_detail("decision_id", uuid::Uuid::new_v4().to_string())
            .with_detail("input_hash", input_hash(input))
            .with_detail("error", e.to_string()),
        };
        self.audit.record(event);
        result
    }
}

/// `forge_opa_decision_seconds{policy}`: how long deciding took, cached or not, embedded or
/// through a remote OPA (the wait for it included).
pub(crate) fn record_latency(policy: PolicyName, took: std::time::Duration) {
    metrics::histogram!("forge_opa_decision_seconds", "policy" => policy.as_str())
        .record(took.as_secs_f64());
}
