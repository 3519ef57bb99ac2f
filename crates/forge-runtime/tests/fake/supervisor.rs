//! The supervisor through the trait, on the fake: a death is revived (`Restarted`), an
//! unrecoverable one fails the lab (`Failed`), crash loops are cut short, deaths before it
//! started or across an event-stream reconnect are still seen, and counters are kept.

use std::sync::Arc;
use std::time::Duration;

use forge_runtime::fake::FakeRuntime;
use forge_runtime::{ContainerState, LabEvent, Supervisor, SupervisorConfig};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use crate::common::{launch, launched};
use crate::shared::counted;

fn config() -> SupervisorConfig {
    SupervisorConfig {
        backoff: Duration::from_millis(5),
        ..Default::default()
    }
}

/// Stops the supervisor task when the test ends, also on a panic.
struct Running(JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start(rt: &FakeRuntime, cfg: SupervisorConfig) -> (Running, UnboundedReceiver<LabEvent>) {
    counted("forge_container_restarts_total"); // install the recorder before anything records
    let (sup, events) = Supervisor::new(Arc::new(rt.clone()), cfg);
    (Running(sup.spawn()), events)
}

async fn next(events: &mut UnboundedReceiver<LabEvent>) -> LabEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("a supervisor event")
        .expect("the supervisor is running")
}

/// Waits until the supervisor has subscribed (its first scan happens right after).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_is_revived() {
    let (rt, scn) = launched("netplus-lab.yaml").await;
    let (_sup, mut events) = start(&rt, config());
    settle().await;
    rt.kill_container(&scn, "web");
    assert_eq!(
        next(&mut events).await,
        LabEvent::Restarted {
            scenario_id: scn.to_string(),
            container: "web".into(),
            attempt: 1
        }
    );
    assert_eq!(rt.state_of(&scn, "web"), Some(ContainerState::Running));
    assert!(counted("forge_container_restarts_total") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrevivable_container_fails_the_lab() {
    let (rt, scn) = launched("flat-lab.yaml").await;
    rt.fail_revive(true);
    let (_sup, mut events) = start(&rt, config());
    settle().await;
    rt.kill_container(&scn, "beta");
    match next(&mut events).await {
        LabEvent::Failed {
            scenario_id,
            container,
            reason,
        } => {
            assert_eq!(
                (scenario_id.as_str(), container.as_str()),
                (scn.as_str(), "beta")
            );
            assert!(
                reason.contains("could not be restarted after 3 attempts")
                    && reason.contains("injected failure"),
                "{reason}"
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(counted("forge_lab_failures_total") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_fails_the_lab() {
    let (rt, scn) = launched("flat-lab.yaml").await;
    let cfg = SupervisorConfig {
        max_restarts: 1,
        ..config()
    };
    let (_sup, mut events) = start(&rt, cfg);
    settle().await;
    rt.kill_container(&scn, "alpha");
    assert!(matches!(
        next(&mut events).await,
        LabEvent::Restarted { .. }
    ));
    rt.kill_container(&scn, "alpha");
    match next(&mut events).await {
        LabEvent::Failed { reason, .. } => assert!(reason.contains("crash-looped"), "{reason}"),
        other => panic!("expected a crash loop, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deaths_before_start_and_across_a_reconnect_are_recovered() {
    let (rt, scn) = launched("flat-lab.yaml").await;
    // Died while nobody was watching: the start-up scan finds it.
    rt.kill_container(&scn, "alpha");
    let (_sup, mut events) = start(&rt, config());
    assert!(matches!(
        next(&mut events).await,
        LabEvent::Restarted { container, .. } if container == "alpha"
    ));
    // The engine connection drops and a container dies before the supervisor is back.
    rt.disconnect_events();
    rt.kill_container(&scn, "beta");
    assert!(matches!(
        next(&mut events).await,
        LabEvent::Restarted { container, .. } if container == "beta"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labs_outside_the_filters_are_left_alone() {
    let rt = FakeRuntime::default();
    let mine = launch(&rt, "flat-lab.yaml").await.scenario_id;
    let theirs = launch(&rt, "flat-lab.yaml").await.scenario_id;
    let cfg = SupervisorConfig {
        label_filters: vec![format!("forge.scenario_id={mine}")],
        ..config()
    };
    let (_sup, mut events) = start(&rt, cfg);
    settle().await;
    rt.kill_container(&theirs, "alpha");
    rt.kill_container(&mine, "alpha");
    assert!(matches!(
        next(&mut events).await,
        LabEvent::Restarted { scenario_id, .. } if scenario_id == mine.as_str()
    ));
    assert_eq!(rt.state_of(&theirs, "alpha"), Some(ContainerState::Exited));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_that_goes_away_during_recovery_is_not_failed() {
    let (rt, scn) = launched("flat-lab.yaml").await;
    rt.fail_revive(true);
    let cfg = SupervisorConfig {
        backoff: Duration::from_millis(200),
        ..config()
    };
    let (_sup, mut events) = start(&rt, cfg);
    settle().await;
    rt.kill_container(&scn, "beta");
    // The first attempt fails at once; the lab is torn down during the backoff that follows.
    tokio::time::sleep(Duration::from_millis(100)).await;
    rt.lose_lab(&scn);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), events.recv())
            .await
            .is_err(),
        "a lab torn down meanwhile is neither restarted nor failed"
    );
}
