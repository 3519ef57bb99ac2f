//! [`FakeRuntime`]: the [`Runtime`](crate::Runtime) in memory, for fast tests of the crates
//! above the runtime (no root, no Docker, no namespaces). It keeps the same contract as
//! [`DockerRuntime`](crate::DockerRuntime), checked by the same conformance suite
//! (`forge_runtime::conformance`): the same validation of templates at launch, the same error
//! variants for a missing lab, container or file, the same read truncation.
//!
//! It runs nothing. A launched lab is a record whose containers are all `Running`; `exec`
//! answers through handlers the test sets with [`FakeRuntime::on_exec`] (exit code 0 and no
//! output otherwise); files exist once [`FakeRuntime::put_file`] put them; a terminal echoes
//! its input. Test controls inject failures and deaths ([`FakeRuntime::fail_next_launch`],
//! [`FakeRuntime::kill_container`], [`FakeRuntime::lose_lab`], [`FakeRuntime::set_engine_down`],
//! …).
//!
//! Clones share one state, so a test keeps a clone to drive and observe what the code under
//! test does with another.

mod runtime;
mod tty;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use forge_core::ScenarioId;
use forge_core::template::ScenarioTemplate;
use futures::channel::mpsc;

use crate::{ContainerState, ExecResult, RuntimeEvent, labels_match};

/// One `exec` the fake was asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeExec {
    pub scenario: ScenarioId,
    pub container: String,
    /// What a real backend would run (`/bin/sh -c …` for a shell command).
    pub argv: Vec<String>,
    /// The shell string, or the argv joined by spaces.
    pub command: String,
    pub stdin: Option<Vec<u8>>,
}

type ExecHandler = Arc<dyn Fn(&FakeExec) -> Option<ExecResult> + Send + Sync>;

/// The in-memory runtime. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct FakeRuntime {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// Newest first; the first `Some` answers.
    handlers: Mutex<Vec<ExecHandler>>,
    subscribers: Mutex<Vec<Subscriber>>,
}

struct Subscriber {
    filters: Vec<String>,
    tx: mpsc::UnboundedSender<RuntimeEvent>,
}

#[derive(Default)]
struct State {
    labs: BTreeMap<String, FakeLab>,
    exec_calls: Vec<FakeExec>,
    tty_sizes: Vec<(u16, u16)>,
    /// (container, command) of every terminal opened.
    tty_opened: Vec<(String, Option<Vec<String>>)>,
    fail_next_launch: Option<String>,
    launch_delay: Duration,
    fail_revive: bool,
    engine_down: bool,
}

struct FakeLab {
    id: ScenarioId,
    tenant_id: String,
    template: ScenarioTemplate,
    created_at: DateTime<Utc>,
    /// Labels every container of the lab carries (`forge.*` + the spec's).
    labels: BTreeMap<String, String>,
    /// In template order.
    containers: Vec<FakeContainer>,
}

struct FakeContainer {
    name: String,
    id: String,
    state: ContainerState,
    started_at: DateTime<Utc>,
    restart_count: u64,
    exit_code: Option<i64>,
    files: BTreeMap<String, Vec<u8>>,
}

impl FakeLab {
    fn container_labels(&self, c: &FakeContainer) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert(crate::labels::CONTAINER.to_owned(), c.name.clone());
        l
    }
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an exec handler. Handlers are asked newest first; the first `Some` is the result.
    /// When every handler returns `None` (or none is set) the exec exits 0 with no output.
    pub fn on_exec(&self, f: impl Fn(&FakeExec) -> Option<ExecResult> + Send + Sync + 'static) {
        self.inner
            .handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(0, Arc::new(f));
    }

    /// Every exec asked of the fake, in order (also those that failed).
    pub fn exec_calls(&self) -> Vec<FakeExec> {
        self.state().exec_calls.clone()
    }

    /// Puts a file into a container (as if the lab had written it).
    ///
    /// # Panics
    /// When the lab or container does not exist: that is a mistake in the test.
    pub fn put_file(
        &self,
        scenario: &ScenarioId,
        container: &str,
        path: &str,
        bytes: impl Into<Vec<u8>>,
    ) {
        let mut st = self.state();
        let c = st
            .labs
            .get_mut(scenario.as_str())
            .and_then(|l| l.containers.iter_mut().find(|c| c.name == container))
            .unwrap_or_else(|| panic!("fake: lab {scenario} has no container `{container}`"));
        c.files.insert(path.to_owned(), bytes.into());
    }

    /// Every size a terminal was resized to, in order.
    pub fn tty_sizes(&self) -> Vec<(u16, u16)> {
        self.state().tty_sizes.clone()
    }

    /// The container and command of every terminal opened, in order.
    pub fn tty_opened(&self) -> Vec<(String, Option<Vec<String>>)> {
        self.state().tty_opened.clone()
    }

    /// The next `launch` fails with `reason` (and builds nothing).
    pub fn fail_next_launch(&self, reason: &str) {
        self.state().fail_next_launch = Some(reason.to_owned());
    }

    /// Every `launch` takes this long before it answers.
    pub fn set_launch_delay(&self, delay: Duration) {
        self.state().launch_delay = delay;
    }

    /// Whether `revive` fails (as when a lab's fabric is broken).
    pub fn fail_revive(&self, fail: bool) {
        self.state().fail_revive = fail;
    }

    /// Whether the engine is down: `ping` fails (readiness) while it is; nothing else changes.
    pub fn set_engine_down(&self, down: bool) {
        self.state().engine_down = down;
    }

    /// The container dies: state `Exited` (code 137, a kill), and every `events` subscriber
    /// whose filters match gets [`RuntimeEvent::Died`].
    ///
    /// # Panics
    /// When the lab or container does not exist.
    pub fn kill_container(&self, scenario: &ScenarioId, container: &str) {
        let labels = {
            let mut st = self.state();
            let lab = st
                .labs
                .get_mut(scenario.as_str())
                .unwrap_or_else(|| panic!("fake: no lab {scenario}"));
            let i = lab
                .containers
                .iter()
                .position(|c| c.name == container)
                .unwrap_or_else(|| panic!("fake: lab {scenario} has no container `{container}`"));
            let c = &mut lab.containers[i];
            c.state = ContainerState::Exited;
            c.exit_code = Some(137);
            let c = &lab.containers[i];
            lab.container_labels(c)
        };
        self.emit(
            &labels,
            RuntimeEvent::Died {
                scenario_id: scenario.to_string(),
                container: container.to_owned(),
            },
        );
    }

    /// The lab vanishes as if the host lost it (containers and fabric gone, no teardown).
    pub fn lose_lab(&self, scenario: &ScenarioId) {
        self.state().labs.remove(scenario.as_str());
    }

    /// Ends every `events` stream, as a dropped engine connection does.
    pub fn disconnect_events(&self) {
        self.subscribers().clear();
    }

    /// The labs present, by scenario id.
    pub fn labs(&self) -> Vec<ScenarioId> {
        self.state().labs.values().map(|l| l.id.clone()).collect()
    }

    /// The state of one container, `None` when it does not exist.
    pub fn state_of(&self, scenario: &ScenarioId, container: &str) -> Option<ContainerState> {
        let st = self.state();
        let lab = st.labs.get(scenario.as_str())?;
        lab.containers
            .iter()
            .find(|c| c.name == container)
            .map(|c| c.state)
    }

    fn subscribers(&self) -> MutexGuard<'_, Vec<Subscriber>> {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, labels: &BTreeMap<String, String>, ev: RuntimeEvent) {
        self.subscribers().retain(|s| {
            !labels_match(labels, &s.filters) || s.tx.unbounded_send(ev.clone()).is_ok()
        });
    }

    fn handlers(&self) -> Vec<ExecHandler> {
        self.inner
            .handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
