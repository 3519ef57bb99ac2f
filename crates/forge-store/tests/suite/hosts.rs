//! Lab hosts: the claim of a pending scenario by one host, and the hosts' leases.

use std::sync::Arc;

use chrono::{Duration as ChronoDuration, Utc};
use forge_core::ScenarioStatus::*;
use forge_store::{Billing, LabHost, Store, StoreError};

use super::{concurrently, new_scenario};

fn host(id: &str, capacity: u32, lease_secs: i64) -> LabHost {
    let now = Utc::now();
    let now = chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap();
    LabHost {
        host_id: id.to_owned(),
        url: format!("http://127.0.0.1:1/{id}"),
        runner_url: format!("http://127.0.0.1:3/{id}"),
        capacity,
        started_at: now,
        heartbeat_at: now,
        lease_expires_at: now + ChronoDuration::seconds(lease_secs),
    }
}

pub async fn claim_has_one_winner_and_records_the_host(s: Arc<dyn Store>) {
    let n = new_scenario("acme", "claim-1");
    s.insert_pending(&n, Billing::None).await.unwrap();
    let id = n.scenario_id.clone();
    assert_eq!(s.get_any(&id).await.unwrap().unwrap().host_id, None);

    let results = concurrently(8, |i| {
        let (s, id) = (s.clone(), id.clone());
        async move { (i, s.claim(&id, &format!("host-{i}")).await) }
    })
    .await;
    let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one host claims a scenario");
    let (i, won) = winners[0];
    let won = won.as_ref().unwrap();
    assert_eq!(won.status, Creating);
    assert_eq!(won.host_id.as_deref(), Some(format!("host-{i}").as_str()));
    for (_, r) in results.iter().filter(|(_, r)| r.is_err()) {
        assert!(
            matches!(
                r,
                Err(StoreError::Conflict {
                    current: Creating,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let stored = s.get_any(&id).await.unwrap().unwrap();
    assert_eq!(stored.host_id, won.host_id);
    // The host stays recorded through later transitions.
    let running = s.transition(&id, &[Creating], Running, None).await.unwrap();
    assert_eq!(running.host_id, won.host_id);

    let unknown = forge_core::ScenarioId::generate();
    assert!(matches!(
        s.claim(&unknown, "host-0").await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn leases_are_registered_renewed_and_listed(s: Arc<dyn Store>) {
    assert!(s.lab_hosts().await.unwrap().is_empty());
    let a = host("host-a", 5, 30);
    let b = host("host-b", 3, -1);
    s.renew_lease(&b).await.unwrap();
    s.renew_lease(&a).await.unwrap();
    let hosts = s.lab_hosts().await.unwrap();
    assert_eq!(
        hosts,
        vec![a.clone(), b.clone()],
        "listed by id, as written"
    );
    let now = Utc::now();
    assert!(!hosts[0].expired(now));
    assert!(hosts[1].expired(now));

    // A renewal replaces the row: a host that restarted has a new start and a new lease.
    let mut b2 = host("host-b", 4, 60);
    b2.url = "http://127.0.0.1:2/host-b".into();
    s.renew_lease(&b2).await.unwrap();
    let hosts = s.lab_hosts().await.unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[1], b2);
    assert!(!hosts[1].expired(Utc::now()));
}
