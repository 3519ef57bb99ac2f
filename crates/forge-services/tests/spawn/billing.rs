//! Billing: stub ledger rows, the gateway outbox against a receiver that goes away and comes
//! back (every spawn charged exactly once), and the usage report over the ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use forge_services::billing::BillingConfig;
use forge_services::billing::report::{Period, ReportError, UsageQuery, usage_report};
use forge_store::{LedgerQuery, Store};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::body;
use crate::support::{Harness, Options};

#[tokio::test]
async fn stub_mode_records_one_ledger_row_per_charged_spawn_and_reports_it() {
    let h = Harness::start(Options::default()).await;
    let acme = h.spawner("acme");
    let globex = h.spawner("globex");
    // acme: intermediate netplus template at 250, then the services lab (foundation → default 100).
    assert_eq!(
        h.spawn(&acme, &body("netplus", "b1"), &[]).await.status,
        201
    );
    let services =
        json!({"track": "netplus", "request_id": "b2", "template": "netplus-services-lab"});
    assert_eq!(h.spawn(&acme, &services, &[]).await.status, 201);
    // A replay is not charged again.
    assert_eq!(
        h.spawn(&acme, &body("netplus", "b1"), &[]).await.status,
        201
    );
    assert_eq!(
        h.spawn(&globex, &body("cissp", "b1"), &[]).await.status,
        201
    );
    // A denied spawn is not charged (tiny is not entitled to ccna).
    assert_eq!(
        h.spawn(&h.spawner("tiny"), &body("ccna", "b1"), &[])
            .await
            .status,
        403
    );

    let ledger = h.store.ledger(&LedgerQuery::default()).await.unwrap();
    let rows: Vec<(&str, &str, i64, &str)> = ledger
        .iter()
        .map(|c| {
            (
                c.tenant_id.as_str(),
                c.request_id.as_str(),
                c.amount_cents,
                c.plan.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("acme", "b1", 250, "burst"),
            ("acme", "b2", 100, "burst"),
            ("globex", "b1", 800, "steady")
        ]
    );
    assert_eq!(
        h.store.outbox_backlog().await.unwrap(),
        0,
        "stub mode sends nothing"
    );

    let rows = usage_report(
        &*h.store,
        &UsageQuery {
            period: Period::Total,
            ..UsageQuery::default()
        },
    )
    .await
    .unwrap();
    let summary: Vec<(&str, u64, i64, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.tenant_id.as_str(),
                r.spawns,
                r.amount_cents,
                r.period.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![("acme", 2, 350, "total"), ("globex", 1, 800, "total")]
    );
    assert_eq!(rows[0].by_track, BTreeMap::from([("netplus".into(), 2)]));

    let since_2000 = chrono::DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let acme = usage_report(
        &*h.store,
        &UsageQuery {
            tenant_id: Some("acme".into()),
            from: Some(since_2000),
            to: None,
            period: Period::Month,
        },
    )
    .await
    .unwrap();
    assert_eq!(acme.len(), 1, "{acme:?}");
    assert_eq!(
        (
            acme[0].tenant_id.as_str(),
            acme[0].amount_cents,
            acme[0].currency.as_str()
        ),
        ("acme", 350, "usd")
    );
    assert_eq!(acme[0].period.len(), "2026-01".len(), "{acme:?}");
    let future = usage_report(
        &*h.store,
        &UsageQuery {
            from: Some(chrono::Utc::now() + chrono::Duration::days(1)),
            ..UsageQuery::default()
        },
    )
    .await
    .unwrap();
    assert!(future.is_empty());
    let backwards = usage_report(
        &*h.store,
        &UsageQuery {
            from: Some(chrono::Utc::now()),
            to: Some(since_2000),
            ..UsageQuery::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(backwards, ReportError::EmptyRange { .. }),
        "{backwards}"
    );
    h.stop().await;
}

/// What the fake gateway saw, across its restarts.
#[derive(Default)]
struct Seen {
    deliveries: usize,
    /// Idempotency-Key → payload.
    keys: BTreeMap<String, Value>,
    /// Keys whose first delivery was answered 500, to force a retry of a delivered-but-failed item.
    flaked: BTreeSet<String>,
}

async fn receiver(addr: SocketAddr, seen: Arc<Mutex<Seen>>) -> oneshot::Sender<()> {
    let app = axum::Router::new().route(
        "/charges",
        post(
            move |headers: HeaderMap, axum::Json(payload): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let Some(key) = key else {
                        return StatusCode::BAD_REQUEST;
                    };
                    let mut s = seen.lock().unwrap();
                    s.deliveries += 1;
                    // The receiver's job: dedupe by key. Every third new key first fails once.
                    if !s.keys.contains_key(&key)
                        && s.flaked.len() < 3
                        && s.flaked.insert(key.clone())
                    {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    s.keys.entry(key).or_insert(payload);
                    StatusCode::CREATED
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    tx
}

async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_outage_loses_nothing_and_charges_once() {
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = receiver(addr, seen.clone()).await;
    let billing = BillingConfig {
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(400),
        poll_interval: Duration::from_millis(100),
        request_timeout: Duration::from_secs(2),
        ..BillingConfig::gateway(format!("http://{addr}/charges"))
    };
    let h = Harness::start(Options {
        billing,
        ..Options::default()
    })
    .await;
    let t = h.spawner("globex");
    for i in 0..5 {
        assert_eq!(
            h.spawn(&t, &body("netplus", &format!("up-{i}")), &[])
                .await
                .status,
            201
        );
    }
    eventually("first five charged", async || {
        seen.lock().unwrap().keys.len() == 5
    })
    .await;

    // The gateway goes away; spawns still succeed and queue their charges.
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..5 {
        assert_eq!(
            h.spawn(&t, &body("ccna", &format!("down-{i}")), &[])
                .await
                .status,
            201
        );
    }
    let store = h.store.clone();
    eventually("failed attempts recorded", async || {
        let due = store
            .due_outbox(chrono::Utc::now() + chrono::Duration::days(1), 100)
            .await
            .unwrap();
        due.len() == 5 && due.iter().all(|i| i.attempts >= 1)
    })
    .await;

    // It comes back on the same address; the backlog drains.
    let stop = receiver(addr, seen.clone()).await;
    eventually("backlog delivered", async || {
        store.outbox_backlog().await.unwrap() == 0
    })
    .await;
    let ledger = h.store.ledger(&LedgerQuery::default()).await.unwrap();
    {
        let s = seen.lock().unwrap();
        let ledger_ids: BTreeSet<String> = ledger.iter().map(|c| c.event_id.clone()).collect();
        let delivered: BTreeSet<String> = s.keys.keys().cloned().collect();
        assert_eq!(
            delivered, ledger_ids,
            "every charge delivered, under its ledger event id"
        );
        assert_eq!(s.keys.len(), 10, "ten spawns, ten distinct charges");
        assert!(
            s.deliveries >= 10 + s.flaked.len(),
            "retries happened: {} deliveries",
            s.deliveries
        );
        for c in &ledger {
            let p = &s.keys[&c.event_id];
            assert_eq!(p["amount_cents"], c.amount_cents);
            assert_eq!(p["tenant_id"], "globex");
            assert_eq!(p["request_id"], c.request_id.as_str());
        }
    }
    // Nothing is sent again once delivered.
    let before = seen.lock().unwrap().deliveries;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(seen.lock().unwrap().deliveries, before);
    let _ = stop.send(());
    h.stop().await;
}

/// A charged lab that failed before it ran is refunded (by the orchestrator, through the
/// store): the refund reaches the gateway like a charge, under its own key, and the report nets
/// it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_goes_through_the_outbox_and_the_report_nets_it() {
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let seen = Arc::new(Mutex::new(Seen {
        // No flaky first answers: this test is about what is sent, not the retries.
        flaked: (0..3).map(|i| format!("none-{i}")).collect(),
        ..Seen::default()
    }));
    let stop = receiver(addr, seen.clone()).await;
    let billing = BillingConfig {
        poll_interval: Duration::from_millis(50),
        ..BillingConfig::gateway(format!("http://{addr}/charges"))
    };
    let h = Harness::start(Options {
        billing,
        ..Options::default()
    })
    .await;
    let r = h
        .spawn(&h.spawner("globex"), &body("netplus", "fails-early"), &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id: forge_core::ScenarioId = r.json()["scenario_id"].as_str().unwrap().parse().unwrap();
    h.store
        .transition(
            &id,
            &[forge_core::ScenarioStatus::Pending],
            forge_core::ScenarioStatus::Failed,
            Some("lab launch failed: image missing"),
        )
        .await
        .unwrap();
    let refunded = h
        .store
        .refund(&id, "lab launch failed: image missing", chrono::Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert!(refunded.created && refunded.queued, "{refunded:?}");
    let store = h.store.clone();
    eventually("charge and refund delivered", async || {
        store.outbox_backlog().await.unwrap() == 0 && seen.lock().unwrap().keys.len() == 2
    })
    .await;
    let ledger = h.store.ledger(&LedgerQuery::default()).await.unwrap();
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    {
        let s = seen.lock().unwrap();
        let charge = &ledger[0];
        let refund = &s.keys[&format!("refund-{}", charge.event_id)];
        assert_eq!(refund["amount_cents"], -charge.amount_cents, "{refund}");
        assert_eq!(refund["kind"], "refund");
        assert_eq!(refund["refund_of"], charge.event_id.as_str());
        assert_eq!(refund["request_id"], "fails-early");
        assert_eq!(refund["reason"], "lab launch failed: image missing");
    }
    let rows = usage_report(
        &*h.store,
        &UsageQuery {
            period: Period::Total,
            ..UsageQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].spawns, rows[0].refunds, rows[0].amount_cents),
        (1, 1, 0),
        "{rows:?}"
    );
    assert_eq!(rows[0].by_track, BTreeMap::from([("netplus".into(), 1)]));
    let _ = stop.send(());
    h.stop().await;
}
