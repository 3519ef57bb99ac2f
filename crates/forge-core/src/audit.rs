//! The spec's AuditEvent and the one interface every service writes audit events through.
//!
//! Signing, hash chaining and storage live behind [`AuditSink`] (see `forge-evidence`); this module
//! only defines the record and the seam.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Outcome of an audited operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Denied,
    Error,
}

/// One audited operation (spec: Audit Trail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub event_id: String,
    /// RFC 3339, UTC.
    pub timestamp: DateTime<Utc>,
    /// `spawn.request`, `scenario.created`, `policy.decision`, ...
    pub event_type: String,
    /// Service or user identifier.
    pub actor: String,
    pub resource_id: String,
    /// create, update, delete, execute, read, decide
    pub action: String,
    pub outcome: Outcome,
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Ed25519 signature (base64) over the canonical JSON of the event without this field.
    #[serde(default)]
    pub signature: Option<String>,
}

impl AuditEvent {
    /// A new unsigned event with a fresh id, stamped with `now`.
    pub fn new(
        now: DateTime<Utc>,
        event_type: impl Into<String>,
        actor: impl Into<String>,
        resource_id: impl Into<String>,
        action: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        Self {
            event_id: uuid::Uuid::new_v4().to_string(),
            timestamp: now,
            event_type: event_type.into(),
            actor: actor.into(),
            resource_id: resource_id.into(),
            action: action.into(),
            outcome,
            details: Default::default(),
            signature: None,
        }
    }

    /// Adds one detail field.
    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// Where audit events go. Implementations sign, chain and persist them; they must not block the
/// caller for long (buffer if the backing store is slow) and must never drop an event silently.
pub trait AuditSink: Send + Sync {
    fn record(&self, event: AuditEvent);
}

/// A sink that discards events; for tools and tests that audit nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullAuditSink;

impl AuditSink for NullAuditSink {
    fn record(&self, _event: AuditEvent) {}
}

/// A sink that keeps events in memory; for unit tests.
#[derive(Debug, Default)]
pub struct MemoryAuditSink(pub std::sync::Mutex<Vec<AuditEvent>>);

impl AuditSink for MemoryAuditSink {
    fn record(&self, event: AuditEvent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

impl MemoryAuditSink {
    pub fn events(&self) -> Vec<AuditEvent> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
