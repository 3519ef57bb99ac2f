use std::sync::Arc;
use std::time::Duration;

use forge_bus::messages::LogEvent;
use forge_bus::{Bus, MemoryBus, subjects};
use forge_core::audit::{AuditEvent, AuditSink, MemoryAuditSink, Outcome};
use tokio::sync::{mpsc, watch};
use tracing_subscriber::layer::SubscriberExt;

use super::logs::LogSink;
use super::*;

/// A slot bound to a queue of `capacity` the test reads itself (no publisher).
fn bound_slot(capacity: usize) -> (LogSlot, mpsc::Receiver<LogEvent>) {
    let slot = LogSlot::default();
    let (tx, rx) = mpsc::channel(capacity);
    slot.bind(LogSink::new("forge_test", &TelemetryConfig::default(), tx));
    (slot, rx)
}

/// Runs `f` with a subscriber that has only the bus layer on `slot`.
fn with_layer(slot: &LogSlot, f: impl FnOnce()) {
    let subscriber = tracing_subscriber::registry().with(BusLogLayer::with_slot(slot.clone()));
    tracing::subscriber::with_default(subscriber, f);
}

fn drain(rx: &mut mpsc::Receiver<LogEvent>) -> Vec<LogEvent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

// Events of this module are muted like the rest of `telemetry`: the tests log as `app`.

#[test]
fn events_become_log_events_with_ids_labels_and_fields() {
    let (slot, mut rx) = bound_slot(16);
    with_layer(&slot, || {
        let span = tracing::info_span!("request", tenant_id = "demo");
        let _entered = span.enter();
        tracing::info!(target: "app", scenario_id = "scn-1", track = "netplus", user = "bob@example.org", attempt = 2, "lab built");
        tracing::debug!(target: "app", "below the level");
        tracing::warn!(target: "forge_bus::consumer", "the bus is muted");
        tracing::warn!(target: "async_nats", "so is its client");
        tracing::error!(target: "forge_lifecycle::orchestrator::api", note = "two words", "failed");
    });
    let events = drain(&mut rx);
    assert_eq!(events.len(), 2, "{events:?}");
    let built = &events[0];
    assert_eq!(built.service, "forge_test");
    assert_eq!(built.level, "info");
    assert_eq!(built.message, "lab built user=bob@example.org attempt=2");
    assert_eq!(built.scenario_id.as_deref(), Some("scn-1"));
    assert_eq!(built.tenant_id.as_deref(), Some("demo"), "from the span");
    assert_eq!(built.labels["track"], "netplus");
    assert_eq!(built.labels["target"], "app");
    let failed = &events[1];
    assert_eq!(failed.level, "error");
    assert_eq!(failed.service, "forge_orchestrator", "named by its module");
    assert_eq!(failed.message, r#"failed note="two words""#);
}

#[test]
fn a_full_queue_drops_and_counts() {
    let (slot, mut rx) = bound_slot(2);
    with_layer(&slot, || {
        for i in 0..5 {
            tracing::info!(target: "app", i, "burst");
        }
    });
    assert_eq!(drain(&mut rx).len(), 2);
    assert_eq!(slot.dropped(), 3);
}

#[test]
fn nothing_is_published_before_a_sink_is_bound() {
    let slot = LogSlot::default();
    with_layer(&slot, || tracing::error!("nobody listens"));
    assert!(!slot.is_bound());
    assert_eq!(slot.dropped(), 0);
}

#[tokio::test]
async fn events_inside_a_publisher_are_not_published() {
    let (slot, mut rx) = bound_slot(16);
    let subscriber = tracing_subscriber::registry().with(BusLogLayer::with_slot(slot.clone()));
    let _default = tracing::subscriber::set_default(subscriber);
    muted(async { tracing::warn!(target: "hyper", "under a publish") }).await;
    tracing::warn!(target: "hyper", "elsewhere");
    let events = drain(&mut rx);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].message, "elsewhere");
}

#[test]
fn long_messages_are_cut_at_a_char_boundary() {
    let (slot, mut rx) = bound_slot(1);
    let long = "é".repeat(logs::MAX_MESSAGE_BYTES);
    with_layer(&slot, || tracing::info!(target: "app", "{long}"));
    let ev = drain(&mut rx).remove(0);
    assert!(ev.message.len() <= logs::MAX_MESSAGE_BYTES);
    assert!(ev.message.chars().all(|c| c == 'é'));
}

/// The next message on `subject` through a fresh durable, as JSON.
async fn next_on(bus: &MemoryBus, subject: &str) -> serde_json::Value {
    let mut sub = bus.subscribe(subject, "test").await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a message in time")
        .unwrap();
    msg.ack().await.unwrap();
    msg.json().unwrap()
}

#[tokio::test]
async fn the_audit_tee_records_into_the_inner_sink_and_publishes() {
    let bus = MemoryBus::default();
    let (stop, shutdown) = watch::channel(false);
    let cfg = TelemetryConfig {
        metrics_interval: None,
        ..TelemetryConfig::default()
    };
    let t = start_with(
        Arc::new(bus.clone()),
        "forge_test",
        cfg,
        shutdown,
        &LogSlot::default(),
    );
    let inner = Arc::new(MemoryAuditSink::default());
    let tee = t.bus_audit_sink(inner.clone());
    let ev = AuditEvent::new(
        chrono::Utc::now(),
        "scenario.created",
        "forge_orchestrator",
        "scn-1",
        "create",
        Outcome::Success,
    );
    tee.record(ev.clone());
    assert_eq!(inner.events().len(), 1, "recorded at once");
    assert_eq!(inner.events()[0], ev);
    let published = next_on(&bus, subjects::AUDIT_EVENTS).await;
    assert_eq!(published["event_id"], ev.event_id.as_str());
    assert_eq!(tee.dropped(), 0);

    stop.send(true).unwrap();
    for task in t.into_tasks() {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
    // The publisher is gone: still recorded, counted as not published.
    tee.record(ev.clone());
    assert_eq!(inner.events().len(), 2);
    assert_eq!(tee.dropped(), 1);
}

#[tokio::test]
async fn bound_log_events_reach_the_bus_until_shutdown() {
    let bus = MemoryBus::default();
    let (stop, shutdown) = watch::channel(false);
    let slot = LogSlot::default();
    let cfg = TelemetryConfig {
        metrics_interval: None,
        ..TelemetryConfig::default()
    };
    let t = start_with(Arc::new(bus.clone()), "forge_test", cfg, shutdown, &slot);
    assert!(slot.is_bound());
    with_layer(
        &slot,
        || tracing::warn!(target: "app", scenario_id = "scn-2", "disk almost full"),
    );
    let published = next_on(&bus, subjects::TELEMETRY_LOGS).await;
    assert_eq!(published["message"], "disk almost full");
    assert_eq!(published["scenario_id"], "scn-2");
    stop.send(true).unwrap();
    for task in t.into_tasks() {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
    assert!(!slot.is_bound(), "unbound at shutdown");
}

#[test]
fn prometheus_text_becomes_forge_samples() {
    let text = "\
# HELP forge_spawn_requests_total spawns\n\
# TYPE forge_spawn_requests_total counter\n\
forge_spawn_requests_total{track=\"netplus\",status=\"ok \\\"quoted\\\"\"} 3\n\
forge_active_scenarios 2\n\
forge_spawn_duration_seconds_bucket{le=\"0.5\"} 1\n\
forge_spawn_duration_seconds_sum 0.25\n\
forge_odd{a=\"x\"} NaN\n\
other_metric 1\n";
    let samples = metrics::parse(text, "forge_test", 10);
    let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "forge_spawn_requests_total",
            "forge_active_scenarios",
            "forge_spawn_duration_seconds_sum"
        ]
    );
    assert_eq!(samples[0].labels["status"], "ok \"quoted\"");
    assert_eq!(samples[0].labels["track"], "netplus");
    assert_eq!(samples[0].value, 3.0);
    assert_eq!(samples[0].service, "forge_test");
    assert_eq!(
        metrics::parse(text, "forge_test", 1).len(),
        1,
        "bounded per tick"
    );
}
