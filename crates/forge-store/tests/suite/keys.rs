//! Conformance checks for idempotency keys, the billing ledger and the outbox.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use forge_store::{Began, Billing, LedgerQuery, Store, StoreError};

use super::{begin_at, charge_for, concurrently, new_scenario, t0, tenant_ledger};

/// What `begin` answers for `tenant`'s `key` with body `hash` at `at` (default lease and
/// retention).
async fn began(s: &dyn Store, tenant: &str, key: &str, hash: &str, at: DateTime<Utc>) -> Began {
    s.begin(&begin_at(tenant, key, hash, at)).await.unwrap()
}

pub async fn idempotency_key_states(s: Arc<dyn Store>) {
    let now = t0();
    assert_eq!(began(&*s, "acme", "k", "h1", now).await, Began::New);
    assert_eq!(began(&*s, "acme", "k", "h1", now).await, Began::InFlight);
    assert_eq!(
        began(&*s, "acme", "k", "h2", now).await,
        Began::Mismatch,
        "another body under an in-flight key"
    );
    // Keys are scoped by tenant.
    assert_eq!(began(&*s, "globex", "k", "h2", now).await, Began::New);

    s.complete("acme", "k", 201, br#"{"ok":true}"#)
        .await
        .unwrap();
    assert_eq!(
        began(&*s, "acme", "k", "h1", now).await,
        Began::Done {
            status: 201,
            body: br#"{"ok":true}"#.to_vec()
        }
    );
    assert_eq!(began(&*s, "acme", "k", "h2", now).await, Began::Mismatch);
    // Completing or abandoning a done key changes nothing.
    s.abandon("acme", "k").await.unwrap();
    s.complete("acme", "k", 500, b"x").await.unwrap();
    assert!(matches!(
        began(&*s, "acme", "k", "h1", now).await,
        Began::Done { status: 201, .. }
    ));

    // Abandoned in-flight keys may be claimed again, even with another body.
    assert_eq!(began(&*s, "acme", "a", "h1", now).await, Began::New);
    s.abandon("acme", "a").await.unwrap();
    assert_eq!(began(&*s, "acme", "a", "h9", now).await, Began::New);
}

pub async fn idempotency_concurrent_begin_has_one_winner(s: Arc<dyn Store>) {
    let now = t0();
    let results = concurrently(50, |_| {
        let s = s.clone();
        async move { began(&*s, "acme", "hot", "h", now).await }
    })
    .await;
    let new = results.iter().filter(|b| **b == Began::New).count();
    let inflight = results.iter().filter(|b| **b == Began::InFlight).count();
    assert_eq!((new, inflight), (1, 49), "{results:?}");
}

pub async fn idempotency_expiry_lease_and_purge(s: Arc<dyn Store>) {
    let now = t0();
    let mut b = begin_at("acme", "old", "h1", now);
    b.retention = Duration::from_secs(3600);
    assert_eq!(s.begin(&b).await.unwrap(), Began::New);
    s.complete("acme", "old", 201, b"{}").await.unwrap();
    // Past retention the key is new again, whatever the body.
    let later = now + ChronoDuration::hours(2);
    assert_eq!(began(&*s, "acme", "old", "other", later).await, Began::New);

    // An in-flight key past its lease (owner died) is taken over by the same request only.
    let mut held = begin_at("acme", "stale", "h1", now);
    held.lease = Duration::from_secs(10);
    assert_eq!(s.begin(&held).await.unwrap(), Began::New);
    let after_lease = now + ChronoDuration::seconds(11);
    assert_eq!(
        began(&*s, "acme", "stale", "h2", after_lease).await,
        Began::Mismatch
    );
    assert_eq!(
        began(&*s, "acme", "stale", "h1", after_lease).await,
        Began::New
    );

    // Purge drops only what expired.
    let mut short = begin_at("acme", "short", "h", now);
    short.retention = Duration::from_secs(60);
    short.lease = Duration::from_secs(1);
    s.begin(&short).await.unwrap();
    s.complete("acme", "short", 201, b"{}").await.unwrap();
    let purged = s
        .purge_expired(now + ChronoDuration::minutes(5))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(matches!(
        began(&*s, "acme", "stale", "h1", now + ChronoDuration::minutes(5)).await,
        Began::InFlight | Began::New
    ));
}

pub async fn ledger_queries(s: Arc<dyn Store>) {
    let jan = t0();
    let feb = jan + ChronoDuration::days(31);
    for (tenant, req, at, cents) in [
        ("acme", "a1", jan, 100),
        ("acme", "a2", feb, 200),
        ("globex", "g1", jan, 300),
    ] {
        let n = new_scenario(tenant, req);
        let c = charge_for(&n, at, cents);
        s.insert_pending(&n, Billing::Ledger(&c)).await.unwrap();
    }
    let all = s.ledger(&LedgerQuery::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].created_at <= w[1].created_at));
    let acme = tenant_ledger(&*s, "acme").await;
    assert_eq!(acme.iter().map(|c| c.amount_cents).sum::<i64>(), 300);
    let january = s
        .ledger(&LedgerQuery {
            tenant_id: None,
            from: Some(jan),
            to: Some(jan + ChronoDuration::days(1)),
        })
        .await
        .unwrap();
    assert_eq!(january.len(), 2);
    assert_eq!(january[0].created_at, jan, "times round-trip exactly");
    // Ledger-only billing writes no outbox item.
    assert_eq!(s.outbox_backlog().await.unwrap(), 0);
}

pub async fn outbox_delivery_bookkeeping(s: Arc<dyn Store>) {
    let now = t0();
    let n = new_scenario("acme", "o1");
    let c = charge_for(&n, now, 150);
    s.insert_pending(&n, Billing::LedgerAndOutbox(&c))
        .await
        .unwrap();
    let due = s.due_outbox(now, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let item = &due[0];
    assert_eq!(item.event_id, c.event_id);
    assert_eq!(item.topic, forge_store::BILLING_TOPIC);
    assert_eq!(item.attempts, 0);
    let payload: forge_store::Charge = serde_json::from_value(item.payload.clone()).unwrap();
    assert_eq!(payload, c, "the outbox carries the charge itself");

    let retry_at = now + ChronoDuration::seconds(30);
    s.mark_attempt_failed(&c.event_id, retry_at, "connection refused")
        .await
        .unwrap();
    assert!(
        s.due_outbox(now, 10).await.unwrap().is_empty(),
        "backing off"
    );
    let due = s.due_outbox(retry_at, 10).await.unwrap();
    assert_eq!(due[0].attempts, 1);
    assert_eq!(due[0].last_error.as_deref(), Some("connection refused"));
    assert_eq!(s.outbox_backlog().await.unwrap(), 1);

    s.mark_delivered(&c.event_id, retry_at).await.unwrap();
    assert!(
        s.due_outbox(retry_at + ChronoDuration::days(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.outbox_backlog().await.unwrap(), 0);
    // A late failure report for a delivered item changes nothing.
    s.mark_attempt_failed(&c.event_id, now, "late")
        .await
        .unwrap();
    assert_eq!(s.outbox_backlog().await.unwrap(), 0);
}

/// The refunds of `s`'s ledger for `tenant`.
async fn refunds_of(s: &dyn Store, tenant: &str) -> Vec<forge_store::Charge> {
    let all = tenant_ledger(s, tenant).await;
    all.into_iter().filter(|c| c.is_refund()).collect()
}

pub async fn a_lab_that_failed_before_running_is_refunded_once(s: Arc<dyn Store>) {
    use forge_core::ScenarioStatus::*;
    let (charged_at, failed_at) = (t0(), t0() + ChronoDuration::seconds(5));

    // Gateway mode: the charge went through the outbox, so its refund does too.
    let n = new_scenario("acme", "launch-fails");
    let c = charge_for(&n, charged_at, 250);
    s.insert_pending(&n, Billing::LedgerAndOutbox(&c))
        .await
        .unwrap();
    let id = &n.scenario_id;
    let early = s.refund(id, "too early", failed_at).await.unwrap_err();
    assert!(
        matches!(early, StoreError::NotRefundable { .. }) && early.to_string().contains("pending"),
        "a live scenario is not refunded: {early}"
    );
    s.transition(id, &[Pending], Creating, None).await.unwrap();
    s.transition(id, &[Creating], Failed, Some("lab launch failed"))
        .await
        .unwrap();
    let first = s
        .refund(id, "lab launch failed", failed_at)
        .await
        .unwrap()
        .expect("a charged scenario is refunded");
    assert!(first.created && first.queued, "{first:?}");
    let r = &first.refund;
    assert_eq!(r.event_id, format!("refund-{}", c.event_id));
    assert!(r.is_refund() && !c.is_refund());
    assert_eq!(
        (r.tenant_id.as_str(), r.request_id.as_str(), &r.scenario_id),
        ("acme", "launch-fails", id)
    );
    assert_eq!((r.amount_cents, r.created_at), (-250, failed_at));
    assert_eq!(
        (&r.plan, &r.tier, &r.currency),
        (&c.plan, &c.tier, &c.currency)
    );

    // Idempotent, also when racing: one row, and the first one's.
    let again = s.refund(id, "again", failed_at).await.unwrap().unwrap();
    assert_eq!(
        (again.refund.clone(), again.created, again.queued),
        (r.clone(), false, true)
    );
    let racing = concurrently(10, |_| {
        let (s, id) = (s.clone(), id.clone());
        async move { s.refund(&id, "race", Utc::now()).await.unwrap().unwrap() }
    })
    .await;
    assert!(racing.iter().all(|x| !x.created && x.refund == *r));
    let ledger = tenant_ledger(&*s, "acme").await;
    assert_eq!(
        ledger,
        vec![c.clone(), r.clone()],
        "the charge, then its refund"
    );
    assert_eq!(ledger.iter().map(|c| c.amount_cents).sum::<i64>(), 0);

    // The outbox carries the refund row, what it refunds and why.
    let due = s.due_outbox(failed_at, 10).await.unwrap();
    assert_eq!(due.len(), 2, "{due:?}");
    let item = due.iter().find(|i| i.event_id == r.event_id).unwrap();
    assert_eq!(item.topic, forge_store::REFUND_TOPIC);
    let payload: forge_store::Charge = serde_json::from_value(item.payload.clone()).unwrap();
    assert_eq!(payload, *r);
    assert_eq!(item.payload["kind"], "refund");
    assert_eq!(item.payload["refund_of"], c.event_id.as_str());
    assert_eq!(item.payload["reason"], "lab launch failed");
    assert_eq!(s.outbox_backlog().await.unwrap(), 2);

    // Stub mode: the charge never left, nor does its refund.
    let n = new_scenario("acme", "gate-denies");
    let c = charge_for(&n, charged_at, 100);
    s.insert_pending(&n, Billing::Ledger(&c)).await.unwrap();
    s.transition(
        &n.scenario_id,
        &[Pending],
        Failed,
        Some("training gate denied"),
    )
    .await
    .unwrap();
    let stub = s
        .refund(&n.scenario_id, "training gate denied", failed_at)
        .await
        .unwrap()
        .unwrap();
    assert!(stub.created && !stub.queued, "{stub:?}");
    assert_eq!(stub.refund.amount_cents, -100);
    assert_eq!(s.outbox_backlog().await.unwrap(), 2, "nothing queued");

    // A lab that ran was used: it is not refunded.
    let n = new_scenario("acme", "ran");
    let c = charge_for(&n, charged_at, 100);
    s.insert_pending(&n, Billing::Ledger(&c)).await.unwrap();
    for (from, to) in [(Pending, Creating), (Creating, Running), (Running, Failed)] {
        s.transition(&n.scenario_id, &[from], to, None)
            .await
            .unwrap();
    }
    let ran = s.refund(&n.scenario_id, "x", failed_at).await.unwrap_err();
    assert!(
        matches!(ran, StoreError::NotRefundable { .. }) && ran.to_string().contains("ran"),
        "{ran}"
    );
    // Nor is a completed one.
    let n = new_scenario("acme", "done");
    s.insert_pending(&n, Billing::Ledger(&charge_for(&n, charged_at, 100)))
        .await
        .unwrap();
    for (from, to) in [
        (Pending, Creating),
        (Creating, Running),
        (Running, Completed),
    ] {
        s.transition(&n.scenario_id, &[from], to, None)
            .await
            .unwrap();
    }
    assert!(matches!(
        s.refund(&n.scenario_id, "x", failed_at).await,
        Err(StoreError::NotRefundable { .. })
    ));
    // A scenario without a charge has nothing to refund; an unknown one is not found.
    let n = new_scenario("acme", "free");
    s.insert_pending(&n, Billing::None).await.unwrap();
    s.transition(&n.scenario_id, &[Pending], Failed, None)
        .await
        .unwrap();
    assert_eq!(
        s.refund(&n.scenario_id, "x", failed_at).await.unwrap(),
        None
    );
    assert!(matches!(
        s.refund(&forge_core::ScenarioId::generate(), "x", failed_at)
            .await,
        Err(StoreError::NotFound(_))
    ));
    let refunds = refunds_of(&*s, "acme").await;
    assert_eq!(refunds.len(), 2, "{refunds:?}");
}
