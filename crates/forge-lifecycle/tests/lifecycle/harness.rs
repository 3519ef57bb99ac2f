//! The in-memory platform the fast lifecycle tests run against: everything `forge up` runs
//! (front door, orchestrator, worker, scoreboard, observer, runner, OPA endpoint, real SQLite in
//! a temp dir, the in-process bus, the signed audit log, embedded policies), on ephemeral ports,
//! with the fake runtime instead of Docker. No root, no engine.
//!
//! The fake's exec handler is a tiny shell for the test template: `echo TEXT > PATH` writes a
//! file (readable by `cat PATH` and by file evidence), anything else succeeds silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forge_core::ScenarioId;
use forge_lifecycle::platform::{Backends, Platform, PlatformConfig, Ports};
use forge_runtime::fake::{FakeExec, FakeRuntime};
use forge_runtime::{ExecResult, Runtime};
use serde_json::{Value, json};

use crate::api::{Api, LEARNER_ROLES};

/// The test template's name.
pub const TEMPLATE: &str = "fast-lab";

const TEMPLATE_YAML: &str = r#"
apiVersion: frostgate.forge/v1
kind: ScenarioTemplate
metadata:
  name: fast-lab
  labels:
    - class:netplus
    - tier:foundation
  annotations:
    description: "the fast lifecycle tests' lab"
    objectives: "write the flag and save the token"
spec:
  limits:
    cpu: 1
    memory_mb: 128
    attacker_max_exploits: 0
    timeout_minutes: 30
  network:
    egress: deny
    subnets:
      - name: lan
        cidr: 10.40.0.0/24
  assets:
    containers:
      - name: workstation
        image: forge/learner:1
        learner: true
        networks: [lan]
      - name: server
        image: forge/web:1
        networks: [lan]
  successCriteria:
    - id: flag-written
      description: "Write the flag"
      hint: "echo solved > /tmp/flag"
      evidence:
        - type: command
          command: "cat /tmp/flag"
          expect:
            exit_code: 0
            stdout_contains: "solved"
    - id: token-saved
      description: "Save the token"
      weight: 3.0
      hint: "the token starts with FG-"
      evidence:
        - type: file
          path: /tmp/token.txt
          expect:
            contains: "FG-FAST"
    - id: server-up
      description: "The server still runs"
      evidence:
        - type: state
          container: server
          expect:
            running: true
  solution:
    - container: workstation
      command: "echo solved > /tmp/flag"
    - container: workstation
      command: "echo FG-FAST > /tmp/token.txt"
"#;

/// The commands that solve the test lab.
pub const SOLUTION: [&str; 2] = ["echo solved > /tmp/flag", "echo FG-FAST > /tmp/token.txt"];

/// Files written through the fake shell: (scenario, container, path) → content.
type Files = Arc<Mutex<HashMap<(String, String, String), String>>>;

/// One platform on the fake runtime.
pub struct Harness {
    pub platform: Platform,
    pub fake: FakeRuntime,
    /// A learner (`learner-1` of tenant `demo`).
    pub api: Api,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// A test's configuration: the test template in a template dir, ephemeral ports, short waits.
pub fn config(dir: &Path) -> PlatformConfig {
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).expect("template dir");
    std::fs::write(templates.join("fast-lab.yaml"), TEMPLATE_YAML).expect("template");
    let mut cfg = PlatformConfig::new(dir.join("data"));
    cfg.ports = Ports::ephemeral();
    cfg.template_dir = Some(templates);
    cfg.build_images = false;
    cfg.orchestrator.evaluation_grace = Duration::from_secs(5);
    cfg.supervisor.backoff = Duration::from_millis(20);
    cfg
}

/// A fake runtime with the tiny shell installed.
pub fn fake_runtime() -> FakeRuntime {
    let fake = FakeRuntime::default();
    let files: Files = Arc::default();
    let writer = fake.clone();
    fake.on_exec(move |e: &FakeExec| shell(&writer, &files, e));
    fake
}

fn ok(stdout: &str) -> ExecResult {
    ExecResult {
        exit_code: 0,
        stdout: stdout.to_owned(),
        stderr: String::new(),
        truncated: false,
        duration: Duration::from_millis(1),
        timed_out: false,
    }
}

fn shell(fake: &FakeRuntime, files: &Files, e: &FakeExec) -> Option<ExecResult> {
    let cmd = e.command.trim();
    let key = |path: &str| (e.scenario.to_string(), e.container.clone(), path.to_owned());
    if let Some((text, path)) = cmd.strip_prefix("echo ").and_then(|r| r.split_once(" > ")) {
        let content = format!("{}\n", text.trim());
        files
            .lock()
            .unwrap()
            .insert(key(path.trim()), content.clone());
        fake.put_file(&e.scenario, &e.container, path.trim(), content.as_bytes());
        return Some(ok(""));
    }
    if let Some(path) = cmd.strip_prefix("cat ") {
        return Some(match files.lock().unwrap().get(&key(path.trim())) {
            Some(c) => ok(c),
            None => ExecResult {
                exit_code: 1,
                stderr: format!(
                    "cat: can't open '{}': No such file or directory\n",
                    path.trim()
                ),
                ..ok("")
            },
        });
    }
    None
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with `edit` applied to the test configuration.
    pub async fn start_with(edit: impl FnOnce(&mut PlatformConfig)) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut cfg = config(&dir);
        edit(&mut cfg);
        let mut h = Self::boot(cfg, fake_runtime(), dir).await;
        h._tmp = Some(tmp);
        h
    }

    async fn boot(cfg: PlatformConfig, fake: FakeRuntime, dir: PathBuf) -> Self {
        let runtime: Arc<dyn Runtime> = Arc::new(fake.clone());
        let backends = Backends::local(&cfg, runtime).await.expect("backends");
        let platform = Platform::start(cfg, backends)
            .await
            .expect("platform starts");
        let token = platform.mint("demo", LEARNER_ROLES, "learner-1").unwrap();
        let api = Api::new(&platform, token);
        Self {
            platform,
            fake,
            api,
            dir,
            _tmp: None,
        }
    }

    /// Stops the platform (labs stay in the fake, as they would on a host) and starts a new one
    /// on the same data dir and runtime, with `edit` applied.
    pub async fn restart_with(self, edit: impl FnOnce(&mut PlatformConfig)) -> Self {
        let Self {
            platform,
            fake,
            dir,
            _tmp,
            ..
        } = self;
        platform.shutdown().await;
        let mut cfg = config(&dir);
        edit(&mut cfg);
        let mut h = Self::boot(cfg, fake, dir).await;
        h._tmp = _tmp;
        h
    }

    /// A client with a token for `sub` of `tenant` with `roles`.
    pub fn api_as(&self, tenant: &str, roles: &[&str], sub: &str) -> Api {
        self.api
            .with_token(self.platform.mint(tenant, roles, sub).unwrap())
    }

    /// Spawns the test lab through the front door.
    pub async fn spawn(&self) -> String {
        self.api
            .spawn(json!({"track": "netplus", "template": TEMPLATE,
                          "request_id": uuid::Uuid::new_v4().to_string()}))
            .await
    }

    /// Spawns and waits until the lab runs.
    pub async fn running(&self) -> String {
        let id = self.spawn().await;
        self.api
            .wait_for(&id, &["running"], Duration::from_secs(10))
            .await;
        id
    }

    /// Runs the solution through the exec API.
    pub async fn solve(&self, id: &str) {
        for cmd in SOLUTION {
            let out = self.api.exec(id, cmd).await;
            assert_eq!(out["exit_code"], 0, "{cmd}: {out}");
        }
    }

    /// Waits until `id` has status `want` (any, terminal or not).
    pub async fn wait_status(&self, id: &str, want: &str, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (code, v) = self.api.scenario(id).await;
            assert_eq!(code, 200, "{v}");
            if v["status"] == want {
                return v;
            }
            assert!(
                start.elapsed() < within,
                "{id} is not {want} within {within:?}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every audit event recorded so far, as JSON (the `event` of each log record).
    pub fn audit_events(&self) -> Vec<Value> {
        self.platform.audit_log.flush().expect("flush audit log");
        let path = forge_evidence::AuditLog::default_path(&self.platform.data_dir);
        std::fs::read_to_string(path)
            .expect("audit log")
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|mut r| r.get_mut("event").map(Value::take))
            .collect()
    }

    /// Audit events of `kind` about scenario `id`.
    pub fn audited(&self, kind: &str, id: &str) -> Vec<Value> {
        self.audit_events()
            .into_iter()
            .filter(|e| e["event_type"] == kind && e["resource_id"] == id)
            .collect()
    }

    pub fn has_lab(&self, id: &str) -> bool {
        let id: ScenarioId = id.parse().unwrap();
        self.fake.labs().contains(&id)
    }

    pub async fn stop(self) {
        self.platform.shutdown().await;
    }

    /// Stops the platform, which writes the closing records of its open audit windows, and
    /// returns every audit event it recorded.
    pub async fn stop_and_audit(self) -> Vec<Value> {
        let Self { platform, _tmp, .. } = self;
        let path = forge_evidence::AuditLog::default_path(&platform.data_dir);
        platform.shutdown().await;
        let events = std::fs::read_to_string(path)
            .expect("audit log")
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|mut r| r.get_mut("event").map(Value::take))
            .collect();
        drop(_tmp);
        events
    }

    /// A tenants file in the test's directory with the bundled `demo` tenant plus `extra`
    /// (TOML: more plans and tenants); for [`Harness::start_with`].
    pub fn tenants_file(dir: &Path, extra: &str) -> PathBuf {
        let path = dir.join("tenants.toml");
        let text = format!("{}\n{extra}\n", forge_services::tenants::EXAMPLE);
        std::fs::write(&path, text).expect("tenants file");
        path
    }
}

/// Opens the terminal at `url`, resizes it to `size` and types `line`: panics unless the shell
/// echoes it within 5 s.
pub async fn terminal_echoes(url: String, size: (u16, u16), line: &str) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let resize = json!({"type": "resize", "cols": size.0, "rows": size.1}).to_string();
    ws.send(WsMessage::Text(resize.into())).await.unwrap();
    ws.send(WsMessage::Binary(format!("{line}\n").into_bytes().into()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if let WsMessage::Binary(b) = m {
                seen.extend_from_slice(&b);
                if String::from_utf8_lossy(&seen).contains(line) {
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no echo: {:?}",
        String::from_utf8_lossy(&seen)
    );
}
