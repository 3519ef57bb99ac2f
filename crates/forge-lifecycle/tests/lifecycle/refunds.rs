//! Refunds (issue 16): a charged lab that fails before it ever runs is refunded in the ledger,
//! once however often it is failed, and through the billing outbox in gateway mode like its
//! charge; a lab that ran is not refunded.

use std::time::{Duration, Instant};

use forge_bus::messages::SpawnRequested;
use forge_core::{ScenarioId, Track};
use forge_services::billing::BillingConfig;
use forge_store::{Billing, Charge, LedgerQuery, NewScenario};
use serde_json::json;

use crate::harness::Harness;

/// Tenants where `demo` pays for its labs (the bundled example's demo plan is free, and a free
/// lab's refund of 0 would prove little).
const PAID_TENANTS: &str = r#"
currency = "usd"

[plans.paid]
entitled_tracks = ["netplus", "ccna", "cissp"]
max_active_scenarios = 1000
rate = { requests_per_second = 10000.0, burst = 10000 }
prices.netplus = { default = 250 }
prices.ccna = { default = 250 }
prices.cissp = { default = 250 }

[tenants.demo]
plan = "paid"
"#;

/// The ledger rows of `demo`'s `request_id`, oldest first.
pub async fn rows_of(h: &Harness, request_id: &str) -> Vec<Charge> {
    let all = h
        .platform
        .store
        .ledger(&LedgerQuery {
            tenant_id: Some("demo".into()),
            ..LedgerQuery::default()
        })
        .await
        .unwrap();
    all.into_iter()
        .filter(|c| c.request_id == request_id)
        .collect()
}

/// Waits until `request_id` has its charge and its refund (the refund follows the `failed`
/// status the tests wait for).
pub async fn wait_refunded(h: &Harness, request_id: &str) -> Vec<Charge> {
    let start = Instant::now();
    loop {
        let rows = rows_of(h, request_id).await;
        if rows.iter().any(Charge::is_refund) {
            assert_eq!(rows.len(), 2, "one charge, one refund: {rows:?}");
            assert!(!rows[0].is_refund() && rows[1].is_refund(), "{rows:?}");
            return rows;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{request_id} was not refunded: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The front door's work for a charged spawn of `template`, done directly: a `pending` scenario
/// with its ledger row, and the `spawn.request` to publish.
pub async fn charged_pending(
    h: &Harness,
    template: &str,
    cents: i64,
) -> (NewScenario, Charge, SpawnRequested) {
    let now = chrono::Utc::now();
    let new = NewScenario {
        scenario_id: ScenarioId::generate(),
        tenant_id: "demo".into(),
        owner_sub: "learner-1".into(),
        track: Track::Netplus,
        template: template.into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        access_url: String::new(),
        created_at: now,
        expires_at: now + chrono::Duration::minutes(30),
    };
    let charge = Charge {
        event_id: format!("chg_{}", new.request_id),
        tenant_id: new.tenant_id.clone(),
        request_id: new.request_id.clone(),
        scenario_id: new.scenario_id.clone(),
        track: new.track,
        template: new.template.clone(),
        tier: "foundation".into(),
        plan: "paid".into(),
        amount_cents: cents,
        currency: "usd".into(),
        created_at: now,
    };
    h.platform
        .store
        .insert_pending(&new, Billing::Ledger(&charge))
        .await
        .unwrap();
    let msg = SpawnRequested {
        scenario_id: new.scenario_id.clone(),
        tenant_id: new.tenant_id.clone(),
        owner_sub: new.owner_sub.clone(),
        track: new.track,
        template: new.template.clone(),
        request_id: new.request_id.clone(),
        warm_host: None,
    };
    (new, charge, msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_failure_refunds_the_charge_once_through_the_outbox() {
    let h = Harness::start_with(|cfg| {
        let tenants = cfg.data_dir.with_file_name("tenants.toml");
        std::fs::write(&tenants, PAID_TENANTS).unwrap();
        cfg.tenants_file = Some(tenants);
        // Gateway mode towards nothing: every event stays in the outbox for the test to read.
        cfg.spawn.billing = BillingConfig::gateway("http://127.0.0.1:9/charges");
    })
    .await;
    h.fake.fail_next_launch("image forge/web:1 is missing");
    let request_id = "launch-fails";
    let id = h
        .api
        .spawn(
            json!({"track": "netplus", "template": crate::harness::TEMPLATE,
                      "request_id": request_id}),
        )
        .await;
    let v = h.wait_status(&id, "failed", Duration::from_secs(10)).await;
    assert!(v["started_at"].is_null(), "it never ran: {v}");
    let rows = wait_refunded(&h, request_id).await;
    let (charge, refund) = (&rows[0], &rows[1]);
    assert_eq!(charge.amount_cents, 250);
    assert_eq!(refund.amount_cents, -250);
    assert_eq!(refund.event_id, format!("refund-{}", charge.event_id));
    assert_eq!(refund.scenario_id.as_str(), id);

    // Failing it again (a second end, a racing host) refunds nothing more.
    let orchestrator = h.platform.orchestrator.clone().unwrap();
    let sid: ScenarioId = id.parse().unwrap();
    for _ in 0..2 {
        let rec = h.platform.store.get_any(&sid).await.unwrap().unwrap();
        orchestrator.end_early(&rec, "learner-1").await.unwrap();
    }
    assert_eq!(rows_of(&h, request_id).await, rows, "still one refund");
    let audited = h.audited("billing.refund", &id);
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["details"]["amount_cents"], -250);
    assert!(
        audited[0]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("lab launch failed"),
        "{audited:?}"
    );

    // The refund waits in the outbox next to its charge, for the gateway.
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let due = h.platform.store.due_outbox(later, 100).await.unwrap();
    let item = due
        .iter()
        .find(|i| i.event_id == refund.event_id)
        .unwrap_or_else(|| panic!("refund not queued: {due:?}"));
    assert_eq!(item.topic, forge_store::REFUND_TOPIC);
    assert_eq!(item.payload["amount_cents"], -250);
    assert!(due.iter().any(|i| i.event_id == charge.event_id));

    // A lab that ran is not refunded when it fails (here: ended early by its learner).
    let ran = h
        .api
        .spawn(
            json!({"track": "netplus", "template": crate::harness::TEMPLATE,
                      "request_id": "ran-then-ended"}),
        )
        .await;
    h.api
        .wait_for(&ran, &["running"], Duration::from_secs(10))
        .await;
    assert_eq!(h.api.delete(&ran).await, 200);
    h.wait_status(&ran, "failed", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows = rows_of(&h, "ran-then-ended").await;
    assert_eq!(rows.len(), 1, "only the charge: {rows:?}");
    assert!(h.audited("billing.refund", &ran).is_empty());
    h.stop().await;
}

/// A crash between a scenario's `failed` and its refund loses nothing: the `spawn.request`
/// that the bus delivers again finds it failed and refunds it (once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_spawn_request_refunds_a_failure_whose_refund_was_lost() {
    use forge_bus::BusExt as _;
    use forge_core::ScenarioStatus;
    let h = Harness::start().await;
    let (new, charge, msg) = charged_pending(&h, crate::harness::TEMPLATE, 300).await;
    // Failed as `fail` would, but the process died before the refund.
    h.platform
        .store
        .transition(
            &new.scenario_id,
            &[ScenarioStatus::Pending],
            ScenarioStatus::Failed,
            Some("lab launch failed: the engine went away"),
        )
        .await
        .unwrap();
    assert_eq!(rows_of(&h, &new.request_id).await.len(), 1, "no refund yet");
    h.platform.bus.publish_msg(&msg).await.unwrap();
    let rows = wait_refunded(&h, &new.request_id).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].amount_cents, -300);
    assert_eq!(rows[1].event_id, format!("refund-{}", charge.event_id));
    assert!(h.fake.labs().is_empty(), "nothing was built");
    h.stop().await;
}
