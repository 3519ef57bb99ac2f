//! One request_id per tenant yields one scenario, one charge and one bus message, however many
//! times and however concurrently it is sent (docs/design.md §6).

use std::collections::BTreeSet;
use std::sync::Arc;

use forge_core::ScenarioStatus;
use forge_store::{LedgerQuery, Store};
use serde_json::json;

use super::body;
use crate::support::{Harness, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_spawns_make_one_scenario() {
    let h = Arc::new(Harness::start(Options::default()).await);
    let token = h.spawner("demo");
    let req =
        json!({"track": "netplus", "request_id": "burst-1", "metadata": {"course": "n+ 101"}});
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (h, token, req) = (h.clone(), token.clone(), req.clone());
        tasks.push(tokio::spawn(
            async move { h.spawn(&token, &req, &[]).await },
        ));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    assert!(
        replies.iter().all(|r| r.status == 201),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let bodies: BTreeSet<&str> = replies.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(bodies.len(), 1, "identical bodies: {bodies:?}");
    let replayed = replies
        .iter()
        .filter(|r| r.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(replayed, 49, "all but the first are replays");

    let scenarios = h
        .store
        .list_by_status(&[ScenarioStatus::Pending])
        .await
        .unwrap();
    assert_eq!(scenarios.len(), 1);
    assert_eq!(
        scenarios[0].scenario_id.as_str(),
        replies[0].json()["scenario_id"]
    );
    let ledger = h.store.ledger(&LedgerQuery::default()).await.unwrap();
    assert_eq!(ledger.len(), 1, "one billing row");
    assert_eq!(h.bus.stored("spawn.request"), 1, "one bus message");
    let spawned = h
        .audit
        .events()
        .iter()
        .filter(|e| e.event_type == "spawn.request")
        .count();
    assert_eq!(spawned, 1, "one audit event");

    // Later retries replay too, with the key in the header instead of the body.
    let again = h
        .spawn(
            &token,
            &json!({"track": "netplus", "metadata": {"course": "n+ 101"}}),
            &[("x-request-id", "burst-1")],
        )
        .await;
    assert_eq!(
        (again.status.as_u16(), again.text.as_str()),
        (201, replies[0].text.as_str())
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    Arc::try_unwrap(h).ok().unwrap().stop().await;
}

#[tokio::test]
async fn same_key_other_body_is_422_and_keys_are_per_tenant() {
    let h = Harness::start(Options::default()).await;
    let demo = h.spawner("demo");
    let first = h.spawn(&demo, &body("netplus", "k1"), &[]).await;
    assert_eq!(first.status, 201);
    for other in [
        body("ccna", "k1"),
        json!({"track": "netplus", "request_id": "k1", "template": "netplus-services-lab"}),
        json!({"track": "netplus", "request_id": "k1", "metadata": {"x": 1}}),
    ] {
        let r = h.spawn(&demo, &other, &[]).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (422, "idempotency_key_reused".into()),
            "{other}"
        );
        assert!(r.message().contains("k1"), "{}", r.message());
    }
    // Another tenant's identical key is its own spawn.
    let globex = h.spawner("globex");
    let second = h.spawn(&globex, &body("netplus", "k1"), &[]).await;
    assert_eq!(second.status, 201);
    assert_ne!(first.json()["scenario_id"], second.json()["scenario_id"]);
    assert!(second.header("idempotent-replayed").is_none());
    assert_eq!(h.bus.stored("spawn.request"), 2);
    assert_eq!(
        h.store.ledger(&LedgerQuery::default()).await.unwrap().len(),
        2
    );
    // A tenant never sees the other's scenario through the store's tenant-scoped read.
    let id: forge_core::ScenarioId = second.json()["scenario_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(h.store.get("demo", &id).await.unwrap().is_none());
    assert!(h.store.get("globex", &id).await.unwrap().is_some());
    h.stop().await;
}

#[tokio::test]
async fn request_id_sources_and_conflicts() {
    let h = Harness::start(Options::default()).await;
    let t = h.spawner("demo");
    let missing = h.spawn(&t, &json!({"track": "netplus"}), &[]).await;
    assert_eq!(
        (missing.status.as_u16(), missing.code()),
        (400, "missing_request_id".into())
    );
    assert!(missing.message().contains("x-request-id"));
    let both = h
        .spawn(&t, &body("netplus", "a"), &[("x-request-id", "b")])
        .await;
    assert_eq!(
        (both.status.as_u16(), both.code()),
        (400, "request_id_conflict".into())
    );
    let same = h
        .spawn(&t, &body("netplus", "c"), &[("x-request-id", "c")])
        .await;
    assert_eq!(same.status, 201);
    assert_eq!(same.json()["request_id"], "c");
    let header_only = h
        .spawn(&t, &json!({"track": "netplus"}), &[("x-request-id", "d")])
        .await;
    assert_eq!(header_only.status, 201);
    assert_eq!(header_only.json()["request_id"], "d");
    h.stop().await;
}
