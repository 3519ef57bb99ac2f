//! The training gate at the front door (issue 16): a template the gate refuses is a 403 with
//! its reasons before anything is stored, charged or published, audited like a spawn-gate deny.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use forge_core::ScenarioStatus;
use forge_core::audit::Outcome;
use forge_services::spawn::{GateDecision, GateError, StaticGate};
use forge_store::{LedgerQuery, Store};
use serde_json::{Value, json};

use crate::support::{Harness, Options};

const DENIED: &str = "netplus-services-lab";
const REASON: &str = "limits.memory_mb 4096 exceeds the netplus track's 2048";

/// The policy-like spawn gate, and a training gate that refuses [`DENIED`] while `strict`,
/// recording every input it was asked about.
fn gate(strict: Arc<AtomicBool>, inputs: Arc<Mutex<Vec<Value>>>) -> StaticGate {
    StaticGate::like_policy().with_training(move |input| {
        inputs.lock().unwrap().push(input.clone());
        if strict.load(Ordering::SeqCst) && input["metadata"]["name"] == DENIED {
            Ok(GateDecision::deny([REASON]))
        } else {
            Ok(GateDecision::allow())
        }
    })
}

/// Every scenario in `store`, whatever its status.
async fn scenarios(store: &dyn Store) -> usize {
    use ScenarioStatus::*;
    let all = [Pending, Creating, Running, Completed, Failed, Timeout];
    store.list_by_status(&all).await.unwrap().len()
}

#[tokio::test]
async fn a_training_gate_deny_is_403_with_reasons_and_nothing_is_stored_or_charged() {
    let strict = Arc::new(AtomicBool::new(true));
    let inputs = Arc::new(Mutex::new(Vec::new()));
    let h = Harness::start(Options {
        gate: Arc::new(gate(strict.clone(), inputs.clone())),
        ..Options::default()
    })
    .await;
    let t = h.spawner("acme");
    let req = json!({"track": "netplus", "template": DENIED, "request_id": "tg-1"});
    let r = h.spawn(&t, &req, &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (403, "training_gate_denied".into()),
        "{}",
        r.text
    );
    let details = &r.json()["error"]["details"];
    assert_eq!(details["deny_reasons"], json!([REASON]), "{details}");
    assert_eq!(details["template"], DENIED);
    assert!(r.message().contains(DENIED), "{}", r.message());

    // The gate decided on the template flattened, as the orchestrator's training gate does.
    let seen = inputs.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen["metadata"]["name"], DENIED);
    assert!(seen["metadata"]["labels"].is_array(), "{seen}");
    for key in ["limits", "network", "assets", "successCriteria"] {
        assert!(!seen[key].is_null(), "input lacks {key}: {seen}");
    }

    // Nothing stored, charged, queued or published.
    assert_eq!(scenarios(&*h.store).await, 0);
    assert_eq!(h.store.count_active("acme").await.unwrap(), 0);
    assert!(
        h.store
            .ledger(&LedgerQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.store.outbox_backlog().await.unwrap(), 0);
    assert_eq!(h.bus.stored("spawn.request"), 0);

    // Audited like a spawn-gate deny, naming the gate.
    let events = h.audit.events();
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "spawn.request" && e.outcome == Outcome::Denied)
        .collect();
    assert_eq!(denied.len(), 1, "{events:?}");
    let e = denied[0];
    assert_eq!(e.details["gate"], "training_gate");
    assert_eq!(e.details["deny_reasons"], json!([REASON]));
    assert_eq!(e.details["template"], DENIED);
    assert_eq!(e.resource_id, "tg-1");

    // A deny is not replayed: once the policy allows the template, the same key passes.
    strict.store(false, Ordering::SeqCst);
    let r = h.spawn(&t, &req, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(scenarios(&*h.store).await, 1);
    assert_eq!(
        h.store.ledger(&LedgerQuery::default()).await.unwrap().len(),
        1
    );
    h.stop().await;
}

#[tokio::test]
async fn the_spawn_gate_decides_first_and_other_templates_pass() {
    let strict = Arc::new(AtomicBool::new(true));
    let inputs = Arc::new(Mutex::new(Vec::new()));
    let h = Harness::start(Options {
        gate: Arc::new(gate(strict, inputs.clone())),
        ..Options::default()
    })
    .await;
    // tiny is not entitled to cissp: the spawn gate's answer, the template never asked about.
    let r = h
        .spawn(&h.spawner("tiny"), &super::body("cissp", "sg-1"), &[])
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "policy_denied".into()));
    assert!(inputs.lock().unwrap().is_empty());
    // The track's default template is allowed and spawns as before.
    let r = h
        .spawn(&h.spawner("acme"), &super::body("netplus", "ok-1"), &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(inputs.lock().unwrap().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_training_gate_outage_is_502_and_stores_nothing() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let gate = StaticGate::like_policy().with_training(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        Err(GateError::Unavailable(
            "connection refused (127.0.0.1:8181)".into(),
        ))
    });
    let h = Harness::start(Options {
        gate: Arc::new(gate),
        ..Options::default()
    })
    .await;
    let r = h
        .spawn(&h.spawner("acme"), &super::body("netplus", "out-1"), &[])
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (502, "policy_unavailable".into())
    );
    assert!(r.message().contains("training gate"), "{}", r.message());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(scenarios(&*h.store).await, 0);
    assert_eq!(h.bus.stored("spawn.request"), 0);
    h.stop().await;
}
