//! Warm pools: labs put, taken once each (oldest first, only of the template version asked
//! for), removed unless taken first, listed per host; claims counted as hits and misses.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{Duration as ChronoDuration, Utc};
use forge_core::ScenarioId;
use forge_store::{Billing, PoolClaims, Store, StoreError, WarmLab};

use super::{concurrently, new_scenario};

fn warm(template: &str, digest: &str, host: &str, age_secs: i64) -> WarmLab {
    let now = Utc::now();
    let now = chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap();
    let id = ScenarioId::generate();
    WarmLab {
        network_id: format!("forge_{}", id.as_str().replace('-', "_")),
        containers: vec!["learner".into(), "router".into()],
        scenario_id: id,
        template: template.to_owned(),
        template_digest: digest.to_owned(),
        host_id: host.to_owned(),
        ready_at: now - ChronoDuration::seconds(age_secs),
    }
}

pub async fn warm_labs_are_taken_once_oldest_first_and_counted(s: Arc<dyn Store>) {
    let old = warm("lab-a", "d1", "h1", 30);
    let new = warm("lab-a", "d1", "h2", 10);
    let stale = warm("lab-a", "d0", "h1", 60);
    let other = warm("lab-b", "d1", "h1", 90);
    for l in [&new, &old, &stale, &other] {
        s.put_warm(l).await.unwrap();
    }
    assert_eq!(
        s.list_warm(Some("h1")).await.unwrap(),
        vec![other.clone(), stale.clone(), old.clone()],
        "a host's labs, oldest first"
    );
    assert_eq!(s.list_warm(None).await.unwrap().len(), 4);

    let first = s.take_warm("lab-a", "d1").await.unwrap();
    assert_eq!(
        first.as_ref(),
        Some(&old),
        "the oldest lab of that version first"
    );
    let second = s.take_warm("lab-a", "d1").await.unwrap();
    assert_eq!(second.as_ref(), Some(&new));
    assert_eq!(
        s.take_warm("lab-a", "d1").await.unwrap(),
        None,
        "a lab of another template version is never handed out"
    );
    assert_eq!(s.take_warm("lab-c", "d1").await.unwrap(), None);

    let claims = s.pool_claims().await.unwrap();
    let of = |t: &str| claims.iter().find(|c| c.template == t).cloned();
    assert_eq!(
        of("lab-a"),
        Some(PoolClaims {
            template: "lab-a".into(),
            hits: 2,
            misses: 1
        })
    );
    assert_eq!(of("lab-c").map(|c| (c.hits, c.misses)), Some((0, 1)));

    assert!(s.remove_warm(&stale.scenario_id).await.unwrap());
    assert!(
        !s.remove_warm(&old.scenario_id).await.unwrap(),
        "a taken lab is no longer the pool's to remove"
    );
    assert_eq!(s.list_warm(None).await.unwrap(), vec![other]);
}

pub async fn concurrent_takers_get_different_labs(s: Arc<dyn Store>) {
    let mut ids = BTreeSet::new();
    for i in 0..4 {
        let l = warm("lab-race", "d", "h1", i);
        ids.insert(l.scenario_id.clone());
        s.put_warm(&l).await.unwrap();
    }
    let got = concurrently(12, |_| {
        let s = s.clone();
        async move { s.take_warm("lab-race", "d").await.unwrap() }
    })
    .await;
    let taken: Vec<ScenarioId> = got.into_iter().flatten().map(|l| l.scenario_id).collect();
    assert_eq!(taken.len(), 4, "every lab is taken, none twice: {taken:?}");
    assert_eq!(taken.into_iter().collect::<BTreeSet<_>>(), ids);
    let c = s.pool_claims().await.unwrap();
    assert_eq!((c[0].hits, c[0].misses), (4, 8));
}

pub async fn a_warm_start_runs_a_pending_scenario_on_the_labs_host_once(s: Arc<dyn Store>) {
    let lab = warm("lab-a", "d", "h7", 5);
    let mut n = new_scenario("acme", "warm-1");
    n.scenario_id = lab.scenario_id.clone();
    s.insert_pending(&n, Billing::None).await.unwrap();
    let rec = s.start_warm(&lab).await.unwrap();
    assert_eq!(rec.status, forge_core::ScenarioStatus::Running);
    assert_eq!(rec.host_id.as_deref(), Some("h7"));
    assert_eq!(rec.network_id.as_deref(), Some(lab.network_id.as_str()));
    assert_eq!(rec.containers, lab.containers);
    assert!(rec.started_at.is_some());
    assert_eq!(s.get_any(&lab.scenario_id).await.unwrap().unwrap(), rec);
    let again = s.start_warm(&lab).await.unwrap_err();
    assert!(
        matches!(
            again,
            StoreError::Conflict { .. } | StoreError::InvalidTransition { .. }
        ),
        "{again:?}"
    );
    let unknown = warm("lab-a", "d", "h7", 5);
    assert!(matches!(
        s.start_warm(&unknown).await.unwrap_err(),
        StoreError::NotFound(_)
    ));
}
