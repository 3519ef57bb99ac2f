//! What the instructor's view of live labs reads and writes: the tenant's labs newest first,
//! extensions of a lab's time, and the last check of each lab.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use forge_core::ScenarioStatus::*;
use forge_store::{Billing, CheckSummary, Store, StoreError};

use super::{concurrently, new_scenario};

pub async fn tenant_list_is_newest_first_scoped_and_limited(s: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut n = new_scenario("acme", &format!("list-{i}"));
        n.created_at = Utc::now() + ChronoDuration::milliseconds(i * 10);
        s.insert_pending(&n, Billing::None).await.unwrap();
        ids.push(n.scenario_id);
    }
    s.insert_pending(&new_scenario("globex", "list-0"), Billing::None)
        .await
        .unwrap();
    s.transition(&ids[0], &[Pending], Failed, Some("broken"))
        .await
        .unwrap();

    let active = [Pending, Creating, Running];
    let listed = s.list_for_tenant("acme", &active, 10).await.unwrap();
    let got: Vec<_> = listed.iter().map(|r| r.scenario_id.clone()).collect();
    assert_eq!(
        got,
        [ids[2].clone(), ids[1].clone()],
        "newest first, active only"
    );
    assert!(listed.iter().all(|r| r.tenant_id == "acme"));
    let failed = s.list_for_tenant("acme", &[Failed], 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].error.as_deref(), Some("broken"));
    assert_eq!(
        s.list_for_tenant("acme", &active, 1).await.unwrap().len(),
        1
    );
    assert!(
        s.list_for_tenant("initech", &active, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn extensions_add_up_and_stop_at_the_cap(s: Arc<dyn Store>) {
    let n = new_scenario("acme", "extend");
    let id = n.scenario_id.clone();
    let rec = s.insert_pending(&n, Billing::None).await.unwrap().record;
    let cap = rec.expires_at + ChronoDuration::minutes(25);

    // Two concurrent extensions of 10 minutes: both count.
    let results = concurrently(2, |_| {
        let (s, id) = (s.clone(), id.clone());
        async move { s.extend(&id, Duration::from_secs(600), cap).await }
    })
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let now = s.get("acme", &id).await.unwrap().unwrap();
    assert_eq!(now.expires_at, rec.expires_at + ChronoDuration::minutes(20));

    // The next one stops at the cap, and the one after that is refused.
    let capped = s.extend(&id, Duration::from_secs(600), cap).await.unwrap();
    assert_eq!(capped.expires_at, cap);
    let refused = s
        .extend(&id, Duration::from_secs(60), cap)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StoreError::NotExtendable { why, .. } if why.contains("longest")),
        "{refused}"
    );

    // An ended lab is not extended; an unknown one is not found.
    s.transition(&id, &[Pending], Failed, None).await.unwrap();
    let ended = s
        .extend(&id, Duration::from_secs(60), cap + ChronoDuration::hours(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&ended, StoreError::NotExtendable { why, .. } if why.contains("ended")),
        "{ended}"
    );
    let unknown = new_scenario("acme", "never-inserted").scenario_id;
    assert!(matches!(
        s.extend(&unknown, Duration::from_secs(60), cap).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn the_last_check_of_a_running_lab_is_kept(s: Arc<dyn Store>) {
    let n = new_scenario("acme", "checked");
    let id = n.scenario_id.clone();
    s.insert_pending(&n, Billing::None).await.unwrap();
    let check = CheckSummary {
        checked_at: chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap(),
        passed: 1,
        total: 2,
        score: 0.5,
        criteria: BTreeMap::from([("a".to_owned(), true), ("b".to_owned(), false)]),
    };
    assert!(
        !s.record_check(&id, &check).await.unwrap(),
        "a pending lab has nothing to check"
    );
    s.transition(&id, &[Pending], Creating, None).await.unwrap();
    s.transition(&id, &[Creating], Running, None).await.unwrap();
    assert!(s.record_check(&id, &check).await.unwrap());
    let rec = s.get("acme", &id).await.unwrap().unwrap();
    assert_eq!(rec.last_check.as_ref(), Some(&check));
    let listed = s.list_for_tenant("acme", &[Running], 5).await.unwrap();
    assert_eq!(listed[0].last_check.as_ref(), Some(&check));
    // It stays readable once the lab has ended, and nothing overwrites it then.
    s.transition(&id, &[Running], Completed, None)
        .await
        .unwrap();
    assert!(!s.record_check(&id, &check).await.unwrap());
    let rec = s.get_any(&id).await.unwrap().unwrap();
    assert_eq!(rec.last_check, Some(check));
}
