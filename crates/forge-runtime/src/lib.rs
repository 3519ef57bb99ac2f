//! Lab runtime of FrostGate Forge: hardened Docker containers wired into a per-lab fabric
//! network namespace (design.md §4), command execution, file capture, state snapshots, an
//! interactive terminal, evidence collection, supervision (restart + re-plumb) and cleanup.
//!
//! # Model
//!
//! * Every lab container is created by Docker with `network_mode: none`; Docker owns the image,
//!   cgroups, hardening, exec and labels. Names are `forge_<12hex>_<container>`; labels
//!   `forge.scenario_id`, `forge.tenant_id`, `forge.container`, `forge.created_at`,
//!   `forge.template` (+ the caller's extra labels) make every container findable after a crash.
//! * Per lab one named network namespace `forge_scn_<12hex>` (the API's `network_id`) is the
//!   fabric: one bridge `br<i>` per template subnet, no address, no uplink. Egress is impossible
//!   by construction: nothing in the fabric is connected to the host.
//! * Per planned attachment ([`forge_core::template::plan_lab`]) a veth pair is created from a
//!   netlink socket inside the fabric: the fabric end `v<c>x<a>` is enslaved to its bridge and
//!   up, the peer is created directly in the container's namespace (by PID) as `eth<a>`, then
//!   addressed and brought up from a netlink socket opened inside that namespace.
//! * **Default routes** (no capability needed in the container, the runtime sets them from
//!   outside): when a subnet declares `gateway`, every container attached to that subnet whose
//!   *only* attachment it is and whose address is not the gateway gets `default via <gateway>`.
//!   Multi-homed containers (routers) and gateway owners get none. Do not declare a gateway on
//!   a subnet whose hosts the learner is meant to route by hand.
//! * Lab hostnames resolve inside the lab through Docker's `extra_hosts` (Docker writes them
//!   into the container's own `/etc/hosts` even with `network_mode: none`; verified on 20.10),
//!   which works on a read-only root.
//! * Template `setup` steps run (`sh -c`, in declaration order per container, containers in
//!   parallel) once every link is up; then the lab is ready.
//!
//! * **Files** are read without running anything in the container: through Docker's archive
//!   API, except on the tmpfs mounts (`/tmp`, `/run`, where everything a learner writes lives
//!   on a read-only root) which that API cannot see on Docker 20.10; those are read through
//!   `/proc/<pid>/root` with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so symlinks
//!   planted in the lab resolve inside the container's root, never the host's.
//! * Every interface gets a deterministic MAC (`02:<bridge>:<IPv4>`), so a restarted,
//!   re-plumbed container is reachable again at once (neighbours' ARP caches stay valid).
//!
//! # Netlink inside other namespaces
//!
//! A netlink socket belongs to the network namespace of the thread that created it, for its
//! whole life. [`netns`] therefore creates sockets on a short-lived dedicated OS thread that
//! `setns`/`unshare`s first and then exits; the socket is handed to the async side and driven
//! by an ordinary `rtnetlink` connection on the caller's tokio runtime. No thread of the tokio
//! pools ever changes namespace, and no `ip` process runs on the hot path.

pub mod cli;
#[doc(hidden)]
pub mod cli_baseline;
pub mod collect;
mod docker;
mod error;
mod exec;
mod fabric;
mod files;
pub mod hardening;
pub mod images;
mod netns;
pub mod supervisor;
pub mod template_test;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use forge_core::ScenarioId;
use forge_core::template::{LabPlan, ScenarioTemplate};
use futures::Stream;
use serde::{Deserialize, Serialize};

pub use collect::collect;
pub use docker::DockerRuntime;
pub use error::RuntimeError;
pub use exec::TtyResizer;
pub use images::{ImageCatalog, ensure_images};
pub use netns::{list_namespaces, namespace_exists};
pub use supervisor::{LabEvent, Supervisor, SupervisorConfig};

/// Label keys the runtime puts on every lab container.
pub mod labels {
    pub const SCENARIO_ID: &str = "forge.scenario_id";
    pub const TENANT_ID: &str = "forge.tenant_id";
    pub const CONTAINER: &str = "forge.container";
    pub const CREATED_AT: &str = "forge.created_at";
    pub const TEMPLATE: &str = "forge.template";
    /// JSON of the container's planned attachments, so a restart can be re-plumbed from
    /// Docker's state alone (even by another process after a crash).
    pub const LINKS: &str = "forge.links";
    /// The default gateway the runtime installs, when the routing rule gives one.
    pub const GATEWAY: &str = "forge.gateway";
    /// JSON array of the container's setup commands, re-run after a restart.
    pub const SETUP: &str = "forge.setup";
    /// Position of the container in the template (names its fabric-side veths).
    pub const INDEX: &str = "forge.index";
    /// Marks images built by `forge images build`.
    pub const IMAGE: &str = "forge.image";
}

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
    /// Template container name → Docker container id.
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

    /// The argv handed to Docker.
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

/// A file read from a container through Docker's archive API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent {
    pub path: String,
    pub bytes: Vec<u8>,
    /// Size of the file in the container.
    pub size: u64,
    pub truncated: bool,
}

/// An interactive terminal in a lab container (for the WebSocket terminal).
pub struct TtySession {
    pub exec_id: String,
    /// Raw terminal output.
    pub output: Pin<Box<dyn Stream<Item = Result<Vec<u8>, RuntimeError>> + Send>>,
    /// Keystrokes go here.
    pub input: Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    pub resizer: TtyResizer,
}

/// One container of a lab as found on the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabContainer {
    /// Template name.
    pub name: String,
    pub docker_name: String,
    pub id: String,
    /// Docker's state: `running`, `exited`, `created` …
    pub state: String,
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

/// The lab runtime the orchestrator and worker agent use.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Creates the fabric and containers, plumbs links, runs setup; tears down what it built
    /// when any step fails.
    async fn launch(&self, spec: LabSpec) -> Result<LabHandle, RuntimeError>;

    async fn exec(
        &self,
        scenario: &ScenarioId,
        container: &str,
        req: ExecRequest,
    ) -> Result<ExecResult, RuntimeError>;

    /// Reads a regular file without running anything in the container; `max_bytes` caps the
    /// content kept.
    async fn read_file(
        &self,
        scenario: &ScenarioId,
        container: &str,
        path: &str,
        max_bytes: usize,
    ) -> Result<FileContent, RuntimeError>;

    /// The container's inspect document with every environment value redacted.
    async fn snapshot(
        &self,
        scenario: &ScenarioId,
        container: &str,
    ) -> Result<serde_json::Value, RuntimeError>;

    /// An interactive terminal running `cmd` (default `/bin/sh`).
    async fn exec_tty(
        &self,
        scenario: &ScenarioId,
        container: &str,
        cmd: Option<Vec<String>>,
    ) -> Result<TtySession, RuntimeError>;

    /// Removes the lab's containers, then its namespace. Idempotent; copes with half-built labs.
    async fn teardown(&self, scenario: &ScenarioId) -> Result<TeardownReport, RuntimeError>;

    /// Every lab on this host.
    async fn list_labs(&self) -> Result<Vec<LabSummary>, RuntimeError>;

    /// Tears down every lab for which `alive(scenario_id)` is false.
    async fn reconcile(
        &self,
        alive: &(dyn for<'s> Fn(&'s str) -> bool + Send + Sync),
    ) -> Result<ReconcileReport, RuntimeError>;
}

/// Docker name of a lab container.
pub fn container_name(scenario: &ScenarioId, container: &str) -> String {
    format!("forge_{}_{}", scenario.suffix(), container)
}

/// Scenario id of a fabric namespace name (`forge_scn_<hex>` → `scn-<hex>`).
pub fn scenario_of_namespace(ns: &str) -> Option<String> {
    let hex = ns.strip_prefix("forge_scn_")?;
    let id = format!("scn-{hex}");
    id.parse::<ScenarioId>().ok().map(|_| id)
}
