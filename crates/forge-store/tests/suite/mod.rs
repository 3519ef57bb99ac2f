//! The checks of the store conformance suite; each takes any [`Store`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use forge_core::{ScenarioId, ScenarioStatus, Track};
use forge_store::{Billing, Charge, IdempotencyBegin, LedgerQuery, NewScenario, Store, StoreError};
use tokio::task::JoinSet;

use ScenarioStatus::*;

mod hosts;
mod keys;
mod pools;
mod replicas;
mod views;
pub use hosts::*;
pub use keys::*;
pub use pools::*;
pub use replicas::*;
pub use views::*;

/// Runs `n` copies of `f(i)` concurrently and collects their results.
pub async fn concurrently<T, F, Fut>(n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let mut set = JoinSet::new();
    for i in 0..n {
        set.spawn(f(i));
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task panicked"));
    }
    out
}

pub fn new_scenario(tenant: &str, request_id: &str) -> NewScenario {
    let id = ScenarioId::generate();
    let now = Utc::now();
    NewScenario {
        access_url: format!("http://localhost:8082/access/{id}"),
        scenario_id: id,
        tenant_id: tenant.to_owned(),
        owner_sub: format!("{tenant}-learner"),
        track: Track::Netplus,
        template: "netplus-routing-lab".to_owned(),
        request_id: request_id.to_owned(),
        created_at: now,
        expires_at: now + ChronoDuration::minutes(30),
    }
}

pub fn charge_for(n: &NewScenario, at: DateTime<Utc>, cents: i64) -> Charge {
    Charge {
        event_id: format!("chg-{}-{}", n.tenant_id, n.request_id),
        tenant_id: n.tenant_id.clone(),
        request_id: n.request_id.clone(),
        scenario_id: n.scenario_id.clone(),
        track: n.track,
        template: n.template.clone(),
        tier: "intermediate".to_owned(),
        plan: "pro".to_owned(),
        amount_cents: cents,
        currency: "usd".to_owned(),
        created_at: at,
    }
}

pub async fn scenario_lifecycle(s: Arc<dyn Store>) {
    let n = new_scenario("acme", "req-1");
    let ins = s.insert_pending(&n, Billing::None).await.unwrap();
    assert!(ins.created);
    assert_eq!(ins.record.status, Pending);
    let got = s.get("acme", &n.scenario_id).await.unwrap().unwrap();
    assert_eq!(got, ins.record);
    assert_eq!(got.state().status, Pending);
    assert!(
        s.get("globex", &n.scenario_id).await.unwrap().is_none(),
        "tenant-scoped read must not see another tenant's scenario"
    );
    assert!(s.get_any(&n.scenario_id).await.unwrap().is_some());

    let c = s
        .transition(&n.scenario_id, &[Pending], Creating, None)
        .await
        .unwrap();
    assert_eq!(c.status, Creating);
    assert!(c.started_at.is_none());
    let r = s
        .transition(&n.scenario_id, &[Creating], Running, None)
        .await
        .unwrap();
    assert!(r.started_at.is_some() && r.ended_at.is_none());
    let done = s
        .transition(&n.scenario_id, &[Running], Completed, None)
        .await
        .unwrap();
    assert!(done.ended_at.is_some());
    assert!(done.updated_at >= done.created_at);

    match s
        .transition(&n.scenario_id, &[Running], Failed, Some("x"))
        .await
    {
        Err(StoreError::Conflict { current, to, .. }) => {
            assert_eq!((current, to), (Completed, Failed));
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    let err = s
        .transition(&n.scenario_id, &[Pending], Completed, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTransition { .. }), "{err}");
    let unknown = ScenarioId::generate();
    let err = s
        .transition(&unknown, &[Pending], Failed, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");

    // A failure keeps its reason.
    let m = new_scenario("acme", "req-2");
    s.insert_pending(&m, Billing::None).await.unwrap();
    let f = s
        .transition(
            &m.scenario_id,
            &[Pending, Creating],
            Failed,
            Some("image missing"),
        )
        .await
        .unwrap();
    assert_eq!(f.error.as_deref(), Some("image missing"));
    assert!(f.ended_at.is_some());
}

pub async fn transition_is_compare_and_set(s: Arc<dyn Store>) {
    let n = new_scenario("acme", "cas");
    s.insert_pending(&n, Billing::None).await.unwrap();
    let wins = concurrently(20, |_| {
        let s = s.clone();
        let id = n.scenario_id.clone();
        async move { s.transition(&id, &[Pending], Creating, None).await.is_ok() }
    })
    .await;
    assert_eq!(
        wins.iter().filter(|w| **w).count(),
        1,
        "exactly one concurrent pending→creating succeeds"
    );
}

pub async fn insert_is_idempotent_per_tenant_request(s: Arc<dyn Store>) {
    let first = new_scenario("acme", "same");
    let a = s.insert_pending(&first, Billing::None).await.unwrap();
    assert!(a.created);
    // A retry generates a fresh scenario id; the stored one wins.
    let retry = new_scenario("acme", "same");
    let b = s.insert_pending(&retry, Billing::None).await.unwrap();
    assert!(!b.created);
    assert_eq!(b.record.scenario_id, first.scenario_id);
    assert!(s.get_any(&retry.scenario_id).await.unwrap().is_none());
    // Same key, other track: refused, naming the scenario it belongs to.
    let mut other = new_scenario("acme", "same");
    other.track = Track::Ccna;
    other.template = "ccna-interfaces-lab".into();
    match s.insert_pending(&other, Billing::None).await {
        Err(StoreError::RequestIdReused { existing, .. }) => {
            assert_eq!(existing, first.scenario_id.to_string())
        }
        x => panic!("expected RequestIdReused, got {x:?}"),
    }
    // Keys are per tenant.
    let globex = new_scenario("globex", "same");
    assert!(
        s.insert_pending(&globex, Billing::None)
            .await
            .unwrap()
            .created
    );
}

pub async fn concurrent_inserts_yield_one_scenario_and_one_charge(s: Arc<dyn Store>) {
    let now = Utc::now();
    let results = concurrently(25, |_| {
        let s = s.clone();
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
    let ids: std::collections::BTreeSet<_> = results
        .iter()
        .map(|r| r.record.scenario_id.clone())
        .collect();
    assert_eq!(ids.len(), 1, "every caller sees the same scenario");
    let ledger = tenant_ledger(&*s, "acme").await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].scenario_id, *ids.iter().next().unwrap());
    assert_eq!(s.outbox_backlog().await.unwrap(), 1);
}

pub async fn count_list_and_runtime_info(s: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..4 {
        let n = new_scenario("acme", &format!("r{i}"));
        s.insert_pending(&n, Billing::None).await.unwrap();
        ids.push(n.scenario_id);
    }
    s.insert_pending(&new_scenario("globex", "r0"), Billing::None)
        .await
        .unwrap();
    s.transition(&ids[1], &[Pending], Creating, None)
        .await
        .unwrap();
    s.transition(&ids[2], &[Pending], Failed, Some("no"))
        .await
        .unwrap();
    assert_eq!(s.count_active("acme").await.unwrap(), 3);
    assert_eq!(s.count_active("globex").await.unwrap(), 1);
    assert_eq!(s.count_active("nobody").await.unwrap(), 0);

    let pending = s.list_by_status(&[Pending]).await.unwrap();
    assert_eq!(pending.len(), 3, "two of acme, one of globex");
    let stuck = s.list_by_status(&[Creating, Failed]).await.unwrap();
    let got: Vec<_> = stuck.iter().map(|r| r.scenario_id.clone()).collect();
    assert_eq!(got, vec![ids[1].clone(), ids[2].clone()], "oldest first");

    let containers = vec!["learner_vm".to_owned(), "router".to_owned()];
    s.set_runtime_info(&ids[1], &ids[1].network_id(), &containers)
        .await
        .unwrap();
    let r = s.get("acme", &ids[1]).await.unwrap().unwrap();
    assert_eq!(r.network_id.as_deref(), Some(ids[1].network_id().as_str()));
    assert_eq!(r.containers, containers);
    assert_eq!(r.state().containers, containers);
    let err = s
        .set_runtime_info(&ScenarioId::generate(), "x", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));
}

/// A fixed instant, so expiry checks need no sleeping.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 11, 12, 0, 0).unwrap()
}

/// The ledger rows of `tenant`, oldest first.
pub async fn tenant_ledger(s: &dyn Store, tenant: &str) -> Vec<Charge> {
    let query = LedgerQuery {
        tenant_id: Some(tenant.into()),
        ..LedgerQuery::default()
    };
    s.ledger(&query).await.unwrap()
}

pub fn begin_at<'a>(
    tenant: &'a str,
    key: &'a str,
    hash: &'a str,
    now: DateTime<Utc>,
) -> IdempotencyBegin<'a> {
    IdempotencyBegin {
        tenant_id: tenant,
        key,
        request_hash: hash,
        now,
        lease: Duration::from_secs(60),
        retention: Duration::from_secs(24 * 3600),
    }
}

pub async fn quota_is_enforced_atomically(s: Arc<dyn Store>) {
    let results = concurrently(10, |i| {
        let s = s.clone();
        async move {
            let n = new_scenario("quota", &format!("q{i}"));
            s.insert_pending_limited(&n, Billing::None, 2).await
        }
    })
    .await;
    let created: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(created.len(), 2, "exactly the quota gets in");
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(
                    e,
                    StoreError::QuotaExceeded {
                        active: 2,
                        max: 2,
                        ..
                    }
                ),
                "{e}"
            );
        }
    }
    assert_eq!(s.count_active("quota").await.unwrap(), 2);
    // Ending one frees a slot; moves between active states do not.
    let a = created[0].record.scenario_id.clone();
    let b = created[1].record.scenario_id.clone();
    s.transition(&a, &[Pending], Creating, None).await.unwrap();
    s.transition(&a, &[Creating], Running, None).await.unwrap();
    assert_eq!(s.count_active("quota").await.unwrap(), 2);
    s.transition(&a, &[Running], Timeout, None).await.unwrap();
    assert_eq!(s.count_active("quota").await.unwrap(), 1);
    // A refused transition changes nothing.
    assert!(s.transition(&a, &[Running], Failed, None).await.is_err());
    assert_eq!(s.count_active("quota").await.unwrap(), 1);
    let n = new_scenario("quota", "q-next");
    assert!(
        s.insert_pending_limited(&n, Billing::None, 2)
            .await
            .unwrap()
            .created
    );
    // Unlimited inserts still count.
    s.insert_pending(&new_scenario("quota", "free"), Billing::None)
        .await
        .unwrap();
    assert_eq!(s.count_active("quota").await.unwrap(), 3);
    let over = s
        .insert_pending_limited(&new_scenario("quota", "x"), Billing::None, 3)
        .await;
    assert!(matches!(
        over,
        Err(StoreError::QuotaExceeded {
            active: 3,
            max: 3,
            ..
        })
    ));
    // A retry of an existing request is not a new lab: it is returned even at the quota.
    let again = s
        .insert_pending_limited(&n, Billing::None, 3)
        .await
        .unwrap();
    assert!(!again.created);
    s.transition(&b, &[Pending], Failed, Some("x"))
        .await
        .unwrap();
    assert_eq!(s.count_active("quota").await.unwrap(), 2);
    let listed = s
        .list_by_status(&[Pending, Creating, Running])
        .await
        .unwrap();
    assert_eq!(listed.iter().filter(|r| r.tenant_id == "quota").count(), 2);
}

/// A working store answers its readiness ping, quickly.
pub async fn ping_answers(store: Arc<dyn Store>) {
    let start = std::time::Instant::now();
    store
        .ping()
        .await
        .expect("a working store answers the ping");
    assert!(start.elapsed() < forge_store::PING_TIMEOUT);
}
