//! The learner's flow on real labs: every bundled track solved through the API to a verified
//! 1.0, all three at once.

use std::time::{Duration, Instant};

use forge_catalog::Catalog;
use forge_core::Track;

use crate::common::{self, Api, Cleanup, LEARNER_ROLES};

/// spawn → running → check fails → solution through exec → check passes → submit → completed →
/// score 1.0 → bundle verifies → nothing left.
async fn solve_track(api: &Api, cleanup: &Cleanup, track: Track, data_dir: &std::path::Path) {
    let catalog = Catalog::bundled().expect("bundled catalog");
    let entry = catalog.default_for(track).expect("default template");
    let template = entry.template.clone();
    let learner = template.learner_container().name.clone();

    let id = api.spawn_track(track.as_str()).await;
    cleanup.saw(&id);
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
    let platform = common::start(common::config(dir.path(), &run))
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
