//! Telemetry over the bus: a log event through the `tracing` layer and an audit event through the
//! tee reach the observer hub on the platform's in-process bus, which redacts and flags their PII
//! before serving them to the tenant's operators; created labs are counted per track.
//!
//! The publishers run on their own log slot, so the test does not depend on (or disturb) the
//! process-global one the platform binds.

use std::time::{Duration, Instant};

use forge_auth::roles;
use forge_core::audit::{AuditEvent, Outcome};
use forge_http::Service;
use forge_lifecycle::telemetry::{self, BusLogLayer, LogSlot, TelemetryConfig};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing_subscriber::layer::SubscriberExt;

use crate::harness::{Harness, TEMPLATE};

/// `GET` an observer route with `token`: status and body.
async fn observe(h: &Harness, token: &str, path: &str) -> (u16, Value) {
    let r = h
        .api
        .http
        .get(format!("{}{path}", h.platform.url(Service::Observer)))
        .bearer_auth(token)
        .send()
        .await
        .expect("observer request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Polls `path` until `find` picks something out of the answer.
async fn eventually(
    h: &Harness,
    token: &str,
    path: &str,
    find: impl Fn(&Value) -> Option<Value>,
) -> Value {
    let start = Instant::now();
    loop {
        let (status, v) = observe(h, token, path).await;
        assert_eq!(status, 200, "{path}: {v}");
        if let Some(found) = find(&v) {
            return found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path} never showed it: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn first(v: &Value) -> Option<Value> {
    v.as_array()?.first().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_audit_events_reach_the_observer_with_pii_flagged() {
    let h = Harness::start().await;
    let (stop, shutdown) = watch::channel(false);
    let slot = LogSlot::default();
    let cfg = TelemetryConfig {
        metrics_interval: None,
        ..TelemetryConfig::default()
    };
    let t = telemetry::start_with(h.platform.bus.clone(), "forge_test", cfg, shutdown, &slot);

    let subscriber = tracing_subscriber::registry().with(BusLogLayer::with_slot(slot.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", tenant_id = "demo");
        let _entered = span.enter();
        tracing::warn!(
            scenario_id = "scn-telemetry",
            contact = "alice@example.org",
            "learner asked for help"
        );
        tracing::warn!(
            scenario_id = "scn-token",
            "upstream refused Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"
        );
    });
    let tee = t.audit_tee(h.platform.audit_log.clone());
    let event = AuditEvent::new(
        chrono::Utc::now(),
        "telemetry.test",
        "forge_test",
        "scn-telemetry",
        "read",
        Outcome::Success,
    )
    .with_detail("tenant_id", "demo")
    .with_detail("note", "mail alice@example.org");
    tee.record(event.clone());

    let operator = h
        .platform
        .mint("demo", &[roles::OBSERVER], "operator")
        .unwrap();
    let log = eventually(
        &h,
        &operator,
        "/v1/telemetry/logs?scenario_id=scn-telemetry",
        first,
    )
    .await;
    assert_eq!(log["service"], "forge_test");
    assert_eq!(log["level"], "warn");
    assert_eq!(
        log["message"],
        "learner asked for help contact=[redacted:email]"
    );
    assert_eq!(log["pii"], json!(["email"]));
    let token = eventually(
        &h,
        &operator,
        "/v1/telemetry/logs?scenario_id=scn-token",
        first,
    )
    .await;
    assert_eq!(
        token["message"],
        "upstream refused Authorization: [redacted:access_token]"
    );
    assert_eq!(token["pii"], json!(["access_token"]));

    let audited = eventually(
        &h,
        &operator,
        "/v1/audit/recent?resource_id=scn-telemetry",
        first,
    )
    .await;
    assert_eq!(audited["event_id"], event.event_id.as_str());
    assert_eq!(audited["details"]["note"], "mail [redacted:email]");
    assert_eq!(audited["pii"], json!(["email"]));
    // The signed log has the event as recorded.
    assert!(
        h.audit_events()
            .iter()
            .any(|e| e["event_id"] == event.event_id.as_str()
                && e["details"]["note"] == "mail alice@example.org"),
        "the tee recorded into the audit log"
    );

    // Another tenant's operator sees neither; a learner may not look.
    let other = h
        .platform
        .mint("acme", &[roles::OBSERVER], "operator")
        .unwrap();
    for path in ["/v1/telemetry/logs", "/v1/audit/recent"] {
        assert_eq!(observe(&h, &other, path).await, (200, json!([])), "{path}");
        assert_eq!(observe(&h, &h.api.token, path).await.0, 403, "{path}");
    }

    stop.send(true).unwrap();
    for task in t.into_tasks() {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("telemetry stops")
            .unwrap();
    }
    assert!(!slot.is_bound());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_labs_are_counted_per_track() {
    let h = Harness::start().await;
    let id = h.running().await;
    let operator = h
        .platform
        .mint("demo", &[roles::OBSERVER], "operator")
        .unwrap();
    let lab = eventually(&h, &operator, "/v1/telemetry/labs?track=netplus", |v| {
        let recent = v["recent"].as_array()?;
        recent
            .iter()
            .find(|l| l["scenario_id"] == id.as_str())
            .cloned()
    })
    .await;
    assert_eq!(lab["tenant_id"], "demo");
    assert_eq!(lab["template"], TEMPLATE);
    assert_eq!(lab["containers"], 2);
    let (_, view) = observe(&h, &operator, "/v1/telemetry/labs").await;
    assert_eq!(view["created"]["netplus"], 1, "{view}");
    let (_, other) = observe(&h, &operator, "/v1/telemetry/labs?track=ccna").await;
    assert_eq!(other["recent"], json!([]));
    assert_eq!(observe(&h, &h.api.token, "/v1/telemetry/labs").await.0, 403);
    h.stop().await;
}

/// The observer exports every durable's backlog under the name the spec's NATSBacklog alert
/// reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_backlog_is_exported_for_the_backlog_alert() {
    let h = Harness::start_with(|cfg| {
        cfg.telemetry.metrics_interval = Some(Duration::from_millis(100));
    })
    .await;
    h.running().await;
    let start = Instant::now();
    loop {
        let text = observer_metrics(&h).await;
        let line = text.lines().find(|l| {
            l.starts_with("nats_jetstream_consumer_pending{")
                && l.contains(r#"durable="orchestrator""#)
                && l.contains(r#"subject="spawn.request""#)
        });
        if let Some(line) = line {
            assert!(line.ends_with(" 0"), "the spawn was consumed: {line}");
            assert!(text.contains("nats_jetstream_consumer_ack_pending{"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no backlog metric in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await;
}

/// The fairness statistics are the hub's memory of every scored lab: a restart keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fairness_statistics_survive_a_restart() {
    let h = Harness::start().await;
    let id = h.running().await;
    h.solve(&id).await;
    h.api.submit(&id).await;
    h.api.wait_score(&id, Duration::from_secs(10)).await;
    let token = h.platform.mint("demo", &[roles::OBSERVER], "ops").unwrap();
    let groups = |v: &Value| -> Option<Value> {
        let g = v["groups"]
            .as_array()?
            .iter()
            .find(|g| g["template"] == TEMPLATE)?;
        (g["count"] == 1).then(|| g.clone())
    };
    let before = eventually(&h, &token, "/v1/fairness", groups).await;
    assert_eq!(before["pass_rate"], 1.0, "{before}");

    let h = h.restart_with(|_| {}).await;
    let token = h.platform.mint("demo", &[roles::OBSERVER], "ops").unwrap();
    let (code, v) = observe(&h, &token, "/v1/fairness").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(groups(&v), Some(before), "{v}");
    h.stop().await;
}

/// Metric samples on the bus with an 11th label key, or past 1000 label combinations of one
/// service, are cut down by the hub and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_limits_refuse_and_count_what_is_past_them() {
    use forge_bus::BusExt as _;
    use forge_bus::messages::MetricSample;
    let h = Harness::start().await;
    let service = format!("limits-{}", uuid::Uuid::new_v4().simple());
    let wide: std::collections::BTreeMap<String, String> = (0..11)
        .map(|i| (format!("k{i:02}"), "v".to_owned()))
        .collect();
    let mut samples = vec![MetricSample {
        service: service.clone(),
        name: "forge_wide".into(),
        labels: wide,
        value: 1.0,
    }];
    // With the wide one, the 1001st combination of the service.
    for i in 0..1000 {
        samples.push(MetricSample {
            service: service.clone(),
            name: "forge_many".into(),
            labels: [("id".to_owned(), i.to_string())].into(),
            value: 1.0,
        });
    }
    for (i, s) in samples.iter().enumerate() {
        h.platform
            .bus
            .publish_json("telemetry.metrics", &format!("{service}-{i}"), s)
            .await
            .unwrap();
    }
    let counted = |text: &str, reason: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("forge_cardinality_limited_total{")
                    && l.contains(&format!("service=\"{service}\""))
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let start = Instant::now();
    loop {
        let text = observer_metrics(&h).await;
        if let (Some(keys), Some(combos)) =
            (counted(&text, "label_keys"), counted(&text, "combinations"))
        {
            assert_eq!(keys, 1.0, "one key past the 10th");
            assert_eq!(combos, 1.0, "the 1001st combination of the service");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "not counted yet");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await;
}

/// The observer hub's `/metrics` text.
async fn observer_metrics(h: &Harness) -> String {
    let url = format!("{}/metrics", h.platform.url(Service::Observer));
    h.api
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The hub's /openapi.json documents its own routes, not only the common ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_documents_its_routes() {
    let h = Harness::start().await;
    let url = format!("{}/openapi.json", h.platform.url(Service::Observer));
    let doc: Value = h
        .api
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/telemetry/logs",
        "/v1/telemetry/labs",
        "/v1/audit/recent",
        "/v1/fairness",
    ] {
        let get = &doc["paths"][path]["get"];
        assert!(get["responses"]["200"].is_object(), "{path}: {get}");
        assert!(get["responses"]["401"].is_object(), "{path}: {get}");
    }
    h.stop().await;
}
