//! Records the store reads and writes.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, ScenarioState, ScenarioStatus, Track};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A scenario as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioRecord {
    pub scenario_id: ScenarioId,
    pub tenant_id: String,
    /// The `sub` claim of whoever spawned it.
    pub owner_sub: String,
    pub track: Track,
    pub template: String,
    pub request_id: String,
    pub status: ScenarioStatus,
    pub error: Option<String>,
    /// The lab's fabric namespace, once the orchestrator made it.
    pub network_id: Option<String>,
    pub containers: Vec<String>,
    pub access_url: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    /// The lab host that claimed it (distributed mode); `None` while pending.
    #[serde(default)]
    pub host_id: Option<String>,
    /// The lab's last check ([`crate::Store::record_check`]); `None` before the first.
    #[serde(default)]
    pub last_check: Option<CheckSummary>,
}

/// The last check of a running lab: what its learner (or an instructor) was told, kept for the
/// instructor's list of live labs and the learner's page after a reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSummary {
    pub checked_at: DateTime<Utc>,
    pub passed: u32,
    pub total: u32,
    /// The weighted score the lab would get if submitted then.
    pub score: f64,
    /// Criterion id → whether it passed.
    pub criteria: BTreeMap<String, bool>,
}

impl ScenarioRecord {
    /// The spec's ScenarioState view.
    pub fn state(&self) -> ScenarioState {
        ScenarioState {
            scenario_id: self.scenario_id.clone(),
            status: self.status,
            created_at: self.created_at,
            updated_at: self.updated_at,
            network_id: self.network_id.clone().unwrap_or_default(),
            containers: self.containers.clone(),
            error: self.error.clone(),
        }
    }
}

/// What [`crate::Store::insert_pending`] needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewScenario {
    pub scenario_id: ScenarioId,
    pub tenant_id: String,
    pub owner_sub: String,
    pub track: Track,
    pub template: String,
    pub request_id: String,
    pub access_url: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Result of [`crate::Store::insert_pending`].
#[derive(Debug, Clone, PartialEq)]
pub struct Inserted {
    pub record: ScenarioRecord,
    /// `false`: the tenant's request_id already had this scenario; nothing was written.
    pub created: bool,
}

impl Inserted {
    /// The answer for a request whose `(tenant_id, request_id)` already has `existing`: the same
    /// scenario again (a retry converges), unless the request asked for another track or
    /// template, which is a reused request id. One rule for every backend.
    pub(crate) fn existing(
        existing: ScenarioRecord,
        new: &NewScenario,
    ) -> Result<Self, StoreError> {
        if existing.track != new.track || existing.template != new.template {
            return Err(StoreError::RequestIdReused {
                tenant_id: new.tenant_id.clone(),
                request_id: new.request_id.clone(),
                existing: existing.scenario_id.to_string(),
            });
        }
        Ok(Self {
            record: existing,
            created: false,
        })
    }
}

/// One charged spawn: a row of the billing ledger, and the body of the gateway event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// Stable per `(tenant_id, request_id)`; the gateway's Idempotency-Key.
    pub event_id: String,
    pub tenant_id: String,
    pub request_id: String,
    pub scenario_id: ScenarioId,
    pub track: Track,
    pub template: String,
    pub tier: String,
    pub plan: String,
    pub amount_cents: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

impl Charge {
    /// Event id of the refund of the charge `event_id`: derived, so a retry finds the refund
    /// it already wrote, and the gateway deduplicates it by the same key.
    pub fn refund_event_id(event_id: &str) -> String {
        format!("{REFUND_PREFIX}{event_id}")
    }

    /// Whether this row refunds a charge rather than being one.
    pub fn is_refund(&self) -> bool {
        self.event_id.starts_with(REFUND_PREFIX)
    }

    /// The refund of this charge made at `now`: the same tenant, request and items, the amount
    /// negated.
    pub fn refund(&self, now: DateTime<Utc>) -> Charge {
        Charge {
            event_id: Self::refund_event_id(&self.event_id),
            amount_cents: -self.amount_cents,
            created_at: now,
            ..self.clone()
        }
    }

    /// The gateway event of a refund: the refund row itself, plus what it refunds and why, so
    /// the gateway need not infer it from the sign of the amount.
    pub fn refund_payload(&self, refund_of: &str, reason: &str) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("charge serializes");
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("kind".into(), "refund".into());
            m.insert("refund_of".into(), refund_of.into());
            m.insert("reason".into(), reason.into());
        }
        v
    }
}

/// Why `rec` may not be refunded (`None`: it may): only a scenario that ended `failed` without
/// ever running was charged for nothing. One rule for every backend.
pub(crate) fn not_refundable(rec: &ScenarioRecord) -> Option<StoreError> {
    let why = if rec.status != ScenarioStatus::Failed {
        format!("it is {}, not failed", rec.status)
    } else if rec.started_at.is_some() {
        "it ran before it failed".to_owned()
    } else {
        return None;
    };
    Some(StoreError::NotRefundable {
        id: rec.scenario_id.to_string(),
        why,
    })
}

/// Prefix of every refund's event id (charges' ids are `chg_…`).
pub const REFUND_PREFIX: &str = "refund-";

/// Result of [`crate::Store::refund`].
#[derive(Debug, Clone, PartialEq)]
pub struct Refunded {
    /// The refund row, as stored.
    pub refund: Charge,
    /// `false`: the scenario was refunded before; nothing was written.
    pub created: bool,
    /// Whether the refund went to the billing outbox (its charge did: gateway mode).
    pub queued: bool,
}

/// How a new scenario is billed.
#[derive(Debug, Clone, Copy)]
pub enum Billing<'a> {
    /// Not billed (platform-internal scenarios).
    None,
    /// A ledger row (`BILLING_MODE=stub`).
    Ledger(&'a Charge),
    /// A ledger row plus an outbox item for the billing gateway (`BILLING_MODE=gateway`).
    LedgerAndOutbox(&'a Charge),
}

/// Which ledger rows to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerQuery {
    pub tenant_id: Option<String>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
}

/// An event waiting for (or done with) delivery to an external system.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub event_id: String,
    /// What kind of event: `billing.charge` or `billing.refund`.
    pub topic: String,
    pub payload: serde_json::Value,
    /// Failed attempts so far.
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Topic of billing events in the outbox.
pub const BILLING_TOPIC: &str = "billing.charge";

/// Topic of refunds in the outbox.
pub const REFUND_TOPIC: &str = "billing.refund";

/// Arguments of [`crate::Store::begin`].
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyBegin<'a> {
    pub tenant_id: &'a str,
    pub key: &'a str,
    /// Fingerprint of the request body; another body under the same key is a mismatch.
    pub request_hash: &'a str,
    pub now: DateTime<Utc>,
    /// How long the claimer may take before another request may take the key over.
    pub lease: Duration,
    /// How long the key and its stored response are kept.
    pub retention: Duration,
}

/// Outcome of [`crate::Store::begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Began {
    /// This caller owns the key: do the work, then `complete` or `abandon`.
    New,
    /// Another request with this key and body is being processed.
    InFlight,
    /// Already done: replay this response.
    Done { status: u16, body: Vec<u8> },
    /// The key was used with another request body.
    Mismatch,
}

/// A lab host as registered: where it answers, how many labs it takes, and its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabHost {
    pub host_id: String,
    /// Where the host's worker answers lab actions (check, exec, terminal).
    pub url: String,
    /// Where the host's playbook runner answers playbooks run in its labs (empty: none).
    #[serde(default)]
    pub runner_url: String,
    /// Most labs the host runs at once.
    pub capacity: u32,
    /// When this run of the host started.
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// After this instant without a renewal, the host is presumed dead and its labs lost.
    pub lease_expires_at: DateTime<Utc>,
}

impl LabHost {
    /// Whether the lease has run out at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.lease_expires_at <= now
    }
}

/// Why an extension of `id` changed nothing, given the scenario as it is now (`None`: gone).
/// One wording for every backend.
pub(crate) fn not_extendable(id: &ScenarioId, current: Option<ScenarioRecord>) -> StoreError {
    match current {
        None => StoreError::NotFound(id.to_string()),
        Some(r) if r.status.is_terminal() => StoreError::NotExtendable {
            id: id.to_string(),
            why: format!("it has ended ({})", r.status),
        },
        Some(r) => StoreError::NotExtendable {
            id: id.to_string(),
            why: format!(
                "it already runs until {}, the longest a lab may run",
                r.expires_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        },
    }
}
