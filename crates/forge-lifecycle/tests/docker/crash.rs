//! Crash recovery: the platform runs in a child process (this test binary re-executed into
//! `crash::platform_child`), gets SIGKILLed by its PID while one lab runs, another is being
//! created and a warm pool is full, and a platform restarted on the same data dir converges
//! within seconds: no orphan, and the pool refilled with new labs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use forge_http::Service;
use serde_json::{Value, json};

use crate::common::{self, Api, Cleanup, LEARNER_ROLES, TEST_RUN_LABEL};

const CHILD_DIR: &str = "FORGE_TEST_CRASH_CHILD_DIR";
const CHILD_RUN: &str = "FORGE_TEST_CRASH_CHILD_RUN";

/// Not a test of its own: the child process of the crash test. Without its environment
/// variables it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of crash_recovery_after_sigkill"]
async fn platform_child() {
    let (Ok(dir), Ok(run)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_RUN)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let platform = common::start(pooled_config(&dir.join("data"), &run))
        .await
        .expect("child platform starts");
    let info = json!({
        "spawn": platform.url(Service::Spawn),
        "orchestrator": platform.url(Service::Orchestrator),
        "worker": platform.url(Service::Worker),
        "scoreboard": platform.url(Service::Scoreboard),
        "token": platform.mint("demo", LEARNER_ROLES, "learner-1").unwrap(),
    });
    let tmp = dir.join("child.json.tmp");
    std::fs::write(&tmp, info.to_string()).unwrap();
    std::fs::rename(&tmp, dir.join("child.json")).unwrap();
    // Runs until SIGKILLed; exits by itself if the parent test process goes away first, or
    // after 10 minutes at the latest.
    let parent = std::os::unix::process::parent_id();
    let start = Instant::now();
    while std::os::unix::process::parent_id() == parent
        && start.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The run's configuration with a warm pool of one lab of the CISSP default template (the
/// track the spawns below do not use).
fn pooled_config(data_dir: &Path, run: &str) -> forge_lifecycle::platform::PlatformConfig {
    let mut cfg = common::config(data_dir, run);
    let catalog = forge_catalog::Catalog::bundled().unwrap();
    let pooled = catalog.default_for(forge_core::Track::Cissp).unwrap();
    cfg.orchestrator
        .pools
        .insert(pooled.template.metadata.name.clone(), 1);
    cfg
}

/// Scenario ids of the run's warm labs on the engine (containers labelled `forge.pool`).
fn pool_labs(run: &str) -> std::collections::BTreeSet<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={TEST_RUN_LABEL}={run}"),
            "--filter",
            "label=forge.pool",
            "--format",
            "{{.Label \"forge.scenario_id\"}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until the run has a warm lab other than `not`, whose containers all run.
fn wait_pool_lab(run: &str, not: Option<&str>) -> String {
    let start = Instant::now();
    loop {
        let fresh = pool_labs(run)
            .into_iter()
            .find(|id| Some(id.as_str()) != not && !common::running_containers_of(id).is_empty());
        if let Some(id) = fresh
            && common::running_containers_of(&id).len() == common::containers_of(&id).len()
        {
            return id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no warm lab within 120s: {:?}",
            pool_labs(run)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Kills the child with SIGKILL when dropped (also on a failed assertion).
struct ChildGuard(Child);

impl ChildGuard {
    fn sigkill(&mut self) {
        // `Child::kill` is SIGKILL on Unix, addressed by this child's PID only.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn start_child(dir: &Path, run: &str) -> (ChildGuard, Api) {
    let exe = std::env::current_exe().expect("test executable");
    let child = Command::new(exe)
        .args([
            "crash::platform_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_RUN, run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts");
    let mut guard = ChildGuard(child);
    let info_path = dir.join("child.json");
    let start = Instant::now();
    let info: Value = loop {
        if let Ok(text) = std::fs::read_to_string(&info_path) {
            break serde_json::from_str(&text).expect("child info");
        }
        if let Ok(Some(status)) = guard.0.try_wait() {
            panic!("child platform exited early: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child platform did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let s = |k: &str| info[k].as_str().unwrap().to_owned();
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        spawn: s("spawn"),
        orchestrator: s("orchestrator"),
        worker: s("worker"),
        scoreboard: s("scoreboard"),
        token: s("token"),
    };
    (guard, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_recovery_after_sigkill() {
    let run = common::new_run_id();
    let cleanup = Cleanup::new(&run);
    let dir = tempfile::tempdir().expect("tempdir");

    let (mut child, api) = start_child(dir.path(), &run);
    let warm = wait_pool_lab(&run, None);
    let a = api.spawn_track("netplus").await;
    cleanup.saw(&a);
    api.wait_for(&a, &["running"], Duration::from_secs(120))
        .await;
    let b = api.spawn_track("ccna").await;
    cleanup.saw(&b);
    // Catch B while its lab is being built.
    let start = Instant::now();
    let mut b_at_kill = String::new();
    while start.elapsed() < Duration::from_secs(30) {
        b_at_kill = api.status(&b).await;
        if b_at_kill != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.sigkill();
    eprintln!("killed the platform with B {b_at_kill}");
    // Let requests the engine already accepted land, as they would during a real restart.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let restarted = Instant::now();
    let platform = common::start(pooled_config(&dir.path().join("data"), &run))
        .await
        .expect("platform restarts");
    let recovery = restarted.elapsed();
    eprintln!("recovered in {recovery:?}: {:?}", platform.recovered);
    assert!(
        recovery < Duration::from_secs(15),
        "recovery took {recovery:?}"
    );
    let api = api.with_token(platform.mint("demo", LEARNER_ROLES, "learner-1").unwrap());
    let api = Api {
        spawn: platform.url(Service::Spawn),
        orchestrator: platform.url(Service::Orchestrator),
        worker: platform.url(Service::Worker),
        scoreboard: platform.url(Service::Scoreboard),
        ..api
    };
    if b_at_kill == "creating" {
        assert!(
            platform.recovered.failed_creating.contains(&b),
            "{:?}",
            platform.recovered
        );
    }

    // Consistent: running with the whole lab, or failed with a reason; nothing in between.
    for id in [&a, &b] {
        let (code, v) = api.scenario(id).await;
        assert_eq!(code, 200, "{v}");
        match v["status"].as_str().unwrap() {
            "running" => {
                let want = v["containers"].as_array().unwrap().len();
                assert!(want > 0, "{v}");
                assert_eq!(
                    common::running_containers_of(id).len(),
                    want,
                    "lab of {id} not whole: {v}"
                );
                assert!(common::netns_exists(&common::namespace_of(id)), "{v}");
                let c = api.check(id).await;
                assert!(c["total"].as_u64().unwrap() > 0, "{c}");
            }
            "failed" => {
                let why = v["error"].as_str().unwrap_or_default();
                assert!(!why.is_empty(), "failed without a reason: {v}");
                common::assert_no_lab(id);
            }
            other => panic!("{id} is {other} after recovery: {v}"),
        }
    }
    assert_eq!(
        api.status(&a).await,
        "running",
        "A's lab survived the crash"
    );
    if b_at_kill == "creating" {
        let (_, v) = api.scenario(&b).await;
        assert_eq!(v["status"], "failed", "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap_or_default()
                .contains("restarted"),
            "{v}"
        );
    }

    // The full pool's lab was removed and the pool refilled with a new one.
    assert!(
        platform.recovered.pool_labs_removed.contains(&warm)
            || platform.recovered.orphans_removed.contains(&warm),
        "{:?}",
        platform.recovered
    );
    common::assert_no_lab(&warm);
    let refilled = wait_pool_lab(&run, Some(&warm));
    eprintln!("pool refilled with {refilled}");

    // No orphan: every container of the run belongs to a running scenario or the pool.
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={TEST_RUN_LABEL}={run}"),
            "--format",
            "{{.Label \"forge.scenario_id\"}}",
        ])
        .output()
        .unwrap();
    let owners = String::from_utf8_lossy(&out.stdout).to_string();
    let pooled = pool_labs(&run);
    assert_eq!(pooled.len(), 1, "one warm lab: {pooled:?}");
    for owner in owners.lines().filter(|o| !pooled.contains(*o)) {
        assert_eq!(
            api.status(owner).await,
            "running",
            "orphan container of {owner}"
        );
    }

    // The kept lab still ends normally.
    assert_eq!(api.delete(&a).await, 200);
    let (_, v) = api.scenario(&a).await;
    assert_eq!(v["status"], "failed", "{v}");
    common::assert_no_lab(&a);
    common::assert_no_lab(&b);

    platform.shutdown().await;
    cleanup.sweep();
}
