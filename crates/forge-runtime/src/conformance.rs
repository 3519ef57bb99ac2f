//! The behaviour every [`Runtime`] backend must have, as async checks that panic on the first
//! deviation. Run them all against a backend with [`crate::runtime_conformance`]:
//!
//! ```ignore
//! forge_runtime::runtime_conformance!({
//!     let fake = forge_runtime::fake::FakeRuntime::default();
//!     (fake.clone(), MyHarness::new(fake))
//! });
//! ```
//!
//! The expression is evaluated inside each generated `#[tokio::test]` (so it may `.await`) and
//! must give `(runtime, harness)`: a value of a type implementing [`Runtime`] and one
//! implementing [`ConformanceHarness`], which arranges what only a test can (files in a lab, a
//! crash) and may clean up on drop. The calling crate needs `tokio` with the `macros` and
//! `rt-multi-thread` features.
//!
//! Exec checks use commands whose output on a real shell is known (`echo hello` → `hello\n`,
//! `exit 3` → exit code 3); a backend that runs nothing (the fake) scripts the same answers.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use forge_core::ScenarioId;
use forge_core::template::ScenarioTemplate;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::{
    ContainerState, ExecRequest, LabHandle, LabSpec, REDACTED, Runtime, RuntimeError, RuntimeEvent,
    labels,
};

/// What only a test can arrange on a backend.
#[async_trait]
pub trait ConformanceHarness: Send + Sync {
    /// The lab every check launches: at least one container, from an image with a POSIX shell
    /// (`echo`, `exit`, `cat`) and writable `/tmp`.
    fn template(&self) -> ScenarioTemplate;

    /// A fresh scenario id for one lab (a Docker harness puts its run id in it).
    fn scenario_id(&self) -> ScenarioId {
        ScenarioId::generate()
    }

    /// Labels put on every lab the checks launch; also, as `key=value`, the `events` filter.
    fn labels(&self) -> BTreeMap<String, String>;

    /// Writes `bytes` to `path` (under `/tmp`) in a running lab container. By default through
    /// the runtime's own exec, which suits every backend that really runs commands; a backend
    /// that runs nothing (the fake) puts the file in place itself.
    async fn put_file(
        &self,
        rt: &dyn Runtime,
        scenario: &ScenarioId,
        container: &str,
        path: &str,
        bytes: &[u8],
    ) {
        // The path travels as an argument, the content on stdin: nothing is quoted.
        let req = ExecRequest::argv(["/bin/sh", "-c", "cat > \"$0\"", path]).stdin(bytes.to_vec());
        let r = rt.exec(scenario, container, req).await.expect("put file");
        assert_eq!(r.exit_code, 0, "writing {path}: {r:?}");
    }

    /// Makes a lab container die from outside the runtime, as a crash would.
    async fn crash(&self, rt: &dyn Runtime, scenario: &ScenarioId, container: &str);
}

/// Generates one `#[tokio::test]` per conformance check for the backend made by `$make`.
#[macro_export]
macro_rules! runtime_conformance {
    ($make:expr) => {
        $crate::runtime_conformance!(@cases $make;
            launch_lists_the_lab_running,
            exec_reports_stdout_and_exit_code,
            exec_in_an_unknown_container_or_lab_fails,
            read_file_reads_truncates_and_reports_missing_files,
            snapshot_is_typed_and_redacted,
            terminal_round_trips_and_resizes,
            container_state_follows_the_container,
            teardown_removes_the_lab_and_is_idempotent,
            a_death_is_reported_and_revive_restores_the_container,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (runtime, harness) = $make;
                $crate::conformance::$case(&runtime, &harness).await;
            }
        )*
    };
}

/// Tenant of every lab the checks launch.
pub const TENANT: &str = "tenant-conformance";
/// Environment variable the checks add to the first container; its value must never show.
pub const SECRET_KEY: &str = "FORGE_CONFORMANCE_SECRET";
const SECRET_VALUE: &str = "conformance-s3cr3t";
/// How long a death may take to be reported.
const EVENT_WAIT: Duration = Duration::from_secs(30);

struct Lab {
    scenario: ScenarioId,
    handle: LabHandle,
    /// Template container names, in template order.
    names: Vec<String>,
    template: ScenarioTemplate,
}

impl Lab {
    fn first(&self) -> &str {
        &self.names[0]
    }
}

async fn launch(rt: &dyn Runtime, h: &dyn ConformanceHarness) -> Lab {
    let mut template = h.template();
    assert!(
        !template.spec.assets.containers.is_empty(),
        "the harness template needs a container"
    );
    template.spec.assets.containers[0]
        .environment
        .insert(SECRET_KEY.to_owned(), SECRET_VALUE.to_owned());
    let scenario = h.scenario_id();
    let mut spec = LabSpec::new(scenario.clone(), TENANT, template.clone());
    spec.labels = h.labels();
    let handle = rt.launch(spec).await.expect("launch");
    let names = template
        .spec
        .assets
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    Lab {
        scenario,
        handle,
        names,
        template,
    }
}

async fn teardown(rt: &dyn Runtime, lab: &Lab) {
    rt.teardown(&lab.scenario).await.expect("teardown");
}

fn assert_no_such<T: std::fmt::Debug>(r: Result<T, RuntimeError>, what: &str) {
    match r {
        Err(RuntimeError::NoSuchContainer { .. }) => {}
        other => panic!("{what}: expected NoSuchContainer, got {other:?}"),
    }
}

pub async fn launch_lists_the_lab_running(rt: &dyn Runtime, h: &dyn ConformanceHarness) {
    let lab = launch(rt, h).await;
    let scn = &lab.scenario;
    assert_eq!(&lab.handle.scenario_id, scn);
    assert_eq!(lab.handle.network_id, scn.network_id());
    let mut names = lab.names.clone();
    names.sort();
    assert_eq!(
        lab.handle.containers.keys().cloned().collect::<Vec<_>>(),
        names,
        "the handle names every container"
    );
    assert_eq!(lab.handle.plan.containers.len(), names.len());

    let labs = rt.list_labs().await.expect("list_labs");
    let me = labs
        .iter()
        .find(|l| l.scenario_id == scn.as_str())
        .expect("list_labs shows the launched lab");
    assert!(me.namespace_exists, "{me:?}");
    assert_eq!(me.network_id, scn.network_id());
    assert_eq!(me.tenant_id.as_deref(), Some(TENANT));
    assert_eq!(
        me.template.as_deref(),
        Some(lab.template.metadata.name.as_str())
    );
    assert!(me.created_at.is_some());
    let listed: Vec<&str> = me.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(listed, names, "containers sorted by name");
    assert!(
        me.containers
            .iter()
            .all(|c| c.state == ContainerState::Running),
        "every container running: {:?}",
        me.containers
    );
    assert_eq!(me.labels[labels::SCENARIO_ID], scn.as_str());
    for (k, v) in h.labels() {
        assert_eq!(me.labels.get(&k), Some(&v), "label {k}");
    }
    teardown(rt, &lab).await;
}

pub async fn exec_reports_stdout_and_exit_code(rt: &dyn Runtime, h: &dyn ConformanceHarness) {
    let lab = launch(rt, h).await;
    let r = rt
        .exec(&lab.scenario, lab.first(), ExecRequest::shell("echo hello"))
        .await
        .expect("exec");
    assert_eq!(
        (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "hello\n", "")
    );
    assert!(!r.timed_out && !r.truncated, "{r:?}");
    let r = rt
        .exec(&lab.scenario, lab.first(), ExecRequest::shell("exit 3"))
        .await
        .expect("exec");
    assert_eq!(r.exit_code, 3, "{r:?}");
    teardown(rt, &lab).await;
}

pub async fn exec_in_an_unknown_container_or_lab_fails(
    rt: &dyn Runtime,
    h: &dyn ConformanceHarness,
) {
    let lab = launch(rt, h).await;
    let r = rt
        .exec(&lab.scenario, "nosuch", ExecRequest::shell("true"))
        .await;
    assert_no_such(r, "exec in an unknown container");
    let r = rt
        .exec(&h.scenario_id(), lab.first(), ExecRequest::shell("true"))
        .await;
    assert_no_such(r, "exec in an unknown lab");
    teardown(rt, &lab).await;
}

pub async fn read_file_reads_truncates_and_reports_missing_files(
    rt: &dyn Runtime,
    h: &dyn ConformanceHarness,
) {
    let lab = launch(rt, h).await;
    let (scn, c) = (&lab.scenario, lab.first());
    let path = "/tmp/forge-conformance.txt";
    h.put_file(rt, scn, c, path, b"0123456789").await;

    let f = rt.read_file(scn, c, path, 64).await.expect("read_file");
    assert_eq!(
        (f.path.as_str(), f.bytes.as_slice(), f.size, f.truncated),
        (path, &b"0123456789"[..], 10, false)
    );
    let f = rt.read_file(scn, c, path, 4).await.expect("capped read");
    assert_eq!(
        (f.bytes.as_slice(), f.size, f.truncated),
        (&b"0123"[..], 10, true)
    );

    match rt
        .read_file(scn, c, "/tmp/forge-conformance-none", 64)
        .await
    {
        Err(RuntimeError::FileNotFound {
            container,
            path: missing,
        }) => assert_eq!(
            (container.as_str(), missing.as_str()),
            (c, "/tmp/forge-conformance-none")
        ),
        other => panic!("a missing file is FileNotFound, got {other:?}"),
    }
    assert!(matches!(
        rt.read_file(scn, c, "tmp/relative", 64).await,
        Err(RuntimeError::Invalid(_))
    ));
    assert_no_such(
        rt.read_file(scn, "nosuch", path, 64).await,
        "read_file in an unknown container",
    );
    teardown(rt, &lab).await;
}

pub async fn snapshot_is_typed_and_redacted(rt: &dyn Runtime, h: &dyn ConformanceHarness) {
    let lab = launch(rt, h).await;
    let (scn, c) = (&lab.scenario, lab.first());
    let snap = rt.snapshot(scn, c).await.expect("snapshot");
    assert_eq!(snap.container, c);
    assert_eq!(snap.image, lab.template.spec.assets.containers[0].image);
    assert_eq!(snap.state, ContainerState::Running);
    assert!(snap.state.is_running());
    assert_eq!(snap.exit_code, None, "a running container has no exit code");
    assert!(snap.started_at.is_some());
    assert!(snap.read_only_root, "lab roots are read-only");
    assert_eq!(snap.env.get(SECRET_KEY).map(String::as_str), Some(REDACTED));
    assert!(
        snap.env.values().all(|v| v == REDACTED),
        "every env value redacted: {:?}",
        snap.env
    );
    let json = serde_json::to_string(&snap).expect("snapshot serializes");
    assert!(!json.contains(SECRET_VALUE), "{json}");
    assert_eq!(snap.labels[labels::SCENARIO_ID], scn.as_str());
    assert_eq!(snap.labels[labels::CONTAINER], c);
    assert_no_such(
        rt.snapshot(scn, "nosuch").await,
        "snapshot of an unknown container",
    );
    teardown(rt, &lab).await;
}

pub async fn terminal_round_trips_and_resizes(rt: &dyn Runtime, h: &dyn ConformanceHarness) {
    let lab = launch(rt, h).await;
    let mut tty = rt
        .exec_tty(&lab.scenario, lab.first(), None)
        .await
        .expect("exec_tty");
    tty.resizer.resize(100, 30).await.expect("resize");
    tty.input.write_all(b"echo hi\n").await.expect("write");
    tty.input.flush().await.expect("flush");
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("hi") {
        match tokio::time::timeout_at(deadline, tty.output.next()).await {
            Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("terminal output ended before `hi` ({other:?}): {seen:?}"),
        }
    }
    drop(tty);
    assert_no_such(
        rt.exec_tty(&lab.scenario, "nosuch", None).await.map(|_| ()),
        "terminal in an unknown container",
    );
    teardown(rt, &lab).await;
}

pub async fn container_state_follows_the_container(rt: &dyn Runtime, h: &dyn ConformanceHarness) {
    let lab = launch(rt, h).await;
    for name in &lab.names {
        assert_eq!(
            rt.container_state(&lab.scenario, name)
                .await
                .expect("state"),
            ContainerState::Running,
            "{name}"
        );
    }
    assert_no_such(
        rt.container_state(&lab.scenario, "nosuch").await,
        "state of an unknown container",
    );
    teardown(rt, &lab).await;
    assert_no_such(
        rt.container_state(&lab.scenario, lab.first()).await,
        "state after teardown",
    );
}

pub async fn teardown_removes_the_lab_and_is_idempotent(
    rt: &dyn Runtime,
    h: &dyn ConformanceHarness,
) {
    assert!(
        !rt.lab_alive(&h.scenario_id()).await,
        "an unknown lab is not alive"
    );
    let lab = launch(rt, h).await;
    let scn = &lab.scenario;
    assert!(rt.lab_alive(scn).await, "a launched lab is alive");
    let first = rt.teardown(scn).await.expect("teardown");
    assert_eq!(
        (first.containers_removed, first.namespace_removed),
        (lab.names.len(), true)
    );
    assert!(!rt.lab_alive(scn).await, "a torn-down lab is not alive");
    let labs = rt.list_labs().await.expect("list_labs");
    assert!(
        labs.iter().all(|l| l.scenario_id != scn.as_str()),
        "list_labs no longer shows it"
    );
    let again = rt.teardown(scn).await.expect("second teardown");
    assert_eq!(
        (again.containers_removed, again.namespace_removed),
        (0, false)
    );
    assert_no_such(
        rt.exec(scn, lab.first(), ExecRequest::shell("true")).await,
        "exec after teardown",
    );
}

pub async fn a_death_is_reported_and_revive_restores_the_container(
    rt: &dyn Runtime,
    h: &dyn ConformanceHarness,
) {
    let filters: Vec<String> = h.labels().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let lab = launch(rt, h).await;
    let (scn, c) = (&lab.scenario, lab.first());
    let mut events = rt.events(&filters).await.expect("events");
    h.crash(rt, scn, c).await;
    let want = RuntimeEvent::Died {
        scenario_id: scn.to_string(),
        container: c.to_owned(),
    };
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(ev)) if ev == want => break,
            Ok(Some(_)) => continue,
            other => panic!("no death of {c} reported ({other:?})"),
        }
    }
    let state = rt.container_state(scn, c).await.expect("state");
    assert!(
        matches!(state, ContainerState::Exited | ContainerState::Dead),
        "{state:?}"
    );
    let stopped = rt.stopped_containers(&filters).await.expect("stopped");
    assert!(
        stopped
            .iter()
            .any(|s| s.scenario_id == scn.as_str() && s.container == c),
        "{stopped:?}"
    );
    assert!(rt.lab_alive(scn).await, "a death does not end the lab");

    rt.revive(scn, c).await.expect("revive");
    assert_eq!(
        rt.container_state(scn, c).await.expect("state"),
        ContainerState::Running
    );
    let r = rt
        .exec(scn, c, ExecRequest::shell("echo hello"))
        .await
        .expect("exec after revive");
    assert_eq!(r.stdout, "hello\n");

    rt.kill(scn, c).await.expect("kill");
    assert_ne!(
        rt.container_state(scn, c).await.expect("state"),
        ContainerState::Running
    );
    rt.kill(scn, c)
        .await
        .expect("killing a stopped container is fine");
    teardown(rt, &lab).await;
}
