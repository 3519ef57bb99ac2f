//! Lab runtime of FrostGate Forge: hardened Docker containers wired into a per-lab fabric
//! network namespace (docs/design.md §4), command execution, file capture, state snapshots, an
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
//!   by construction: nothing in the fabric is connected to the host. The one exception is a
//!   template with `egress: allowlist`: [`egress`] gives its fabric an uplink whose nftables
//!   ruleset lets through only the operator's profile.
//! * Per planned attachment ([`forge_core::template::plan_lab`]) a veth pair is created from a
//!   netlink socket inside the fabric: the fabric end `v<c>x<a>` is enslaved to its bridge and
//!   up, the peer is created directly in the container's namespace (by PID) as `eth<a>`, then
//!   addressed and brought up from a netlink socket opened inside that namespace.
//! * **Default routes** (no capability needed in the container, the runtime sets them from
//!   outside): when a subnet declares `gateway`, every container attached to that subnet whose
//!   *only* attachment it is and whose address is not the gateway gets `default via <gateway>`.
//!   Multi-homed containers (routers) and gateway owners get none. Do not declare a gateway on
//!   a subnet whose hosts the learner is meant to route by hand.
//!   In an allowlisted lab the fabric is the gateway of every subnet that declares none (at
//!   its highest free address), so the same rule gives its single-homed hosts a way out.
//! * Lab hostnames resolve inside the lab through `/etc/hosts`. On an overlay2 engine the
//!   runtime writes that file into each container's writable layer before its first start and
//!   creates the container with Docker's networking disabled, which spares the engine a network
//!   sandbox and a `dockerd` re-exec per container start (half of `docker start`; see
//!   `docker/hosts.rs`); runc still gives the container an empty namespace of its own, which
//!   is plumbed as below. On other drivers Docker writes the names from `extra_hosts` (it does
//!   with `network_mode: none` too; verified on 20.10). Either way it is read-only inside.
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
//! whole life. The `netns` module therefore creates sockets on a short-lived dedicated OS
//! thread that `setns`/`unshare`s first and then exits; the socket is handed to the async side
//! and driven by an ordinary `rtnetlink` connection on the caller's tokio runtime. No thread of
//! the tokio pools ever changes namespace, and no `ip` process runs on the hot path (only an
//! allowlisted lab's launch and teardown run `nft`, entering the namespace between fork and
//! exec).
//!
//! # The seam
//!
//! Callers hold an `Arc<dyn Runtime>`; nothing in the trait names Docker. [`DockerRuntime`] is
//! the production backend; with the `fake` feature, `fake::FakeRuntime` is an in-memory one for
//! other crates' fast tests; with the `conformance` feature, the `conformance` module checks
//! that a backend behaves like the others (this crate runs it against both). The
//! [`Supervisor`] only uses the trait.

pub mod collect;
#[cfg(feature = "conformance")]
pub mod conformance;
mod docker;
pub mod egress;
mod error;
mod exec;
mod fabric;
#[cfg(feature = "fake")]
pub mod fake;
mod files;
pub mod hardening;
pub mod images;
mod model;
mod netns;
pub mod supervisor;
pub mod template_test;

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use forge_core::ScenarioId;
use futures::Stream;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use collect::collect;
pub use docker::DockerRuntime;
pub use egress::{EgressConfig, EgressProfiles, Uplink};
pub use error::RuntimeError;
pub use images::{ImageCatalog, find_images_dir};
pub use model::{
    ExecCommand, ExecRequest, ExecResult, FileContent, LabContainer, LabHandle, LabSpec,
    LabSummary, LaunchTimings, ReconcileReport, TeardownReport,
};
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

/// The state of a lab container, whatever the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    Unknown,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Removing => "removing",
            Self::Exited => "exited",
            Self::Dead => "dead",
            Self::Unknown => "unknown",
        }
    }

    pub fn is_running(self) -> bool {
        self == Self::Running
    }

    /// From Docker's state strings (`running`, `exited`, …); anything else is `Unknown`.
    pub fn from_engine(s: &str) -> Self {
        match s.trim().to_ascii_lowercase().as_str() {
            "created" => Self::Created,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "restarting" => Self::Restarting,
            "removing" => Self::Removing,
            "exited" => Self::Exited,
            "dead" => Self::Dead,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `snapshot` reports about one lab container: enough to judge and to archive as
/// evidence, never a secret (every environment value is redacted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSnapshot {
    /// Template name.
    pub container: String,
    pub image: String,
    pub state: ContainerState,
    /// RFC 3339, as the engine reports it; `None` when it never started.
    pub started_at: Option<String>,
    pub restart_count: u64,
    /// Only once it has stopped.
    pub exit_code: Option<i64>,
    pub hostname: Option<String>,
    /// Every value is [`REDACTED`]; the keys are kept.
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub read_only_root: bool,
    /// Capabilities added back after dropping all.
    pub capabilities: Vec<String>,
    pub memory_bytes: Option<i64>,
    pub pids_limit: Option<i64>,
    /// The engine's verdict on the image's HEALTHCHECK (`starting`, `healthy`, `unhealthy`);
    /// `None` for an image without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// What a snapshot shows instead of an environment value.
pub const REDACTED: &str = "<redacted>";

/// Resizes an interactive terminal.
#[async_trait]
pub trait TtyResize: Send + Sync {
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), RuntimeError>;
}

/// An interactive terminal in a lab container (for the WebSocket terminal). Dropping `input`
/// ends the shell's stdin; the output stream ends when the shell does.
pub struct TtySession {
    /// Raw terminal output.
    pub output: Pin<Box<dyn Stream<Item = Result<Vec<u8>, RuntimeError>> + Send>>,
    /// Keystrokes go here.
    pub input: Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    pub resizer: Box<dyn TtyResize>,
}

/// Something that happened to a lab container, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuntimeEvent {
    /// The container stopped (crash, kill, OOM kill, or its own exit).
    Died {
        scenario_id: String,
        container: String,
    },
    /// The kernel OOM-killed a process in it (a `Died` follows when that was its init).
    OomKilled {
        scenario_id: String,
        container: String,
    },
}

/// A lab container that is not running (exited or dead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedContainer {
    pub scenario_id: String,
    /// Template name.
    pub container: String,
}

/// How long [`Runtime::ping`] waits for the engine.
pub const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The lab runtime the orchestrator, worker agent and supervisor use.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Whether the engine answers now (readiness probes), within [`PING_TIMEOUT`].
    async fn ping(&self) -> Result<(), RuntimeError>;

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

    /// The container's state and configuration, with every environment value redacted.
    async fn snapshot(
        &self,
        scenario: &ScenarioId,
        container: &str,
    ) -> Result<ContainerSnapshot, RuntimeError>;

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

    /// Deaths (and OOM kills) of lab containers, as they happen; the stream ends when the
    /// engine connection drops (callers re-subscribe). `label_filters` narrow it like
    /// [`SupervisorConfig::label_filters`] (`key` or `key=value`).
    async fn events(
        &self,
        label_filters: &[String],
    ) -> Result<BoxStream<'static, RuntimeEvent>, RuntimeError>;

    /// Containers of labs on this host that are not running (exited/dead), narrowed the same
    /// way.
    async fn stopped_containers(
        &self,
        label_filters: &[String],
    ) -> Result<Vec<StoppedContainer>, RuntimeError>;

    /// Whether the lab is alive: its fabric exists and this process is not tearing it down.
    async fn lab_alive(&self, scenario: &ScenarioId) -> bool;

    /// Current state of one lab container (`NoSuchContainer` when it is gone).
    async fn container_state(
        &self,
        scenario: &ScenarioId,
        container: &str,
    ) -> Result<ContainerState, RuntimeError>;

    /// Starts a dead lab container again and re-plumbs its links and setup from its labels.
    async fn revive(&self, scenario: &ScenarioId, container: &str) -> Result<(), RuntimeError>;

    /// Stops a half-revived container so the next attempt starts clean.
    async fn kill(&self, scenario: &ScenarioId, container: &str) -> Result<(), RuntimeError>;
}

/// Whether a container's labels pass `label_filters` (`key` or `key=value`, all must hold), the
/// engine's own label filter semantics.
pub fn labels_match(labels: &BTreeMap<String, String>, label_filters: &[String]) -> bool {
    label_filters.iter().all(|f| match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(f.as_str()),
    })
}

/// The engine's name of a lab container, `forge_<12hex>_<container>`.
pub fn container_name(scenario: &ScenarioId, container: &str) -> String {
    format!("forge_{}_{}", scenario.suffix(), container)
}

/// Scenario id of a fabric namespace name (`forge_scn_<hex>` → `scn-<hex>`).
pub fn scenario_of_namespace(ns: &str) -> Option<String> {
    let hex = ns.strip_prefix("forge_scn_")?;
    let id = format!("scn-{hex}");
    id.parse::<ScenarioId>().ok().map(|_| id)
}
