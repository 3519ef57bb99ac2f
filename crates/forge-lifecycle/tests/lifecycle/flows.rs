//! Learner flows: every bundled track solved to a verified 1.0, a tiny timeout, a training-gate
//! deny, and tenant isolation.

use std::time::{Duration, Instant};

use forge_catalog::Catalog;
use forge_core::Track;
use forge_lifecycle::platform::Platform;
use serde_json::json;

use crate::common::{self, Api, Cleanup, LEARNER_ROLES};

/// spawn → running → check fails → solution through exec → check passes → submit → completed →
/// score 1.0 → bundle verifies → nothing left.
async fn solve_track(api: &Api, cleanup: &Cleanup, track: Track, data_dir: &std::path::Path) {
    let catalog = Catalog::bundled().expect("bundled catalog");
    let entry = catalog.default_for(track).expect("default template");
    let template = entry.template.clone();
    let learner = template.learner_container().name.clone();

    let id = api.spawn_track(track.as_str(), cleanup).await;
    let view = api
        .wait_for(&id, &["running"], Duration::from_secs(120))
        .await;
    assert_eq!(view["template"], template.metadata.name.as_str());

    let before = api.check(&id).await;
    assert!(
        before["passed"].as_u64() < before["total"].as_u64(),
        "{track}: criteria pass before the solution: {before}"
    );
    assert!(before["score"].as_f64().unwrap() < 1.0);

    assert!(!template.spec.solution.is_empty(), "{track}: no solution");
    for step in &template.spec.solution {
        assert_eq!(
            step.container, learner,
            "{track}: solution outside the learner container"
        );
        let out = api.exec(&id, &step.command).await;
        assert_eq!(
            out["exit_code"], 0,
            "{track}: step {:?}: {out}",
            step.command
        );
    }

    // Connectivity may take a moment to settle after a route change.
    let start = Instant::now();
    let after = loop {
        let c = api.check(&id).await;
        if c["passed"] == c["total"] || start.elapsed() > Duration::from_secs(20) {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        after["passed"], after["total"],
        "{track}: check after solution: {after}"
    );
    assert_eq!(after["score"].as_f64(), Some(1.0), "{track}: {after}");

    api.submit(&id).await;
    let done = api
        .wait_for(&id, &["completed"], Duration::from_secs(120))
        .await;
    assert!(done["ended_at"].is_string(), "{done}");

    let score = api.wait_score(&id, Duration::from_secs(30)).await;
    assert_eq!(
        score["score"]["value"].as_f64(),
        Some(1.0),
        "{track}: {score}"
    );

    let dir = data_dir.join(format!("download-{id}"));
    api.download_bundle(&id, &dir).await;
    common::verify(data_dir, &dir);

    common::assert_no_lab(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bundled_track_solves_to_a_verified_full_score() {
    let run = common::new_run_id();
    let cleanup = Cleanup::new(&run);
    let dir = tempfile::tempdir().expect("tempdir");
    let platform = Platform::start(common::config(dir.path(), &run))
        .await
        .expect("platform starts");
    let token = platform.mint("demo", LEARNER_ROLES, "learner-1").unwrap();
    let api = Api::new(&platform, token);

    let data_dir = dir.path().to_path_buf();
    tokio::join!(
        solve_track(&api, &cleanup, Track::Netplus, &data_dir),
        solve_track(&api, &cleanup, Track::Ccna, &data_dir),
        solve_track(&api, &cleanup, Track::Cissp, &data_dir),
    );
    platform.shutdown().await;
    cleanup.sweep();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_timeout_ends_as_timeout_with_a_score_and_no_lab() {
    let run = common::new_run_id();
    let cleanup = Cleanup::new(&run);
    let dir = tempfile::tempdir().expect("tempdir");
    let templates = dir.path().join("templates");
    common::write_template(&templates, "netplus-routing.yaml", |t| {
        t.replace("name: netplus-routing-lab", "name: netplus-timeout-lab")
            .replace("timeout_minutes: 30", "timeout_minutes: 1")
            .replace("    - catalog:default\n", "")
    });
    let mut cfg = common::config(&dir.path().join("data"), &run);
    cfg.template_dir = Some(templates);
    let platform = Platform::start(cfg).await.expect("platform starts");
    let data_dir = platform.data_dir.clone();
    let api = Api::new(
        &platform,
        platform.mint("demo", LEARNER_ROLES, "learner-1").unwrap(),
    );

    let spawned = Instant::now();
    let id = api
        .spawn(
            json!({"track": "netplus", "template": "netplus-timeout-lab",
                   "request_id": uuid::Uuid::new_v4().to_string()}),
            &cleanup,
        )
        .await;
    api.wait_for(&id, &["running"], Duration::from_secs(60))
        .await;
    // Half the work done at expiry: a route to the target network that leads nowhere, so
    // `route-add` passes and `connectivity` does not.
    api.exec(&id, "ip route add blackhole 10.20.0.0/24").await;
    let now = api.check(&id).await;
    assert_eq!(
        (now["passed"].as_u64(), now["total"].as_u64()),
        (Some(1), Some(2)),
        "{now}"
    );

    let end = api
        .wait_for(&id, &["timeout"], Duration::from_secs(100))
        .await;
    let waited = spawned.elapsed();
    assert!(waited >= Duration::from_secs(55), "ended too early: {end}");
    eprintln!("timed out {waited:?} after the spawn");
    // Scored from the lab's state at expiry: one of two equally weighted criteria.
    let score = api.wait_score(&id, Duration::from_secs(30)).await;
    assert_eq!(score["score"]["value"].as_f64(), Some(0.5), "{score}");
    assert_eq!(score["score"]["passed"], 1, "{score}");
    assert_eq!(score["score"]["total"], 2, "{score}");
    let dl = data_dir.join("download");
    api.download_bundle(&id, &dl).await;
    common::verify(&data_dir, &dl);
    common::assert_no_lab(&id);

    platform.shutdown().await;
    cleanup.sweep();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_gate_deny_fails_the_scenario_with_the_reasons() {
    let run = common::new_run_id();
    let cleanup = Cleanup::new(&run);
    let dir = tempfile::tempdir().expect("tempdir");
    let templates = dir.path().join("templates");
    common::write_template(&templates, "netplus-routing.yaml", |t| {
        t.replace("name: netplus-routing-lab", "name: netplus-exploit-lab")
            .replace("attacker_max_exploits: 0", "attacker_max_exploits: 3")
            .replace("    - catalog:default\n", "")
    });
    let data_dir = dir.path().join("data");
    let mut cfg = common::config(&data_dir, &run);
    cfg.template_dir = Some(templates);
    let platform = Platform::start(cfg).await.expect("platform starts");
    let api = Api::new(
        &platform,
        platform.mint("demo", LEARNER_ROLES, "learner-1").unwrap(),
    );

    let id = api
        .spawn(
            json!({"track": "netplus", "template": "netplus-exploit-lab",
                   "request_id": uuid::Uuid::new_v4().to_string()}),
            &cleanup,
        )
        .await;
    let start = Instant::now();
    let view = loop {
        let (code, v) = api.scenario(&id).await;
        assert_eq!(code, 200, "{v}");
        if v["status"] == "failed" {
            break v;
        }
        assert!(
            ["pending", "creating"].contains(&v["status"].as_str().unwrap_or_default()),
            "unexpected state: {v}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never failed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = view["error"].as_str().expect("error set");
    assert!(error.contains("training gate denied"), "{error}");
    assert!(error.contains("attacker_max_exploits"), "{error}");
    assert!(view["ended_at"].is_string() || view["updated_at"].is_string());
    common::assert_no_lab(&id);

    platform.shutdown().await;
    let log =
        std::fs::read_to_string(data_dir.join("audit").join("audit.jsonl")).expect("audit log");
    let failed = log
        .lines()
        .filter(|l| l.contains("scenario.failed") && l.contains(&id))
        .collect::<Vec<_>>();
    assert_eq!(
        failed.len(),
        1,
        "audit events scenario.failed for {id}: {failed:?}"
    );
    assert!(failed[0].contains("attacker_max_exploits"), "{}", failed[0]);
    cleanup.sweep();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_cannot_read_a_scenario_or_its_score() {
    let run = common::new_run_id();
    let cleanup = Cleanup::new(&run);
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(
        &tenants,
        r#"currency = "usd"

[plans.demo]
entitled_tracks = ["netplus", "ccna", "cissp"]
max_active_scenarios = 1000
rate = { requests_per_second = 10000.0, burst = 10000 }
prices.netplus = { default = 0 }
prices.ccna = { default = 0 }
prices.cissp = { default = 0 }

[tenants.alpha]
plan = "demo"
name = "Tenant A"

[tenants.beta]
plan = "demo"
name = "Tenant B"
"#,
    )
    .unwrap();
    let mut cfg = common::config(&dir.path().join("data"), &run);
    cfg.tenants_file = Some(tenants);
    let platform = Platform::start(cfg).await.expect("platform starts");
    let a = Api::new(
        &platform,
        platform.mint("alpha", LEARNER_ROLES, "alice").unwrap(),
    );
    // B may read scores of its own tenant and is an instructor there: still nothing of A's.
    let b = a.with_token(
        platform
            .mint(
                "beta",
                &["forge.spawn", "forge.score.read", "forge.instructor"],
                "bob",
            )
            .unwrap(),
    );

    let id = a.spawn_track("netplus", &cleanup).await;
    a.wait_for(&id, &["running"], Duration::from_secs(120))
        .await;

    assert_eq!(b.scenario(&id).await.0, 404);
    assert_eq!(b.post_worker(&id, "check", None).await.0, 404);
    assert_eq!(
        b.post_worker(&id, "exec", Some(json!({"command": "id"})))
            .await
            .0,
        404
    );
    assert_eq!(b.post_worker(&id, "submit", None).await.0, 404);
    assert_eq!(b.delete(&id).await, 404);
    assert_eq!(
        a.status(&id).await,
        "running",
        "B's attempts changed nothing"
    );

    a.submit(&id).await;
    a.wait_for(&id, &["completed"], Duration::from_secs(120))
        .await;
    let score = a.wait_score(&id, Duration::from_secs(30)).await;
    assert_eq!(score["score"]["value"].as_f64(), Some(0.0), "{score}");

    assert_eq!(b.scenario(&id).await.0, 404);
    assert_eq!(b.score_raw(&id, None).await.0, 404);
    for f in [
        "score.json",
        "evidence.tar.zst",
        "manifest.json",
        "verdict.sig",
    ] {
        assert_eq!(b.score_raw(&id, Some(f)).await.0, 404, "{f}");
    }
    assert_eq!(a.score_raw(&id, Some("verdict.sig")).await.0, 200);
    common::assert_no_lab(&id);

    platform.shutdown().await;
    // The attempts on A's score are on record, under B's identity.
    let log = std::fs::read_to_string(dir.path().join("data").join("audit").join("audit.jsonl"))
        .expect("audit log");
    let denied = log
        .lines()
        .filter(|l| l.contains("access.denied") && l.contains(&id) && l.contains("\"bob\""))
        .count();
    assert!(
        denied >= 5,
        "expected B's score reads audited as access.denied, found {denied}"
    );
    cleanup.sweep();
}
