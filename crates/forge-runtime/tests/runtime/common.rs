//! Shared test plumbing: one run id per test process (in every label and namespace name the
//! tests create), a connected runtime with images built once, fixtures, and guards that tear
//! labs and namespaces down even when an assertion fails.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use forge_core::ScenarioId;
use forge_core::template::ScenarioTemplate;
use forge_runtime::{
    DockerRuntime, ExecRequest, ExecResult, ImageCatalog, LabHandle, LabSpec, Runtime,
};
pub use forge_testkit::cmd::run;
use forge_testkit::sweep;

pub use crate::shared::fixture;

pub const TEST_RUN_LABEL: &str = "forge.test_run";

/// 6 hex digits shared by everything this test process creates.
pub fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..6].to_owned())
}

/// A scenario id whose hex starts with the run id, so fabric namespaces
/// (`forge_scn_<hex>`) carry the run id too.
pub fn scenario_id() -> ScenarioId {
    let tail = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("scn-{}{tail}", run_id())
        .parse()
        .expect("valid scenario id")
}

/// Connected runtime; the first caller builds the lab images (once per process).
pub async fn runtime() -> DockerRuntime {
    static IMAGES: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let rt = DockerRuntime::connect()
        .await
        .expect("docker engine reachable");
    IMAGES
        .get_or_init(|| async {
            let rt = DockerRuntime::connect().await.expect("docker");
            let refs = [
                "forge/learner:1",
                "forge/router:1",
                "forge/web:1",
                "forge/server:1",
            ];
            let catalog = ImageCatalog::discover(None).expect("image catalog");
            rt.ensure_images(&catalog, &refs, false)
                .await
                .expect("images build");
        })
        .await;
    rt
}

pub fn spec(t: &ScenarioTemplate) -> LabSpec {
    let mut labels = BTreeMap::new();
    labels.insert(TEST_RUN_LABEL.to_owned(), run_id().to_owned());
    // A lab host of its own: a platform running on this machine at the same time reaps labs
    // of no host as its leftovers, and must never take a test's labs for them.
    labels.insert("forge.host".to_owned(), format!("test-{}", run_id()));
    LabSpec {
        scenario_id: scenario_id(),
        tenant_id: "tenant-test".into(),
        template: t.clone(),
        labels,
    }
}

/// Tears the lab down on drop (on a fresh thread with its own runtime, so it works while a
/// test panics). Call [`LabGuard::close`] for the explicit, checked teardown.
pub struct LabGuard {
    pub scenario: ScenarioId,
    armed: bool,
}

impl LabGuard {
    pub fn new(scenario: &ScenarioId) -> Self {
        Self {
            scenario: scenario.clone(),
            armed: true,
        }
    }

    pub async fn close(mut self, rt: &DockerRuntime) {
        self.armed = false;
        rt.teardown(&self.scenario).await.expect("teardown");
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if self.armed {
            sweep::teardown_labs(None, [self.scenario.to_string()]);
        }
    }
}

/// Launches `t` and returns the handle and its guard.
pub async fn launch(rt: &DockerRuntime, t: &ScenarioTemplate) -> (LabHandle, LabGuard) {
    launch_spec(rt, spec(t)).await
}

/// Label narrowing a supervisor to one test's labs (tests run concurrently in one process).
pub const TEST_CASE_LABEL: &str = "forge.test_case";

/// Launches `t` with an extra `forge.test_case=<case>` label.
pub async fn launch_case(
    rt: &DockerRuntime,
    t: &ScenarioTemplate,
    case: &str,
) -> (LabHandle, LabGuard) {
    launch_spec(rt, spec(t).with_label(TEST_CASE_LABEL, case)).await
}

async fn launch_spec(rt: &DockerRuntime, spec: LabSpec) -> (LabHandle, LabGuard) {
    let guard = LabGuard::new(&spec.scenario_id);
    let handle = rt.launch(spec).await.expect("launch");
    (handle, guard)
}

pub async fn sh(rt: &DockerRuntime, scn: &ScenarioId, container: &str, cmd: &str) -> ExecResult {
    let req = ExecRequest::shell(cmd).timeout(Duration::from_secs(15));
    rt.exec(scn, container, req)
        .await
        .unwrap_or_else(|e| panic!("exec `{cmd}` in {container}: {e}"))
}

/// Asserts that `cmd` in `container` prints `needle` (on stdout).
pub async fn assert_prints(
    rt: &DockerRuntime,
    scn: &ScenarioId,
    container: &str,
    cmd: &str,
    needle: &str,
) {
    let out = sh(rt, scn, container, cmd).await.stdout;
    assert!(
        out.contains(needle),
        "`{cmd}` in {container} printed {out:?}, without {needle:?}"
    );
}

/// A test-only network namespace `forge_t_<run id><suffix>`, removed on drop.
pub struct TestNs {
    pub name: String,
}

impl TestNs {
    pub fn create(suffix: &str) -> Self {
        let name = format!("forge_t_{}{suffix}", run_id());
        run(&["ip", "netns", "add", &name]);
        Self { name }
    }

    /// Runs `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run(&full);
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `docker inspect` through the CLI: an independent view of what the engine applied.
pub fn docker_inspect(name: &str) -> serde_json::Value {
    let out = run(&["docker", "inspect", name]);
    let mut v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
    v[0].take()
}

/// Leftovers of one lab.
pub fn lab_leftovers(scn: &ScenarioId) -> (Vec<String>, bool) {
    let filter = format!("label=forge.scenario_id={scn}");
    let names = run(&[
        "docker",
        "ps",
        "-a",
        "--filter",
        &filter,
        "--format",
        "{{.Names}}",
    ]);
    let names: Vec<String> = names.lines().map(str::to_owned).collect();
    (
        names,
        std::path::Path::new("/run/netns")
            .join(scn.network_id())
            .exists(),
    )
}
