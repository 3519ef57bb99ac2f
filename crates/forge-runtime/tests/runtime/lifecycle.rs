//! Teardown, reconcile after a "crash", age-based cleanup, and the supervisor's restart +
//! re-plumb (or failure report).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use forge_runtime::{ContainerState, LabEvent, Runtime, Supervisor, SupervisorConfig};

use crate::common::*;
use crate::shared::counted;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_is_complete_and_idempotent() {
    let rt = runtime().await;
    let (lab, guard) = launch(&rt, &fixture("flat-lab.yaml")).await;
    let scn = lab.scenario_id.clone();
    let (names, ns) = lab_leftovers(&scn);
    assert_eq!(names.len(), 2);
    assert!(ns);
    let labs = rt.list_labs().await.unwrap();
    let me = labs
        .iter()
        .find(|l| l.scenario_id == scn.as_str())
        .expect("listed");
    assert!(
        me.namespace_exists
            && me.containers.len() == 2
            && me
                .containers
                .iter()
                .all(|c| c.state == ContainerState::Running)
    );
    assert_eq!(me.tenant_id.as_deref(), Some("tenant-test"));

    let first = rt.teardown(&scn).await.unwrap();
    assert_eq!(
        (first.containers_removed, first.namespace_removed),
        (2, true)
    );
    let again = rt.teardown(&scn).await.unwrap();
    assert_eq!(
        (again.containers_removed, again.namespace_removed),
        (0, false)
    );
    assert_eq!(lab_leftovers(&scn), (vec![], false));
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_removes_labs_nobody_owns() {
    let rt = runtime().await;
    let t = fixture("flat-lab.yaml");
    // Two labs whose owner "crashed" (handles dropped), one of them half torn down already.
    let (a, guard_a) = launch(&rt, &t).await;
    let (b, guard_b) = launch(&rt, &t).await;
    run(&[
        "docker",
        "rm",
        "-f",
        &forge_runtime::container_name(&b.scenario_id, "alpha"),
    ]);
    // And a bare namespace left by a crash during a launch.
    let orphan = scenario_id();
    run(&["ip", "netns", "add", &orphan.network_id()]);
    let _orphan_guard = LabGuard::new(&orphan);

    let ours: HashSet<String> = [
        a.scenario_id.to_string(),
        b.scenario_id.to_string(),
        orphan.to_string(),
    ]
    .into_iter()
    .collect();
    let listed: HashSet<String> = rt
        .list_labs()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.scenario_id)
        .collect();
    assert!(
        ours.is_subset(&listed),
        "list_labs finds labs by label and by namespace"
    );

    // Other processes' labs stay alive; none of ours is.
    let report = rt.reconcile(&|id: &str| !ours.contains(id)).await.unwrap();
    let removed: HashSet<String> = report.removed.into_iter().collect();
    assert_eq!(removed, ours, "errors: {:?}", report.errors);
    for scn in [&a.scenario_id, &b.scenario_id, &orphan] {
        assert_eq!(lab_leftovers(scn), (vec![], false), "{scn}");
    }
    drop((guard_a, guard_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_keeps_young_labs() {
    let rt = runtime().await;
    let (lab, guard) = launch(&rt, &fixture("flat-lab.yaml")).await;
    // 1 day: only debris older than that goes; our fresh lab stays.
    let report = rt
        .cleanup_older_than(Duration::from_secs(86_400))
        .await
        .unwrap();
    assert!(
        report.kept.contains(&lab.scenario_id.to_string()),
        "{report:?}"
    );
    assert!(lab_leftovers(&lab.scenario_id).1);
    guard.close(&rt).await;
}

const RESTARTS: &str = "forge_container_restarts_total";

async fn next_event(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<LabEvent>,
    scn: &str,
) -> LabEvent {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(45), rx.recv())
            .await
            .expect("supervisor event")
            .unwrap();
        let id = match &ev {
            LabEvent::Restarted { scenario_id, .. } | LabEvent::Failed { scenario_id, .. } => {
                scenario_id
            }
        };
        if id == scn {
            return ev;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_is_restarted_and_replumbed() {
    counted(RESTARTS); // install the recorder before anything records
    let rt = runtime().await;
    let case = format!("restart-{}", run_id());
    let cfg = SupervisorConfig {
        label_filters: vec![format!("{TEST_CASE_LABEL}={case}")],
        ..Default::default()
    };
    let (sup, mut events) = Supervisor::new(Arc::new(rt.clone()), cfg);
    let task = sup.spawn();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let t = fixture("netplus-lab.yaml");
    let (lab, guard) = launch_case(&rt, &t, &case).await;
    let scn = &lab.scenario_id;
    sh(
        &rt,
        scn,
        "learner",
        "ip route add 10.20.0.0/24 via 10.10.0.1",
    )
    .await;
    let fetch = "timeout 3 wget -qO- http://10.20.0.10/";
    assert_prints(&rt, scn, "learner", fetch, "FrostGate target").await;

    let web = forge_runtime::container_name(scn, "web");
    let pid_before = docker_inspect(&web)["State"]["Pid"].as_i64().unwrap();
    run(&["docker", "kill", &web]);
    match next_event(&mut events, scn.as_str()).await {
        LabEvent::Restarted { container, .. } => assert_eq!(container, "web"),
        other => panic!("expected a restart, got {other:?}"),
    }
    let v = docker_inspect(&web);
    assert_eq!(v["State"]["Running"], true);
    assert_ne!(
        v["State"]["Pid"].as_i64().unwrap(),
        pid_before,
        "a new process in a new namespace"
    );
    // Re-plumbed: address, default route via the gateway, and the page answers again.
    assert_prints(&rt, scn, "web", "ip route", "default via 10.20.0.1").await;
    let again = sh(&rt, scn, "learner", fetch).await;
    assert!(again.stdout.contains("FrostGate target"), "{again:?}");
    // Lab names still resolve in the restarted container (its hosts file lives in its layer).
    assert_prints(&rt, scn, "web", "cat /etc/hosts", "learner").await;
    assert!(
        counted(RESTARTS) >= 1,
        "forge_container_restarts_total counted"
    );

    // A teardown is not a death to recover from.
    guard.close(&rt).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lab_leftovers(scn), (vec![], false));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecoverable_container_fails_the_lab_with_a_reason() {
    let rt = runtime().await;
    let case = format!("fail-{}", run_id());
    let cfg = SupervisorConfig {
        label_filters: vec![format!("{TEST_CASE_LABEL}={case}")],
        backoff: Duration::from_millis(50),
        ..Default::default()
    };
    let (sup, mut events) = Supervisor::new(Arc::new(rt.clone()), cfg);
    let task = sup.spawn();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (lab, guard) = launch_case(&rt, &fixture("flat-lab.yaml"), &case).await;
    let scn = &lab.scenario_id;
    // Break the fabric: without its bridge the container cannot be re-plumbed.
    run(&["ip", "-n", &lab.network_id, "link", "del", "br0"]);
    run(&[
        "docker",
        "kill",
        &forge_runtime::container_name(scn, "beta"),
    ]);
    match next_event(&mut events, scn.as_str()).await {
        LabEvent::Failed {
            container, reason, ..
        } => {
            assert_eq!(container, "beta");
            assert!(
                reason.contains("could not be restarted") && reason.contains("br0"),
                "{reason}"
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    guard.close(&rt).await;
    assert_eq!(lab_leftovers(scn), (vec![], false));
    task.abort();
}

#[tokio::test]
async fn ping_answers_on_the_socket_it_was_given() {
    use forge_runtime::{DockerRuntime, RuntimeError};
    DockerRuntime::connect()
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
    let at = DockerRuntime::connect_at("unix:///var/run/docker.sock")
        .await
        .unwrap();
    at.ping().await.unwrap();
    let missing = std::env::temp_dir().join(format!("forge-no-engine-{}.sock", run_id()));
    let e = DockerRuntime::connect_at(&missing)
        .await
        .err()
        .expect("no engine there");
    assert!(matches!(e, RuntimeError::Connect(_)), "{e}");
    assert!(
        e.to_string()
            .contains("cannot connect to the docker engine"),
        "{e}"
    );
}
