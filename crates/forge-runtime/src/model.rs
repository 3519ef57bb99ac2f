//! The plain data the [`crate::Runtime`] trait speaks: what to launch, what a launch gave,
//! exec requests and results, files, and what `list_labs` / `teardown` / `reconcile` report.
//! Nothing here names an engine.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use forge_core::ScenarioId;
use forge_core::template::{LabPlan, ScenarioTemplate};
use serde::{Deserialize, Serialize};

use crate::ContainerState;

/// What to launch.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub scenario_id: ScenarioId,
    pub tenant_id: String,
    pub template: ScenarioTemplate,
    /// Extra container labels (e.g. `forge.test_run`); cannot override the runtime's own.
    pub labels: BTreeMap<String, String>,
}

impl LabSpec {
    pub fn new(scenario_id: ScenarioId, tenant_id: impl Into<String>, t: ScenarioTemplate) -> Self {
        Self {
            scenario_id,
            tenant_id: tenant_id.into(),
            template: t,
            labels: BTreeMap::new(),
        }
    }

    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// A launched, ready lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabHandle {
    pub scenario_id: ScenarioId,
    /// The fabric namespace's name, `forge_scn_<12hex>`.
    pub network_id: String,
    /// Template container name → the backend's container id.
    pub containers: BTreeMap<String, String>,
    pub plan: LabPlan,
    pub timings: LaunchTimings,
}

/// When each launch phase finished, measured from the start of `launch` (phases overlap:
/// containers are created while the fabric is built).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LaunchTimings {
    pub images_checked: Duration,
    pub fabric_ready: Duration,
    pub containers_created: Duration,
    pub containers_started: Duration,
    pub links_plumbed: Duration,
    pub setup_done: Duration,
    /// Every container's health probe passed (docs/images.md: a lab is `running` only then).
    #[serde(default)]
    pub healthy: Duration,
    pub total: Duration,
}

/// The program an exec runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecCommand {
    Argv(Vec<String>),
    /// Run with `sh -c`.
    Shell(String),
}

/// One command to run in a lab container.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: ExecCommand,
    pub timeout: Duration,
    pub stdin: Option<Vec<u8>>,
    /// Per stream (stdout, stderr); the rest is drained and dropped, `truncated` is set.
    pub max_output_bytes: usize,
}

impl ExecRequest {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_OUTPUT: usize = 1 << 20;

    pub fn shell(cmd: impl Into<String>) -> Self {
        Self::new(ExecCommand::Shell(cmd.into()))
    }

    pub fn argv<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> Self {
        Self::new(ExecCommand::Argv(
            argv.into_iter().map(Into::into).collect(),
        ))
    }

    fn new(command: ExecCommand) -> Self {
        Self {
            command,
            timeout: Self::DEFAULT_TIMEOUT,
            stdin: None,
            max_output_bytes: Self::DEFAULT_MAX_OUTPUT,
        }
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    pub fn max_output(mut self, bytes: usize) -> Self {
        self.max_output_bytes = bytes;
        self
    }

    /// The argv the backend runs (`/bin/sh -c …` for a shell command).
    pub fn to_argv(&self) -> Vec<String> {
        match &self.command {
            ExecCommand::Argv(v) => v.clone(),
            ExecCommand::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

/// What an exec produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    /// `-1` when the process was killed on timeout before reporting one.
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
    /// Whether either stream went over `max_output_bytes`.
    pub truncated: bool,
    pub duration: Duration,
    pub timed_out: bool,
}

/// A regular file read from a lab container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent {
    pub path: String,
    pub bytes: Vec<u8>,
    /// Size of the file in the container.
    pub size: u64,
    pub truncated: bool,
}

/// One container of a lab as found on the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabContainer {
    /// Template name.
    pub name: String,
    /// The engine's name for it, `forge_<12hex>_<container>`.
    pub docker_name: String,
    pub id: String,
    pub state: ContainerState,
}

/// A lab as found on this host (containers by label, fabric namespace by name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabSummary {
    pub scenario_id: String,
    pub network_id: String,
    pub tenant_id: Option<String>,
    pub template: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub containers: Vec<LabContainer>,
    pub namespace_exists: bool,
    pub labels: BTreeMap<String, String>,
}

/// What `teardown` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeardownReport {
    pub containers_removed: usize,
    pub namespace_removed: bool,
}

/// What `reconcile` / `cleanup_older_than` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    pub errors: Vec<String>,
}
