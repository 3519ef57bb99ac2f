//! The reference spec's example template (docs/forge-reference.md, "Template Structure"), as
//! written there, dropped into `TEMPLATE_DIR`: it spawns through the API and runs on its
//! Debian images unchanged — from a warm pool at once, and cold.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, Api, Cleanup, LEARNER_ROLES};

/// The example's YAML block, verbatim.
fn spec_example_yaml() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/forge-reference.md");
    let doc = std::fs::read_to_string(path).expect("docs/forge-reference.md");
    let after = doc
        .split("### Template Structure")
        .nth(1)
        .expect("Template Structure section");
    after
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the example's yaml block")
        .to_owned()
}

/// `POST /v1/spawn?wait=30s` of the example; the answer and how long it took.
async fn spawn_waiting(api: &Api, name: &str) -> (Value, Duration) {
    let started = Instant::now();
    let r = api
        .http
        .post(format!("{}/v1/spawn?wait=30s", api.spawn))
        .bearer_auth(&api.token)
        .json(&json!({"track": "netplus", "template": name,
                      "request_id": uuid::Uuid::new_v4().to_string()}))
        .send()
        .await
        .expect("spawn");
    assert_eq!(r.status().as_u16(), 201);
    (r.json().await.expect("body"), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_example_spawns_and_runs_unchanged_warm_and_cold() {
    let yaml = spec_example_yaml();
    let name = "netplus-routing-lab";
    assert!(yaml.contains(&format!("name: {name}")), "{yaml}");
    let run = common::new_run_id();
    let cleanup = Cleanup::new(&run);
    let dir = tempfile::tempdir().expect("tempdir");
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(templates.join("spec-example.yaml"), &yaml).unwrap();
    let mut cfg = common::config(&dir.path().join("data"), &run);
    cfg.template_dir = Some(templates);
    cfg.orchestrator.pools.insert(name.into(), 1);
    let platform = common::start(cfg).await.expect("platform starts");
    let api = Api::new(
        &platform,
        platform.mint("demo", LEARNER_ROLES, "learner-1").unwrap(),
    );
    let operator = api.with_token(platform.mint("demo", &["forge.observer"], "ops").unwrap());

    // The pool fills with one lab of the example.
    let start = Instant::now();
    loop {
        let p: Value = operator
            .http
            .get(format!("{}/v1/pools", operator.orchestrator))
            .bearer_auth(&operator.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if p["pools"][0]["ready"] == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the pool did not fill: {p}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (warm, took) = spawn_waiting(&api, name).await;
    let warm_id = warm["scenario_id"].as_str().unwrap().to_owned();
    cleanup.saw(&warm_id);
    assert_eq!(warm["status"], "running", "a warm lab runs at once: {warm}");
    eprintln!("warm spawn answered running in {took:?}");
    let (cold, _) = spawn_waiting(&api, name).await;
    let cold_id = cold["scenario_id"].as_str().unwrap().to_owned();
    cleanup.saw(&cold_id);
    let cold_view = api
        .wait_for(&cold_id, &["running"], Duration::from_secs(120))
        .await;
    assert_eq!(cold_view["template"], name);

    // Both are the example's lab: three containers, the router's web target answers.
    for id in [&warm_id, &cold_id] {
        let (_, v) = api.scenario(id).await;
        assert_eq!(v["containers"].as_array().map(Vec::len), Some(3), "{v}");
        let c = api.check(id).await;
        assert_eq!(c["total"], 2, "{c}");
        assert_eq!(api.delete(id).await, 200);
        common::assert_no_lab(id);
    }
    platform.shutdown().await;
    cleanup.sweep();
}
