//! [`DockerRuntime`]: the [`Runtime`] on the local Docker Engine, with each lab's fabric in its
//! own network namespace (see the crate docs).
//!
//! Docker is the source of truth: every container carries the labels needed to find, re-plumb
//! and clean it up, so the runtime keeps almost no state of its own (only which labs it is
//! tearing down right now, so the supervisor does not resurrect them).

mod hosts;
mod labs;
mod launch;
mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use forge_core::ScenarioId;
use futures::stream::BoxStream;

use crate::egress::EgressConfig;
use crate::error::RuntimeError;
use crate::images::{BuildOptions, BuildOutcome, ImageCatalog, ImageStatus};
use crate::{
    ContainerSnapshot, ContainerState, ExecRequest, ExecResult, FileContent, LabHandle, LabSpec,
    LabSummary, ReconcileReport, Runtime, RuntimeEvent, StoppedContainer, TeardownReport,
    TtySession, container_name, exec, files, netns,
};

/// How long a torn-down lab stays marked so late `die` events are ignored.
const TEARDOWN_MEMORY: Duration = Duration::from_secs(120);

/// Bound on one engine request, as bollard's local defaults have it.
const ENGINE_TIMEOUT_SECS: u64 = 120;

/// The Docker-backed runtime. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    /// Refuse to launch labs (and be not ready) unless the engine remaps user namespaces.
    require_userns: std::sync::atomic::AtomicBool,
    /// Scenario ids being (or recently) torn down by this process.
    tearing_down: Mutex<HashMap<String, Instant>>,
    /// Egress profiles, uplink and link pool of allowlisted labs.
    egress: std::sync::RwLock<Arc<EgressConfig>>,
    /// Whether lab containers get `/etc/hosts` from the runtime instead of Docker's network
    /// sandbox ([`hosts`]): decided once, from the engine's storage driver, unless a builder
    /// set it.
    own_hosts: tokio::sync::OnceCell<bool>,
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` or the unix socket) and negotiates the API
    /// version (the engine here speaks 1.41).
    pub async fn connect() -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| RuntimeError::Connect(e.to_string()))?;
        Self::negotiate(docker).await
    }

    /// Connects to the engine on the unix socket at `socket` (a path, or `unix://` and a path)
    /// instead of `DOCKER_HOST` or the default socket, with the same timeouts and version
    /// negotiation as [`DockerRuntime::connect`].
    pub async fn connect_at(socket: impl AsRef<std::path::Path>) -> Result<Self, RuntimeError> {
        let socket = socket.as_ref().to_string_lossy();
        let docker =
            Docker::connect_with_unix(&socket, ENGINE_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                .map_err(|e| RuntimeError::Connect(e.to_string()))?;
        Self::negotiate(docker).await
    }

    async fn negotiate(docker: Docker) -> Result<Self, RuntimeError> {
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Connect(e.to_string()))?;
        Ok(Self::from_docker(docker))
    }

    pub fn from_docker(docker: Docker) -> Self {
        Self {
            inner: Arc::new(Inner {
                docker,
                require_userns: std::sync::atomic::AtomicBool::new(false),
                tearing_down: Mutex::new(HashMap::new()),
                egress: std::sync::RwLock::new(Arc::new(EgressConfig::default())),
                own_hosts: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// Labs only on an engine that remaps user namespaces (`dockerd --userns-remap`): a lab's
    /// root is then an unprivileged host uid, so a kernel bug reachable with the lab's
    /// capabilities does not make it host root. Production requires it.
    pub fn require_user_namespaces(self, required: bool) -> Self {
        self.inner
            .require_userns
            .store(required, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// The egress profiles allowlisted labs may name, where their uplinks attach and the pool
    /// their link addresses come from. Without it every allowlisted lab fails to launch.
    pub fn with_egress(self, egress: EgressConfig) -> Self {
        *self.inner.egress.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(egress);
        self
    }

    /// Docker's network sandbox for every lab container (`network_mode: none`, `/etc/hosts`
    /// from `extra_hosts`) even where the runtime could write the hosts file itself and spare
    /// the engine the sandbox (see `docker/hosts.rs`): the slower path, which engines whose
    /// storage driver is not overlay2 always take. For comparisons (the launch benchmark) and
    /// as an operator's way back. Call before the first launch.
    pub fn with_network_sandbox(self, sandbox: bool) -> Self {
        // Already decided (a clone launched first): the first decision stands.
        let _ = self.inner.own_hosts.set(!sandbox);
        self
    }

    /// Whether lab containers start without Docker's network sandbox, their `/etc/hosts`
    /// written by the runtime: on overlay2 unless configured otherwise. An engine that cannot
    /// be asked now is asked again next time.
    pub async fn skips_network_sandbox(&self) -> bool {
        let decided = self
            .inner
            .own_hosts
            .get_or_try_init(|| async {
                let info = self.docker().info().await?;
                Ok::<_, bollard::errors::Error>(info.driver.as_deref() == Some("overlay2"))
            })
            .await;
        decided.copied().unwrap_or(false)
    }

    pub(crate) fn egress(&self) -> Arc<EgressConfig> {
        self.inner
            .egress
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the engine runs containers in remapped user namespaces.
    pub async fn user_namespaces_remapped(&self) -> Result<bool, RuntimeError> {
        let info = self
            .docker()
            .info()
            .await
            .map_err(|e| RuntimeError::docker("info", e))?;
        Ok(info
            .security_options
            .unwrap_or_default()
            .iter()
            .any(|o| o.split(',').any(|kv| kv == "name=userns")))
    }

    /// [`RuntimeError::HostRootLabs`] when remapping is required and missing.
    async fn check_isolation(&self) -> Result<(), RuntimeError> {
        let required = self
            .inner
            .require_userns
            .load(std::sync::atomic::Ordering::Relaxed);
        if required && !self.user_namespaces_remapped().await? {
            return Err(RuntimeError::HostRootLabs);
        }
        Ok(())
    }

    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// Builds the images in `references`, and the catalog images they are built on, that are
    /// missing or stale (the requested ones regardless with `force`), logging progress
    /// ([`crate::images::LogProgress`]) within the default timeout per image.
    pub async fn ensure_images(
        &self,
        catalog: &ImageCatalog,
        references: &[&str],
        force: bool,
    ) -> Result<Vec<(String, BuildOutcome)>, RuntimeError> {
        let opts = BuildOptions {
            force,
            ..Default::default()
        };
        crate::images::ensure_images(self.docker(), catalog, references, &opts).await
    }

    /// [`DockerRuntime::ensure_images`] with a progress sink and timeouts of the caller's.
    pub async fn build_images(
        &self,
        catalog: &ImageCatalog,
        references: &[&str],
        opts: &BuildOptions,
    ) -> Result<Vec<(String, BuildOutcome)>, RuntimeError> {
        crate::images::ensure_images(self.docker(), catalog, references, opts).await
    }

    /// Every image of `catalog`: built, stale or missing, and its size.
    pub async fn image_status(
        &self,
        catalog: &ImageCatalog,
    ) -> Result<Vec<ImageStatus>, RuntimeError> {
        crate::images::image_status(self.docker(), catalog).await
    }

    fn mark_teardown(&self, scenario: &str) {
        let mut m = self
            .inner
            .tearing_down
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.retain(|_, t| t.elapsed() < TEARDOWN_MEMORY);
        m.insert(scenario.to_owned(), Instant::now());
    }

    /// Whether this process is tearing the lab down (or just did).
    pub fn is_tearing_down(&self, scenario: &str) -> bool {
        let m = self
            .inner
            .tearing_down
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.get(scenario)
            .is_some_and(|t| t.elapsed() < TEARDOWN_MEMORY)
    }

    /// Removes every lab created longer than `age` ago (by `forge.created_at`, or the fabric's
    /// own record for a namespace whose containers are gone).
    pub async fn cleanup_older_than(&self, age: Duration) -> Result<ReconcileReport, RuntimeError> {
        labs::cleanup_older_than(self, age).await
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    /// `GET /_ping`, within [`crate::PING_TIMEOUT`].
    async fn ping(&self) -> Result<(), RuntimeError> {
        match tokio::time::timeout(crate::PING_TIMEOUT, self.docker().ping()).await {
            // Not ready either when labs would run as host root against the configuration.
            Ok(Ok(_)) => self.check_isolation().await,
            Ok(Err(e)) => Err(RuntimeError::Connect(with_causes(&e))),
            Err(_) => Err(RuntimeError::Connect(format!(
                "no answer to a ping within {:?}",
                crate::PING_TIMEOUT
            ))),
        }
    }

    async fn launch(&self, spec: LabSpec) -> Result<LabHandle, RuntimeError> {
        self.check_isolation().await?;
        launch::launch(self, spec).await
    }

    async fn exec(
        &self,
        scenario: &ScenarioId,
        container: &str,
        req: ExecRequest,
    ) -> Result<ExecResult, RuntimeError> {
        let target = container_name(scenario, container);
        exec::run(self.docker(), &target, container, scenario.as_str(), req).await
    }

    async fn read_file(
        &self,
        scenario: &ScenarioId,
        container: &str,
        path: &str,
        max_bytes: usize,
    ) -> Result<FileContent, RuntimeError> {
        let target = container_name(scenario, container);
        files::read_file(
            self.docker(),
            &target,
            container,
            scenario.as_str(),
            path,
            max_bytes,
        )
        .await
    }

    async fn snapshot(
        &self,
        scenario: &ScenarioId,
        container: &str,
    ) -> Result<ContainerSnapshot, RuntimeError> {
        let target = container_name(scenario, container);
        exec::snapshot(self.docker(), &target, container, scenario.as_str()).await
    }

    async fn exec_tty(
        &self,
        scenario: &ScenarioId,
        container: &str,
        cmd: Option<Vec<String>>,
    ) -> Result<TtySession, RuntimeError> {
        let target = container_name(scenario, container);
        exec::tty(self.docker(), &target, container, scenario.as_str(), cmd).await
    }

    async fn teardown(&self, scenario: &ScenarioId) -> Result<TeardownReport, RuntimeError> {
        labs::teardown(self, scenario.as_str(), &scenario.network_id()).await
    }

    async fn list_labs(&self) -> Result<Vec<LabSummary>, RuntimeError> {
        labs::list(self).await
    }

    async fn reconcile(
        &self,
        alive: &(dyn for<'s> Fn(&'s str) -> bool + Send + Sync),
    ) -> Result<ReconcileReport, RuntimeError> {
        labs::reconcile(self, alive).await
    }

    async fn events(
        &self,
        label_filters: &[String],
    ) -> Result<BoxStream<'static, RuntimeEvent>, RuntimeError> {
        Ok(watch::events(self, label_filters))
    }

    async fn stopped_containers(
        &self,
        label_filters: &[String],
    ) -> Result<Vec<StoppedContainer>, RuntimeError> {
        watch::stopped_containers(self, label_filters).await
    }

    async fn lab_alive(&self, scenario: &ScenarioId) -> bool {
        !self.is_tearing_down(scenario.as_str()) && netns::namespace_exists(&scenario.network_id())
    }

    async fn container_state(
        &self,
        scenario: &ScenarioId,
        container: &str,
    ) -> Result<ContainerState, RuntimeError> {
        let target = container_name(scenario, container);
        watch::container_state(self, &target, container, scenario.as_str()).await
    }

    async fn revive(&self, scenario: &ScenarioId, container: &str) -> Result<(), RuntimeError> {
        launch::revive(self, scenario, container).await
    }

    async fn kill(&self, scenario: &ScenarioId, container: &str) -> Result<(), RuntimeError> {
        let target = container_name(scenario, container);
        watch::kill(self, &target, container, scenario.as_str()).await
    }
}

/// `e` and its causes: bollard's transport errors say only "client error (Connect)" and leave
/// the reason (no such socket, connection refused) to their sources.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cause = c.source();
    }
    out
}
