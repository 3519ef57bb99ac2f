//! Warm pools: a spawn takes a ready lab and runs at once; what the learner does in it scores
//! and bundles exactly as in a cold lab; the pool refills, holds at most all the host's slots
//! but one, drains a changed template, and starts over after a restart without leaving a lab.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use forge_core::ScenarioId;
use serde_json::{Value, json};

use crate::harness::{Harness, SOLUTION, TEMPLATE};

const OBSERVER: &[&str] = &["forge.observer"];

/// `GET /v1/pools` as an operator.
async fn pools(h: &Harness) -> Value {
    let api = h.api_as("demo", OBSERVER, "operator");
    let r = api
        .http
        .get(format!("{}/v1/pools", api.orchestrator))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("pools request");
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.expect("pools body")
}

/// The test template's pool row.
async fn pool(h: &Harness) -> Value {
    let p = pools(h).await;
    p["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["template"] == TEMPLATE)
        .cloned()
        .unwrap_or_else(|| panic!("no pool of {TEMPLATE}: {p}"))
}

/// Waits until the test template's pool has `n` ready labs.
async fn ready(h: &Harness, n: u64) -> Value {
    let start = Instant::now();
    loop {
        let p = pool(h).await;
        if p["ready"] == n {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the pool did not reach {n} ready labs: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids of the labs on the fake engine.
fn labs(h: &Harness) -> BTreeSet<ScenarioId> {
    h.fake.labs().into_iter().collect()
}

/// `POST /v1/spawn?wait=…`: the answer's body.
async fn spawn_waiting(h: &Harness) -> Value {
    let r = h
        .api
        .http
        .post(format!("{}/v1/spawn?wait=5s", h.api.spawn))
        .bearer_auth(&h.api.token)
        .json(&json!({"track": "netplus", "template": TEMPLATE,
                      "request_id": uuid::Uuid::new_v4().to_string()}))
        .send()
        .await
        .expect("spawn");
    assert_eq!(r.status().as_u16(), 201);
    r.json().await.expect("spawn body")
}

/// The JSON's shape: keys and the kinds of values, not the values.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => Value::Null,
    }
}

/// Spawns (waiting for `running`), solves half, submits; returns the spawn's answer and what
/// its bundle holds: score.json, the manifest's shape, the evidence files with their bytes.
async fn half_solved_bundle(
    h: &Harness,
    tag: &str,
) -> (Value, Value, Value, Vec<(String, Vec<u8>)>) {
    let answer = spawn_waiting(h).await;
    assert_eq!(answer["status"], "running", "{answer}");
    let id = answer["scenario_id"].as_str().unwrap().to_owned();
    let out = h.api.exec(&id, SOLUTION[0]).await;
    assert_eq!(out["exit_code"], 0, "{out}");
    h.api.submit(&id).await;
    h.wait_status(&id, "completed", Duration::from_secs(10))
        .await;
    let dir = h.dir.join(tag);
    h.api.download_bundle(&id, &dir).await;
    crate::api::verify(&h.platform.data_dir, &dir);
    let score: Value =
        serde_json::from_slice(&std::fs::read(dir.join("score.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let tar = std::fs::read(dir.join("evidence.tar.zst")).unwrap();
    // The evidence names its scenario; the same actions in another lab differ by the id only.
    let files = forge_evidence::verify::unpack(&tar)
        .unwrap()
        .into_iter()
        .map(|(name, bytes)| {
            let text = String::from_utf8_lossy(&bytes).replace(&id, "<scenario>");
            (name.replace(&id, "<scenario>"), text.into_bytes())
        })
        .collect();
    (answer, score, shape(&manifest), files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_hit_runs_at_once_and_bundles_like_a_cold_spawn() {
    let warm = Harness::start_with(|c| {
        c.orchestrator.pools.insert(TEMPLATE.into(), 1);
    })
    .await;
    let before = ready(&warm, 1).await;
    let pooled: BTreeSet<_> = labs(&warm);
    assert_eq!(pooled.len(), 1, "one warm lab launched: {before}");

    let hit = half_solved_bundle(&warm, "hit").await;
    let hit_id: ScenarioId = hit.0["scenario_id"].as_str().unwrap().parse().unwrap();
    assert!(
        pooled.contains(&hit_id),
        "the spawn took the warm lab (its id is the lab's)"
    );
    let after = pool(&warm).await;
    assert_eq!(
        (after["hits"].as_u64(), after["misses"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        warm.audited("scenario.running", hit_id.as_str()).len(),
        1,
        "the adopted lab's transitions are audited like a cold one's"
    );
    assert_eq!(warm.audited("scenario.creating", hit_id.as_str()).len(), 1);
    ready(&warm, 1).await;

    let cold = Harness::start().await;
    let miss = half_solved_bundle(&cold, "cold").await;
    assert_eq!(hit.1["score"], miss.1["score"], "the same score");
    assert_eq!(hit.1["criteria"], miss.1["criteria"]);
    assert_eq!(shape(&hit.1), shape(&miss.1), "score.json has one shape");
    assert_eq!(hit.2, miss.2, "the manifest has one shape");
    assert_eq!(hit.3, miss.3, "the same evidence, byte for byte");
    warm.stop().await;
    cold.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_never_take_the_last_slot_and_count_misses() {
    let h = Harness::start_with(|c| {
        c.orchestrator.host.capacity = 2;
        c.orchestrator.pools.insert(TEMPLATE.into(), 2);
    })
    .await;
    ready(&h, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pool(&h).await["ready"],
        1,
        "pools hold at most all slots but one"
    );
    // The lab of the first spawn is the warm one; the second finds the pool empty (its refill
    // has no slot) and runs cold in the slot left free.
    let first = h.running().await;
    let second = h.running().await;
    assert_ne!(first, second);
    let p = pool(&h).await;
    assert_eq!(
        (p["hits"].as_u64(), p["misses"].as_u64()),
        (Some(1), Some(1)),
        "{p}"
    );
    assert_eq!(p["ready"], 0, "both slots hold learners' labs: {p}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_full_pool_leaves_no_orphan_and_refills() {
    let h = Harness::start_with(|c| {
        c.orchestrator.pools.insert(TEMPLATE.into(), 2);
    })
    .await;
    ready(&h, 2).await;
    let learner = h.running().await;
    ready(&h, 2).await;
    let old_pool: BTreeSet<ScenarioId> = labs(&h)
        .into_iter()
        .filter(|id| id.as_str() != learner)
        .collect();
    assert_eq!(old_pool.len(), 2);

    // The labs stay on the engine, as after a crash; the new process starts over.
    let h = h
        .restart_with(|c| {
            c.orchestrator.pools.insert(TEMPLATE.into(), 2);
        })
        .await;
    ready(&h, 2).await;
    let now = labs(&h);
    assert!(
        now.is_disjoint(&old_pool),
        "the old pool's labs are gone: {now:?}"
    );
    assert_eq!(
        now.len(),
        3,
        "the learner's lab and two new warm labs: {now:?}"
    );
    assert!(now.iter().any(|id| id.as_str() == learner));
    assert_eq!(h.api.status(&learner).await, "running");

    // A restart with a changed template: every warm lab is replaced.
    let path = h.dir.join("templates").join(format!("{TEMPLATE}.yaml"));
    let changed = std::fs::read_to_string(&path).unwrap().replace(
        "the fast lifecycle tests' lab",
        "the fast lifecycle tests' lab, edited",
    );
    let h = h
        .restart_with(move |c| {
            c.orchestrator.pools.insert(TEMPLATE.into(), 2);
            std::fs::write(
                c.template_dir.as_ref().unwrap().join("fast-lab.yaml"),
                changed,
            )
            .unwrap();
        })
        .await;
    ready(&h, 2).await;
    let again = labs(&h);
    assert!(
        again.is_disjoint(
            &now.iter()
                .filter(|id| id.as_str() != learner)
                .cloned()
                .collect()
        )
    );
    assert_eq!(again.len(), 3, "{again:?}");

    // Pools off: nothing warm remains.
    let h = h.restart_with(|_| {}).await;
    let start = Instant::now();
    while labs(&h).len() != 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", labs(&h));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pools(&h).await["pools"][0]["ready"], 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_spawn_on_a_full_host_evicts_a_warm_lab() {
    let h = Harness::start_with(|c| {
        c.orchestrator.host.capacity = 3;
        c.orchestrator.pools.insert(TEMPLATE.into(), 2);
        let dir = c.template_dir.clone().unwrap();
        let text = std::fs::read_to_string(dir.join("fast-lab.yaml")).unwrap();
        let other = text.replacen("name: fast-lab", "name: other-lab", 1);
        std::fs::write(dir.join("other-lab.yaml"), other).unwrap();
    })
    .await;
    ready(&h, 2).await;
    let spawn_other = || {
        h.api
            .spawn(json!({"track": "netplus", "template": "other-lab",
                            "request_id": uuid::Uuid::new_v4().to_string()}))
    };
    // One learner lab and two warm labs fill the host; the next cold spawn evicts a warm lab
    // instead of waiting for a slot the pool would never give back.
    let a = spawn_other().await;
    h.api
        .wait_for(&a, &["running"], Duration::from_secs(10))
        .await;
    let b = spawn_other().await;
    h.api
        .wait_for(&b, &["running"], Duration::from_secs(10))
        .await;
    let p = pool(&h).await;
    assert_eq!(p["ready"], 1, "one warm lab made room: {p}");
    assert_eq!(labs(&h).len(), 3, "never more labs than the capacity");
    h.stop().await;
}
