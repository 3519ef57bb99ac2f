//! The fake's own behaviour beyond the conformance suite: its test controls, what it records,
//! and that it validates templates like the Docker backend.

use std::time::{Duration, Instant};

use forge_core::ScenarioId;
use forge_runtime::fake::FakeRuntime;
use forge_runtime::{
    ContainerState, ExecRequest, ExecResult, LabSpec, Runtime, RuntimeError, RuntimeEvent,
};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::common::{fixture, launch, launched};

fn answer(stdout: &str) -> Option<ExecResult> {
    Some(ExecResult {
        exit_code: 0,
        stdout: stdout.into(),
        stderr: String::new(),
        truncated: false,
        duration: Duration::ZERO,
        timed_out: false,
    })
}

#[tokio::test]
async fn exec_is_recorded_and_answered_by_the_newest_matching_handler() {
    let (rt, scn) = launched("netplus-lab.yaml").await;

    // Nothing scripted: exit 0, no output.
    let r = rt
        .exec(&scn, "learner", ExecRequest::argv(["ip", "route"]))
        .await
        .unwrap();
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, ""));

    rt.on_exec(|c| (c.command == "hostname").then(|| answer("old\n")).flatten());
    rt.on_exec(|c| {
        (c.container == "web" && c.command == "hostname")
            .then(|| answer("web\n"))
            .flatten()
    });
    let host = |c: &'static str| {
        let rt = rt.clone();
        let scn = scn.clone();
        async move {
            rt.exec(&scn, c, ExecRequest::shell("hostname"))
                .await
                .unwrap()
                .stdout
        }
    };
    assert_eq!(host("web").await, "web\n");
    assert_eq!(
        host("router").await,
        "old\n",
        "falls through to older handlers"
    );

    // Output is capped like a real exec.
    rt.on_exec(|c| {
        (c.command == "yes")
            .then(|| answer(&"y\n".repeat(100)))
            .flatten()
    });
    let r = rt
        .exec(&scn, "web", ExecRequest::shell("yes").max_output(10))
        .await
        .unwrap();
    assert!(r.truncated && r.stdout.len() == 10, "{r:?}");

    let calls = rt.exec_calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[0].argv, ["ip", "route"]);
    assert_eq!(calls[0].command, "ip route");
    assert_eq!(calls[1].argv, ["/bin/sh", "-c", "hostname"]);
    assert_eq!(calls[1].command, "hostname");
    assert_eq!(&calls[1].scenario, &scn);
}

#[tokio::test]
async fn an_injected_launch_failure_builds_nothing_and_passes() {
    let rt = FakeRuntime::default();
    rt.fail_next_launch("image pull refused");
    let spec = LabSpec::new(ScenarioId::generate(), "t", fixture("flat-lab.yaml"));
    let err = rt.launch(spec.clone()).await.unwrap_err();
    assert!(err.to_string().contains("image pull refused"), "{err}");
    assert!(rt.labs().is_empty());
    rt.launch(spec.clone())
        .await
        .expect("the next launch works");
    assert_eq!(rt.labs(), std::slice::from_ref(&spec.scenario_id));
    assert!(matches!(
        rt.launch(spec).await,
        Err(RuntimeError::LabExists { .. })
    ));

    let mut empty = fixture("flat-lab.yaml");
    empty.spec.assets.containers.clear();
    let spec = LabSpec::new(ScenarioId::generate(), "t", empty);
    assert!(matches!(
        rt.launch(spec).await,
        Err(RuntimeError::EmptyTemplate)
    ));
    let mut bad_cap = fixture("flat-lab.yaml");
    bad_cap.spec.assets.containers[0].capabilities = vec!["SYS_ADMIN".into()];
    let spec = LabSpec::new(ScenarioId::generate(), "t", bad_cap);
    assert!(matches!(
        rt.launch(spec).await,
        Err(RuntimeError::CapabilityNotAllowed { .. })
    ));
}

#[tokio::test]
async fn launch_waits_for_the_configured_delay() {
    let rt = FakeRuntime::default();
    rt.set_launch_delay(Duration::from_millis(50));
    let t0 = Instant::now();
    let lab = launch(&rt, "flat-lab.yaml").await;
    assert!(t0.elapsed() >= Duration::from_millis(50));
    assert!(lab.timings.total >= Duration::from_millis(50));
    assert_eq!(lab.network_id, lab.scenario_id.network_id());
    assert_eq!(lab.plan.containers.len(), 2);
}

/// What a subscriber's stream yields when `container` of `scn` dies.
fn died(scn: &ScenarioId, container: &str) -> Option<RuntimeEvent> {
    Some(RuntimeEvent::Died {
        scenario_id: scn.to_string(),
        container: container.into(),
    })
}

#[tokio::test]
async fn a_killed_container_is_reported_to_matching_subscribers_only() {
    let (rt, scn) = launched("flat-lab.yaml").await;
    let mut all = rt.events(&[]).await.unwrap();
    let mut beta_only = rt.events(&["forge.container=beta".into()]).await.unwrap();
    rt.kill_container(&scn, "alpha");
    assert_eq!(all.next().await, died(&scn, "alpha"));
    assert_eq!(rt.state_of(&scn, "alpha"), Some(ContainerState::Exited));
    assert!(matches!(
        rt.exec(&scn, "alpha", ExecRequest::shell("true")).await,
        Err(RuntimeError::NotRunning { .. })
    ));
    rt.kill_container(&scn, "beta");
    assert_eq!(
        beta_only.next().await,
        died(&scn, "beta"),
        "the alpha death was filtered out"
    );
    rt.disconnect_events();
    assert_eq!(all.next().await.map(|_| ()), Some(()), "beta's death");
    assert_eq!(all.next().await, None, "a disconnect ends the stream");
}

#[tokio::test]
async fn a_lost_lab_is_gone_without_a_teardown() {
    let (rt, scn) = launched("flat-lab.yaml").await;
    rt.lose_lab(&scn);
    assert!(!rt.lab_alive(&scn).await);
    assert!(rt.list_labs().await.unwrap().is_empty());
    assert!(matches!(
        rt.exec(&scn, "alpha", ExecRequest::shell("true")).await,
        Err(RuntimeError::NoSuchContainer { .. })
    ));
}

#[tokio::test]
async fn revive_restarts_or_fails_on_demand() {
    let (rt, scn) = launched("flat-lab.yaml").await;
    rt.kill_container(&scn, "beta");
    rt.fail_revive(true);
    let err = rt.revive(&scn, "beta").await.unwrap_err();
    assert!(
        err.to_string().contains("cannot revive container beta"),
        "{err}"
    );
    rt.fail_revive(false);
    rt.revive(&scn, "beta").await.unwrap();
    let snap = rt.snapshot(&scn, "beta").await.unwrap();
    assert_eq!(
        (snap.state, snap.restart_count),
        (ContainerState::Running, 1)
    );
}

#[tokio::test]
async fn the_terminal_echoes_and_records_sizes() {
    let rt = FakeRuntime::default();
    let lab = launch(&rt, "flat-lab.yaml").await;
    let mut tty = rt.exec_tty(&lab.scenario_id, "alpha", None).await.unwrap();
    tty.resizer.resize(80, 24).await.unwrap();
    tty.resizer.resize(120, 40).await.unwrap();
    tty.input.write_all(b"ls\n").await.unwrap();
    assert_eq!(tty.output.next().await.unwrap().unwrap(), b"ls\n");
    drop(tty.input);
    assert!(
        tty.output.next().await.is_none(),
        "output ends with the input"
    );
    assert_eq!(rt.tty_sizes(), [(80, 24), (120, 40)]);
}

#[tokio::test]
async fn snapshot_and_list_follow_the_template() {
    let rt = FakeRuntime::default();
    let spec = LabSpec::new(
        ScenarioId::generate(),
        "tenant-a",
        fixture("netplus-lab.yaml"),
    )
    .with_label("forge.test_run", "r1")
    .with_label("forge.scenario_id", "spoofed");
    let scn = spec.scenario_id.clone();
    rt.clone().launch(spec).await.unwrap();
    let snap = rt.snapshot(&scn, "learner").await.unwrap();
    let mut caps = snap.capabilities.clone();
    caps.sort();
    assert_eq!(caps, ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(snap.memory_bytes, Some(384 * 1024 * 1024 / 3));
    assert_eq!(snap.pids_limit, Some(64));
    assert_eq!(snap.env["API_TOKEN"], forge_runtime::REDACTED);
    let labs = rt.list_labs().await.unwrap();
    assert_eq!(
        labs[0].labels["forge.scenario_id"],
        scn.as_str(),
        "ours win"
    );
    assert_eq!(labs[0].labels["forge.test_run"], "r1");
    assert_eq!(
        labs[0].containers[0].docker_name,
        forge_runtime::container_name(&scn, "learner")
    );
}

#[tokio::test]
async fn reconcile_removes_labs_nobody_owns() {
    let rt = FakeRuntime::default();
    let keep = launch(&rt, "flat-lab.yaml").await.scenario_id;
    let drop_me = launch(&rt, "flat-lab.yaml").await.scenario_id;
    let report = rt.reconcile(&|id: &str| id == keep.as_str()).await.unwrap();
    assert_eq!(report.removed, [drop_me.to_string()]);
    assert_eq!(report.kept, [keep.to_string()]);
    assert_eq!(rt.labs(), [keep]);
}

#[tokio::test]
async fn ping_fails_while_the_engine_is_down() {
    let rt = FakeRuntime::new();
    rt.ping().await.unwrap();
    rt.set_engine_down(true);
    let e = rt.ping().await.unwrap_err();
    assert!(matches!(e, RuntimeError::Backend(_)), "{e}");
    assert!(e.to_string().contains("engine is down"), "{e}");
    rt.set_engine_down(false);
    rt.ping().await.unwrap();
}
