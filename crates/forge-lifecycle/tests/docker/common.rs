//! Shared plumbing of the life-cycle tests: a platform per test (ephemeral ports, tempdir data
//! dir, labs labelled with the test's run id, supervisor narrowed to them), an HTTP client, and a
//! guard that removes every container and namespace of the run even when an assertion fails.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use forge_lifecycle::platform::{Backends, Platform, PlatformConfig, Ports};
use forge_testkit::sweep;

pub const TEST_RUN_LABEL: &str = "forge.test_run";
pub use crate::api::{Api, LEARNER_ROLES, verify};

/// A fresh run id (one per test).
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Starts the platform `forge up` runs (embedded backends on the local Docker Engine).
pub async fn start(cfg: PlatformConfig) -> anyhow::Result<Platform> {
    let backends = Backends::embedded(&cfg).await?;
    Platform::start(cfg, backends).await
}

/// Platform config for one test run.
pub fn config(data_dir: &Path, run: &str) -> PlatformConfig {
    let mut cfg = PlatformConfig::new(data_dir.to_path_buf());
    cfg.ports = Ports::ephemeral();
    cfg.orchestrator
        .labels
        .insert(TEST_RUN_LABEL.to_owned(), run.to_owned());
    cfg.supervisor.label_filters = vec![format!("{TEST_RUN_LABEL}={run}")];
    cfg
}

/// Removes every lab of the run on drop: teardown of every scenario seen, then a sweep of
/// containers and namespaces carrying the run label. The teardown runs on its own thread and
/// runtime ([`sweep::teardown_labs`]), so it works while a test panics.
pub struct Cleanup {
    pub run: String,
    seen: Arc<Mutex<BTreeSet<String>>>,
}

impl Cleanup {
    pub fn new(run: &str) -> Self {
        Self {
            run: run.to_owned(),
            seen: Arc::default(),
        }
    }

    pub fn saw(&self, id: &str) {
        self.seen.lock().unwrap().insert(id.to_owned());
    }

    pub fn sweep(&self) {
        let seen: Vec<String> = self.seen.lock().unwrap().iter().cloned().collect();
        sweep::teardown_labs(Some((TEST_RUN_LABEL, &self.run)), seen);
        // Belt and braces: anything still carrying the label.
        sweep::remove_labelled_containers(&format!("{TEST_RUN_LABEL}={}", self.run));
        // Namespaces of the scenarios we saw (teardown removes them; this catches stragglers).
        for id in self.seen.lock().unwrap().iter() {
            let ns = namespace_of(id);
            if netns_exists(&ns) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "delete", &ns])
                    .output();
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.sweep();
    }
}

/// `scn-<hex>` → `forge_scn_<hex>`.
pub fn namespace_of(id: &str) -> String {
    format!("forge_scn_{}", id.trim_start_matches("scn-"))
}

pub fn netns_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        })
        .unwrap_or(false)
}

/// Containers (any state) labelled with the scenario id.
pub fn containers_of(id: &str) -> Vec<String> {
    lab_ps(id, "-aq")
}

/// Running containers labelled with the scenario id.
pub fn running_containers_of(id: &str) -> Vec<String> {
    lab_ps(id, "-q")
}

/// `docker ps <flags>` of the scenario's containers.
fn lab_ps(id: &str, flags: &str) -> Vec<String> {
    let filter = format!("label=forge.scenario_id={id}");
    sweep::docker_ids(&["ps", flags, "--filter", &filter]).expect("docker ps")
}

pub fn assert_no_lab(id: &str) {
    assert!(
        containers_of(id).is_empty(),
        "containers of {id} remain: {:?}",
        containers_of(id)
    );
    assert!(
        !netns_exists(&namespace_of(id)),
        "namespace of {id} remains"
    );
}
