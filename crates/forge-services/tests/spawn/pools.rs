//! Warm pools at the front door: a spawn of a pooled template takes the oldest warm lab of the
//! same template text, its scenario gets the lab's id and runs on the lab's host before the
//! answer, and `spawn.request` names that host;
//! hits and misses are counted; `?wait=` holds the answer until the scenario moves on.

use std::time::{Duration, Instant};

use chrono::Utc;
use forge_bus::Bus;
use forge_bus::messages::SpawnRequested;
use forge_catalog::Catalog;
use forge_core::{ScenarioId, ScenarioStatus};
use forge_services::spawn::SpawnConfig;
use forge_store::{Store, WarmLab};

use super::body;
use crate::support::{Harness, Options};

const POOLED: &str = "netplus-routing-lab";

fn warm(host: &str, digest: &str, age_secs: i64) -> WarmLab {
    let now = Utc::now();
    let now = chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap();
    WarmLab {
        scenario_id: ScenarioId::generate(),
        template: POOLED.into(),
        template_digest: digest.into(),
        host_id: host.into(),
        network_id: "forge_scn_000000000000".into(),
        containers: vec!["learner_vm".into()],
        ready_at: now - chrono::Duration::seconds(age_secs),
    }
}

async fn pooled_harness() -> Harness {
    let mut config = SpawnConfig::default();
    config.pooled_templates.insert(POOLED.into());
    Harness::start(Options {
        config,
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn a_pooled_spawn_takes_the_oldest_lab_of_its_template_text_and_names_its_host() {
    let h = pooled_harness().await;
    let mut sub = h
        .bus
        .subscribe("spawn.request", "orchestrator")
        .await
        .unwrap();
    let digest = Catalog::bundled()
        .unwrap()
        .get(POOLED)
        .unwrap()
        .digest
        .clone();
    let older = warm("host-a", &digest, 20);
    let newer = warm("host-b", &digest, 10);
    let stale = warm("host-a", "an-older-text", 60);
    for l in [&newer, &older, &stale] {
        h.store.put_warm(l).await.unwrap();
    }
    let t = h.spawner("globex");
    let mut got = Vec::new();
    for (i, want_host) in [Some("host-a"), Some("host-b"), None]
        .into_iter()
        .enumerate()
    {
        let r = h
            .spawn(&t, &body("netplus", &format!("pool-{i}")), &[])
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let id: ScenarioId = r.json()["scenario_id"].as_str().unwrap().parse().unwrap();
        // A hit is started before the answer (on the lab's host); a miss waits for a host.
        let want_status = if want_host.is_some() {
            "running"
        } else {
            "pending"
        };
        assert_eq!(r.json()["status"], want_status, "spawn {i}: {}", r.text);
        let rec = h.store.get_any(&id).await.unwrap().unwrap();
        assert_eq!(rec.host_id.as_deref(), want_host, "spawn {i}");
        assert_eq!(rec.started_at.is_some(), want_host.is_some(), "spawn {i}");
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap();
        let m: SpawnRequested = msg.json().unwrap();
        assert_eq!(m.scenario_id, id);
        assert_eq!(m.warm_host.as_deref(), want_host, "spawn {i}");
        got.push(id);
    }
    assert_eq!(got[0], older.scenario_id, "the oldest lab first");
    assert_eq!(got[1], newer.scenario_id);
    assert!(
        got[2] != stale.scenario_id,
        "a lab of another template text is never taken"
    );
    // A template without a pool is not counted.
    let r = h.spawn(&t, &body("ccna", "no-pool"), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let claims = h.store.pool_claims().await.unwrap();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!((claims[0].hits, claims[0].misses), (2, 1));
    h.stop().await;
}

#[tokio::test]
async fn wait_holds_the_answer_until_the_lab_runs_or_the_time_is_up() {
    let h = pooled_harness().await;
    let t = h.spawner("globex");
    let spawn_waiting = |wait: &str, rid: &str| {
        h.client
            .post(format!("{}/v1/spawn?wait={wait}", h.base))
            .bearer_auth(&t)
            .json(&body("netplus", rid))
    };

    // Nobody builds the lab here: the answer comes when the wait is up, still pending.
    let started = Instant::now();
    let r = h.send(spawn_waiting("300ms", "w-1")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["status"], "pending");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // An orchestrator stand-in takes the next one to `running`: the answer says so at once.
    let mut sub = h
        .bus
        .subscribe("spawn.request", "orchestrator")
        .await
        .unwrap();
    let store = h.store.clone();
    let builder = tokio::spawn(async move {
        loop {
            let msg = sub.next().await.unwrap();
            let m: SpawnRequested = msg.json().unwrap();
            if m.request_id != "w-2" {
                continue;
            }
            store.claim(&m.scenario_id, "host-a").await.unwrap();
            let to = ScenarioStatus::Running;
            let from = [ScenarioStatus::Creating];
            store
                .transition(&m.scenario_id, &from, to, None)
                .await
                .unwrap();
            return;
        }
    });
    let started = Instant::now();
    let r = h.send(spawn_waiting("20s", "w-2")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["status"], "running", "{}", r.text);
    assert!(started.elapsed() < Duration::from_secs(10));
    builder.await.unwrap();

    for bad in ["5", "31s", "1h", "05s"] {
        let r = h.send(spawn_waiting(bad, "w-bad")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(r.code(), "invalid_wait", "{bad}");
        assert!(r.message().contains("`wait`"), "{}", r.message());
    }
    h.stop().await;
}
