//! The hub's audit and lab streams: `audit.events` (counted per action and outcome, details
//! screened for PII, the last events kept for `GET /v1/audit/recent`) and `scenario.created`
//! (labs created per track, the last ones kept for `GET /v1/telemetry/labs`).
//!
//! Both are views for operators, not records: the signed audit log and the state store are the
//! truth, so the hub keeps a bounded window in memory and answers for the caller's tenant only.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use forge_auth::Caller;
use forge_bus::messages::ScenarioCreated;
use forge_core::audit::AuditEvent;
use forge_http::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::telemetry::redact_pii;
use super::{Observer, require_observer};

/// Recent audit events kept for `GET /v1/audit/recent`.
pub const RECENT_AUDIT: usize = 1000;
/// Recent labs kept for `GET /v1/telemetry/labs`.
pub const RECENT_LABS: usize = 500;

/// An audit event as the hub keeps it: PII in its details redacted, the kinds found named.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    #[serde(flatten)]
    pub event: AuditEvent,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pii: Vec<String>,
}

impl AuditRecord {
    fn tenant(&self) -> Option<&str> {
        self.event.details.get("tenant_id").and_then(Value::as_str)
    }
}

/// A lab the hub saw created.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabRecord {
    pub scenario_id: String,
    pub tenant_id: String,
    pub track: String,
    pub template: String,
    pub containers: usize,
    pub expires_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
}

/// Labs seen: the last [`RECENT_LABS`], and the count per tenant and track.
#[derive(Debug, Default)]
pub(super) struct Labs {
    recent: VecDeque<LabRecord>,
    created: HashMap<(String, String), u64>,
}

/// Redacts PII in every string of `value`, in place; adds the kinds found to `kinds`.
fn redact_json(value: &mut Value, kinds: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => {
            let (text, found) = redact_pii(s);
            if !found.is_empty() {
                *s = text;
                kinds.extend(found);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_json(v, kinds)),
        Value::Object(map) => map.values_mut().for_each(|v| redact_json(v, kinds)),
        _ => {}
    }
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, cap: usize) {
    if ring.len() == cap {
        ring.pop_front();
    }
    ring.push_back(item);
}

impl Observer {
    /// Screens and stores one audit event; returns it as stored, or `None` for a redelivery of
    /// an event already kept.
    pub fn ingest_audit(&self, mut event: AuditEvent) -> Option<AuditRecord> {
        let mut recent = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
        if recent
            .iter()
            .rev()
            .any(|r| r.event.event_id == event.event_id)
        {
            return None;
        }
        let mut kinds = BTreeSet::new();
        for v in event.details.values_mut() {
            redact_json(v, &mut kinds);
        }
        for k in &kinds {
            metrics::counter!("forge_pii_flagged_total", "stream" => "audit", "service" => "-", "kind" => k.clone())
                .increment(1);
        }
        let outcome = serde_json::to_value(event.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        metrics::counter!("forge_audit_events_total", "action" => event.action.clone(), "outcome" => outcome)
            .increment(1);
        metrics::counter!("forge_telemetry_events_total", "stream" => "audit").increment(1);
        let record = AuditRecord {
            event,
            pii: kinds.into_iter().collect(),
        };
        push_bounded(&mut recent, record.clone(), RECENT_AUDIT);
        Some(record)
    }

    /// Counts and stores one created lab; false for a redelivery of a lab already kept.
    pub fn ingest_created(&self, c: &ScenarioCreated) -> bool {
        let mut labs = self.inner.labs.lock().unwrap_or_else(|e| e.into_inner());
        let id = c.scenario_id.to_string();
        if labs.recent.iter().rev().any(|l| l.scenario_id == id) {
            return false;
        }
        let track = c.track.as_str();
        metrics::counter!("forge_labs_created_total", "track" => track).increment(1);
        *labs
            .created
            .entry((c.tenant_id.clone(), track.to_owned()))
            .or_default() += 1;
        let lab = LabRecord {
            scenario_id: id,
            tenant_id: c.tenant_id.clone(),
            track: track.to_owned(),
            template: c.template.clone(),
            containers: c.containers.len(),
            expires_at: c.expires_at,
            seen_at: Utc::now(),
        };
        push_bounded(&mut labs.recent, lab, RECENT_LABS);
        true
    }
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    event_type: Option<String>,
    resource_id: Option<String>,
}

/// Recent audit events of the caller's tenant (those whose details name it), PII redacted.
pub(super) async fn recent_audit(
    State(o): State<Observer>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<axum::Json<Vec<AuditRecord>>, ApiError> {
    require_observer(&caller)?;
    let recent = o.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
    let out = recent
        .iter()
        .filter(|r| r.tenant() == Some(caller.tenant_id.as_str()))
        .filter(|r| {
            q.event_type
                .as_ref()
                .is_none_or(|t| &r.event.event_type == t)
        })
        .filter(|r| {
            q.resource_id
                .as_ref()
                .is_none_or(|id| &r.event.resource_id == id)
        })
        .cloned()
        .collect();
    Ok(axum::Json(out))
}

#[derive(Deserialize)]
pub(super) struct LabsQuery {
    track: Option<String>,
}

#[derive(Serialize)]
pub(super) struct LabsView {
    /// Labs created per track since the hub started.
    created: BTreeMap<String, u64>,
    recent: Vec<LabRecord>,
}

/// Labs of the caller's tenant: created per track, and the most recent ones.
pub(super) async fn recent_labs(
    State(o): State<Observer>,
    caller: Caller,
    Query(q): Query<LabsQuery>,
) -> Result<axum::Json<LabsView>, ApiError> {
    require_observer(&caller)?;
    let labs = o.inner.labs.lock().unwrap_or_else(|e| e.into_inner());
    let tenant = caller.tenant_id.as_str();
    let created = labs
        .created
        .iter()
        .filter(|((t, _), _)| t == tenant)
        .map(|((_, track), n)| (track.clone(), *n))
        .collect();
    let recent = labs
        .recent
        .iter()
        .filter(|l| l.tenant_id == tenant)
        .filter(|l| q.track.as_ref().is_none_or(|t| &l.track == t))
        .cloned()
        .collect();
    Ok(axum::Json(LabsView { created, recent }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_strings_anywhere_in_details() {
        let mut v = serde_json::json!({
            "note": "mail bob@example.org",
            "nested": {"list": ["ok", "password=hunter2"]},
            "n": 3,
        });
        let mut kinds = BTreeSet::new();
        redact_json(&mut v, &mut kinds);
        let text = v.to_string();
        assert!(
            !text.contains("bob@") && !text.contains("hunter2"),
            "{text}"
        );
        assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["email", "secret"]);
        assert_eq!(v["n"], 3);
    }
}
