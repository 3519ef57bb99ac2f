//! `audit.events`: [`BusAuditSink`] tees every audit event into the signed audit log and onto
//! the bus, where the observer hub counts and screens them.
//!
//! The signed, hash-chained log stays the record of truth: the event is recorded there first,
//! and the bus copy is best effort. `record` is called on request paths, so the copy is only
//! offered to a bounded queue (never awaited); when the queue is full it is dropped and counted
//! in `forge_telemetry_dropped_total{kind="audit"}`, and the log still has it. The copy is the
//! event as the service built it: its signature lives in the log, where the observer's
//! `/audit/events/{event_id}/signature` serves it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use forge_core::audit::{AuditEvent, AuditSink};
use tokio::sync::mpsc;

pub(super) const KIND: &str = "audit";

/// An audit event is one fact: its id dedups a repeated publish.
pub(super) fn msg_id(ev: &AuditEvent) -> String {
    format!("audit:{}", ev.event_id)
}

/// Records into an inner sink and publishes on `audit.events` (see the module doc). Made by
/// [`super::Telemetry::audit_tee`].
pub struct BusAuditSink {
    inner: Arc<dyn AuditSink>,
    tx: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
}

impl BusAuditSink {
    pub(super) fn new(
        inner: Arc<dyn AuditSink>,
        tx: mpsc::Sender<AuditEvent>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        Self { inner, tx, dropped }
    }

    /// Events recorded but not queued for the bus (queue full, or the publisher stopped).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl AuditSink for BusAuditSink {
    fn record(&self, event: AuditEvent) {
        let copy = event.clone();
        self.inner.record(event);
        super::offer(&self.tx, copy, KIND, &self.dropped);
    }
}
