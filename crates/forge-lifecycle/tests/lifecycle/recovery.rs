//! Restart convergence: after the platform stops (or dies) and starts again on the same data dir
//! and host, a whole running lab is kept and its timer re-armed, a lab caught half-built fails,
//! a lab lost while the platform was down fails with a reason, and orphans are removed.

use std::time::Duration;

use forge_core::ScenarioId;
use forge_runtime::{LabSpec, Runtime};

use crate::flows::{insert_pending, spawn_expiring};
use crate::harness::{Harness, TEMPLATE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_whole_labs_fails_half_built_ones_and_removes_orphans() {
    let h = Harness::start().await;
    let kept = h.running().await;

    // A lab on the host that no scenario owns.
    let orphan = ScenarioId::generate();
    let template = h.platform.catalog.get(TEMPLATE).unwrap().template.clone();
    h.fake
        .launch(LabSpec::new(orphan.clone(), "demo", (*template).clone()))
        .await
        .unwrap();

    // A lab being created when the platform stops.
    h.fake.set_launch_delay(Duration::from_secs(30));
    let creating = h.spawn().await;
    h.wait_status(&creating, "creating", Duration::from_secs(5))
        .await;

    let h = h.restart_with(|_| {}).await;
    h.fake.set_launch_delay(Duration::ZERO);
    let r = &h.platform.recovered;
    assert_eq!(r.kept_running, vec![kept.clone()], "{r:?}");
    assert_eq!(r.failed_creating, vec![creating.clone()], "{r:?}");
    assert!(r.orphans_removed.contains(&orphan.to_string()), "{r:?}");
    assert!(!h.has_lab(&orphan.to_string()));

    let v = h.api.scenario(&creating).await.1;
    assert_eq!(v["status"], "failed");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("restarted while the lab was being created"),
        "{v}"
    );
    assert!(!h.has_lab(&creating), "the half-built lab is gone");

    // The kept lab works as before and still ends normally.
    assert_eq!(h.api.status(&kept).await, "running");
    h.solve(&kept).await;
    h.api.submit(&kept).await;
    h.wait_status(&kept, "completed", Duration::from_secs(10))
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_lost_while_down_fails_and_a_kept_lab_still_times_out() {
    let h = Harness::start().await;
    let lost = h.running().await;
    let timed = spawn_expiring(&h, Duration::from_secs(3)).await;
    h.wait_status(&timed, "running", Duration::from_secs(5))
        .await;

    // Lost without an engine event, as when the host rebooted while the platform was down.
    h.fake.lose_lab(&lost.parse().unwrap());
    let h = h.restart_with(|_| {}).await;
    assert_eq!(h.platform.recovered.failed_running, vec![lost.clone()]);
    let v = h.api.scenario(&lost).await.1;
    assert_eq!(v["status"], "failed");
    assert!(v["error"].as_str().unwrap().contains("lost"), "{v}");

    // The timer of the kept lab was re-armed by the recovery.
    h.wait_status(&timed, "timeout", Duration::from_secs(10))
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_scenario_whose_message_was_lost_is_built_on_restart() {
    let h = Harness::start().await;
    // Persisted, but the process died before `spawn.request` was published (or, on the
    // in-process bus, before it was consumed).
    let (id, _) = insert_pending(&h, Duration::from_secs(600)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.api.status(&id).await, "pending");
    let h = h.restart_with(|_| {}).await;
    assert_eq!(h.platform.recovered.resumed_pending, vec![id.clone()]);
    h.wait_status(&id, "running", Duration::from_secs(10)).await;
    assert!(h.has_lab(&id));
    h.stop().await;
}
