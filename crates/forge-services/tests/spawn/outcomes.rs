//! What a spawn produces (201 body, pending scenario, bus message, audit event) and how the
//! gate's decisions and outages surface (403 with reasons, 502, 503 then convergence).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use forge_bus::messages::SpawnRequested;
use forge_bus::{Bus, BusError, MemoryBus, PublishAck, Subscription};
use forge_core::audit::Outcome;
use forge_core::{ScenarioId, ScenarioStatus};
use forge_services::spawn::{GateDecision, GateError, StaticGate};
use forge_store::Store;
use serde_json::json;

use super::body;
use crate::support::{Harness, Options};

#[tokio::test]
async fn created_response_scenario_message_and_audit() {
    let h = Harness::start(Options::default()).await;
    let mut sub = h
        .bus
        .subscribe("spawn.request", "orchestrator")
        .await
        .unwrap();
    let t = h.spawner("globex");
    let before = Utc::now();
    let r = h.spawn(&t, &body("netplus", "req-abc123"), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "request_id",
            "scenario_id",
            "access_url",
            "expires_at",
            "status"
        ]
    );
    assert_eq!(v["request_id"], "req-abc123");
    assert_eq!(v["status"], "pending", "no `wait`: answered at once");
    let id: ScenarioId = v["scenario_id"]
        .as_str()
        .unwrap()
        .parse()
        .expect("scn- + 12 hex");
    assert_eq!(v["access_url"], format!("{}/access/{id}", h.base));
    let expires: DateTime<Utc> = v["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    // netplus-routing-lab: timeout_minutes 30.
    let expected = before + chrono::Duration::minutes(30);
    assert!(
        (expires - expected).num_seconds().abs() <= 2,
        "{expires} vs {expected}"
    );

    let rec = h.store.get("globex", &id).await.unwrap().unwrap();
    assert_eq!(rec.status, ScenarioStatus::Pending);
    assert_eq!(
        (rec.owner_sub.as_str(), rec.template.as_str()),
        ("globex-learner", "netplus-routing-lab")
    );

    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.msg_id, "globex:req-abc123");
    let payload: SpawnRequested = msg.json().unwrap();
    assert_eq!(payload.scenario_id, id);
    assert_eq!(
        serde_json::to_value(&payload).unwrap(),
        json!({"scenario_id": id.as_str(), "tenant_id": "globex", "owner_sub": "globex-learner",
               "track": "netplus", "template": "netplus-routing-lab", "request_id": "req-abc123"})
    );
    msg.ack().await.unwrap();

    let events = h.audit.events();
    let e = events
        .iter()
        .find(|e| e.event_type == "spawn.request")
        .expect("audited");
    assert_eq!(
        (e.outcome, e.resource_id.as_str(), e.actor.as_str()),
        (Outcome::Success, id.as_str(), "globex-learner")
    );
    assert_eq!(e.details["tenant_id"], "globex");
    h.stop().await;
}

#[tokio::test]
async fn gate_denials_are_403_with_reasons_and_audited() {
    let h = Harness::start(Options::default()).await;
    let tiny = h.spawner("tiny");
    // Not entitled.
    let r = h.spawn(&tiny, &body("cissp", "d1"), &[]).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "policy_denied".into()));
    let reasons = r.json()["error"]["details"]["deny_reasons"].clone();
    assert!(
        reasons.to_string().contains("not entitled to track"),
        "{reasons}"
    );
    // Quota: two labs allowed at once.
    for i in 0..2 {
        assert_eq!(
            h.spawn(&tiny, &body("netplus", &format!("q{i}")), &[])
                .await
                .status,
            201
        );
    }
    let r = h.spawn(&tiny, &body("netplus", "q2"), &[]).await;
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error"]["details"]["deny_reasons"]
            .to_string()
            .contains("2 active scenarios"),
        "{}",
        r.text
    );
    // A denial is not stored for replay: once a lab ends, the same key passes.
    let pending = h
        .store
        .list_by_status(&[ScenarioStatus::Pending])
        .await
        .unwrap();
    h.store
        .transition(
            &pending[0].scenario_id,
            &[ScenarioStatus::Pending],
            ScenarioStatus::Failed,
            Some("test"),
        )
        .await
        .unwrap();
    assert_eq!(
        h.spawn(&tiny, &body("netplus", "q2"), &[]).await.status,
        201
    );
    let denied = h
        .audit
        .events()
        .iter()
        .filter(|e| e.outcome == Outcome::Denied)
        .count();
    assert_eq!(denied, 2);
    h.stop().await;
}

#[tokio::test]
async fn gate_unavailable_is_502_and_a_retry_passes_later() {
    let down = Arc::new(AtomicBool::new(true));
    let flag = down.clone();
    let gate = StaticGate::new(move |_| {
        if flag.load(Ordering::SeqCst) {
            Err(GateError::Unavailable(
                "connection refused (127.0.0.1:8181)".into(),
            ))
        } else {
            Ok(GateDecision::allow())
        }
    });
    let h = Harness::start(Options {
        gate: Arc::new(gate),
        ..Options::default()
    })
    .await;
    let t = h.spawner("demo");
    let r = h.spawn(&t, &body("netplus", "g1"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (502, "policy_unavailable".into())
    );
    assert!(r.message().contains("unavailable"));
    assert_eq!(h.bus.stored("spawn.request"), 0);
    down.store(false, Ordering::SeqCst);
    assert_eq!(h.spawn(&t, &body("netplus", "g1"), &[]).await.status, 201);
    // A policy fault that is not an outage is a real 500, still in the envelope.
    let h2 = Harness::start(Options {
        gate: Arc::new(StaticGate::new(|_| {
            Err(GateError::Other("rego: undefined".into()))
        })),
        ..Options::default()
    })
    .await;
    let r = h2
        .spawn(&h2.spawner("demo"), &body("netplus", "g2"), &[])
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (500, "internal".into()));
    assert!(
        !r.text.contains("rego"),
        "internals stay in the log: {}",
        r.text
    );
    h.stop().await;
    h2.stop().await;
}

/// A bus whose first `fail` publishes fail.
struct FlakyBus {
    inner: MemoryBus,
    fail: AtomicUsize,
}

#[async_trait]
impl Bus for FlakyBus {
    async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        payload: Vec<u8>,
    ) -> Result<PublishAck, BusError> {
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Err(BusError::Unavailable("nats: connection closed".into()));
        }
        self.inner.publish(subject, msg_id, payload).await
    }
    async fn subscribe(
        &self,
        subject: &str,
        durable: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.inner.subscribe(subject, durable).await
    }
    async fn backlog(&self) -> Result<Vec<forge_bus::Backlog>, BusError> {
        self.inner.backlog().await
    }
    async fn ping(&self) -> Result<(), BusError> {
        self.inner.ping().await
    }
}

#[tokio::test]
async fn bus_outage_is_503_and_the_retry_converges_on_the_same_scenario() {
    let memory = MemoryBus::default();
    let bus = Arc::new(FlakyBus {
        inner: memory.clone(),
        fail: AtomicUsize::new(1),
    });
    let h = Harness::start(Options {
        bus: Some(bus),
        ..Options::default()
    })
    .await;
    let t = h.spawner("globex");
    let r = h.spawn(&t, &body("netplus", "b1"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (503, "bus_unavailable".into())
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    let stuck = h
        .store
        .list_by_status(&[ScenarioStatus::Pending])
        .await
        .unwrap();
    assert_eq!(
        stuck.len(),
        1,
        "the scenario was persisted before the publish"
    );
    let again = h.spawn(&t, &body("netplus", "b1"), &[]).await;
    assert_eq!(again.status, 201);
    assert_eq!(
        again.json()["scenario_id"],
        stuck[0].scenario_id.as_str(),
        "same scenario"
    );
    assert_eq!(memory.stored("spawn.request"), 1);
    assert_eq!(
        h.store.ledger(&Default::default()).await.unwrap().len(),
        1,
        "charged once"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spawns_cannot_overshoot_the_quota() {
    let h = Arc::new(Harness::start(Options::default()).await);
    // tiny: max 2 active labs. The gate sees 0 active for most of these; the store decides.
    let t = h.spawner("tiny");
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (h, t) = (h.clone(), t.clone());
            tokio::spawn(async move { h.spawn(&t, &body("netplus", &format!("c{i}")), &[]).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        if r.status == 403 {
            assert_eq!(r.code(), "policy_denied");
        }
        statuses.push(r.status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [201, 201, 403, 403, 403, 403, 403, 403, 403, 403]);
    assert_eq!(h.store.count_active("tiny").await.unwrap(), 2);
    assert_eq!(h.store.ledger(&Default::default()).await.unwrap().len(), 2);
    Arc::try_unwrap(h).ok().unwrap().stop().await;
}
