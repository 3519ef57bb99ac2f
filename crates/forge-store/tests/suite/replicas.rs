//! Checks for backends that several processes share (PostgreSQL): two handles on one database,
//! each with its own connections, stand for two replicas. The single-process checks above cannot
//! tell a store that orders callers itself (one writer, one pool) from one that relies on the
//! database, which is what replicas need.

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use forge_core::ScenarioStatus::*;
use forge_store::{Began, Billing, Store, StoreError};

use super::{begin_at, charge_for, concurrently, new_scenario, t0, tenant_ledger};

/// `i`'s handle: callers alternate between the two.
fn pick(a: &Arc<dyn Store>, b: &Arc<dyn Store>, i: usize) -> Arc<dyn Store> {
    if i.is_multiple_of(2) {
        a.clone()
    } else {
        b.clone()
    }
}

pub async fn replicas_claim_a_key_once(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let now = t0();
    let results = concurrently(40, |i| {
        let s = pick(&a, &b, i);
        async move { s.begin(&begin_at("acme", "hot", "h", now)).await.unwrap() }
    })
    .await;
    let new = results.iter().filter(|r| **r == Began::New).count();
    let inflight = results.iter().filter(|r| **r == Began::InFlight).count();
    assert_eq!((new, inflight), (1, 39), "{results:?}");

    // The owner died: past its lease, exactly one of the racing retries takes the key over.
    let after_lease = now + ChronoDuration::seconds(61);
    let results = concurrently(40, |i| {
        let s = pick(&a, &b, i);
        async move {
            let mut req = begin_at("acme", "hot", "h", after_lease);
            req.lease = Duration::from_secs(60);
            s.begin(&req).await.unwrap()
        }
    })
    .await;
    let new = results.iter().filter(|r| **r == Began::New).count();
    assert_eq!(new, 1, "one takeover: {results:?}");

    // What one replica completes, the other replays.
    a.complete("acme", "hot", 201, b"{}").await.unwrap();
    assert_eq!(
        b.begin(&begin_at("acme", "hot", "h", after_lease))
            .await
            .unwrap(),
        Began::Done {
            status: 201,
            body: b"{}".to_vec()
        }
    );
}

pub async fn replicas_insert_once_and_keep_the_quota(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let now = t0();
    let results = concurrently(20, |i| {
        let s = pick(&a, &b, i);
        async move {
            let n = new_scenario("acme", "burst");
            let c = charge_for(&n, now, 250);
            s.insert_pending(&n, Billing::LedgerAndOutbox(&c))
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(results.iter().filter(|r| r.created).count(), 1);
    assert_eq!(tenant_ledger(&*a, "acme").await.len(), 1);
    assert_eq!(b.outbox_backlog().await.unwrap(), 1);

    let results = concurrently(20, |i| {
        let s = pick(&a, &b, i);
        async move {
            let n = new_scenario("quota", &format!("q{i}"));
            s.insert_pending_limited(&n, Billing::None, 3).await
        }
    })
    .await;
    let created: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(created.len(), 3, "exactly the quota gets in");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::QuotaExceeded { max: 3, .. }))
    );
    assert_eq!(b.count_active("quota").await.unwrap(), 3);

    // Racing transitions from both replicas: one wins, and the quota slot is freed once.
    let id = created[0].record.scenario_id.clone();
    let wins = concurrently(20, |i| {
        let (s, id) = (pick(&a, &b, i), id.clone());
        async move {
            s.transition(&id, &[Pending], Failed, Some("x"))
                .await
                .is_ok()
        }
    })
    .await;
    assert_eq!(wins.iter().filter(|w| **w).count(), 1);
    assert_eq!(a.count_active("quota").await.unwrap(), 2);
}

/// Both replicas' orchestrators fail the same lab (a lost host's labs are failed by whichever
/// host notices first) and refund it: one refund row, one outbox item.
pub async fn replicas_refund_once(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let n = new_scenario("acme", "lost");
    let c = charge_for(&n, t0(), 250);
    a.insert_pending(&n, Billing::LedgerAndOutbox(&c))
        .await
        .unwrap();
    b.transition(&n.scenario_id, &[Pending], Failed, Some("lost"))
        .await
        .unwrap();
    let results = concurrently(20, |i| {
        let (s, id) = (pick(&a, &b, i), n.scenario_id.clone());
        async move { s.refund(&id, "lost", t0()).await.unwrap().unwrap() }
    })
    .await;
    assert_eq!(results.iter().filter(|r| r.created).count(), 1);
    assert!(
        results
            .iter()
            .all(|r| r.queued && r.refund.amount_cents == -250)
    );
    let ledger = tenant_ledger(&*a, "acme").await;
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    assert_eq!(b.outbox_backlog().await.unwrap(), 2);
}
