//! Shared plumbing of the life-cycle tests: a platform per test (ephemeral ports, tempdir data
//! dir, labs labelled with the test's run id, supervisor narrowed to them), an HTTP client, and a
//! guard that removes every container and namespace of the run even when an assertion fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forge_core::ScenarioId;
use forge_lifecycle::platform::{Platform, PlatformConfig, Ports};
use forge_runtime::{DockerRuntime, Runtime};
use serde_json::{Value, json};

pub const TEST_RUN_LABEL: &str = "forge.test_run";
pub const LEARNER_ROLES: &[&str] = &["forge.spawn"];

/// A fresh run id (one per test).
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Platform config for one test run.
pub fn config(data_dir: &Path, run: &str) -> PlatformConfig {
    let mut cfg = PlatformConfig::new(data_dir.to_path_buf());
    cfg.ports = Ports::EPHEMERAL;
    cfg.orchestrator
        .labels
        .insert(TEST_RUN_LABEL.to_owned(), run.to_owned());
    cfg.supervisor.label_filters = vec![format!("{TEST_RUN_LABEL}={run}")];
    cfg
}

/// Removes every lab of the run on drop: teardown of every scenario seen, then a sweep of
/// containers and namespaces carrying the run label. Runs on its own thread and runtime, so it
/// works while a test panics.
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
        let run = self.run.clone();
        let seen: Vec<String> = self.seen.lock().unwrap().iter().cloned().collect();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(docker) = DockerRuntime::connect().await {
                    let mut ids: BTreeSet<String> = seen.into_iter().collect();
                    if let Ok(labs) = docker.list_labs().await {
                        for l in labs {
                            if l.labels.get(TEST_RUN_LABEL) == Some(&run) {
                                ids.insert(l.scenario_id.clone());
                            }
                        }
                    }
                    for id in ids {
                        if let Ok(sid) = id.parse::<ScenarioId>() {
                            let _ = docker.teardown(&sid).await;
                        }
                    }
                }
            });
            // Belt and braces: anything still carrying the label.
            let out = std::process::Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label={TEST_RUN_LABEL}={run}"),
                ])
                .output();
            if let Ok(out) = out {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                if !ids.is_empty() {
                    let _ = std::process::Command::new("docker")
                        .arg("rm")
                        .arg("-f")
                        .args(&ids)
                        .output();
                }
            }
        })
        .join();
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
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=forge.scenario_id={id}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Running containers labelled with the scenario id.
pub fn running_containers_of(id: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=forge.scenario_id={id}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
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

/// HTTP client against one platform, with one bearer token.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub spawn: String,
    pub orchestrator: String,
    pub worker: String,
    pub scoreboard: String,
    pub token: String,
}

impl Api {
    pub fn new(p: &Platform, token: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
            spawn: p.url("spawn"),
            orchestrator: p.url("orchestrator"),
            worker: p.url("worker"),
            scoreboard: p.url("scoreboard"),
            token,
        }
    }

    pub fn with_token(&self, token: String) -> Self {
        Self {
            token,
            ..self.clone()
        }
    }

    /// Spawns; returns the scenario id (201 expected).
    pub async fn spawn(&self, body: Value, cleanup: &Cleanup) -> String {
        let r = self
            .http
            .post(format!("{}/v1/spawn", self.spawn))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("spawn request");
        let status = r.status();
        let v: Value = r.json().await.expect("spawn body");
        assert_eq!(status.as_u16(), 201, "spawn answered {status}: {v}");
        let id = v["scenario_id"].as_str().expect("scenario_id").to_owned();
        cleanup.saw(&id);
        id
    }

    pub async fn spawn_track(&self, track: &str, cleanup: &Cleanup) -> String {
        let body = json!({"track": track, "request_id": uuid::Uuid::new_v4().to_string()});
        self.spawn(body, cleanup).await
    }

    /// `GET /v1/scenarios/{id}`: status code and body.
    pub async fn scenario(&self, id: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/v1/scenarios/{id}", self.orchestrator))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("get scenario");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn status(&self, id: &str) -> String {
        let (code, v) = self.scenario(id).await;
        assert_eq!(code, 200, "GET scenario {id}: {v}");
        v["status"].as_str().unwrap_or_default().to_owned()
    }

    /// Polls until the status is one of `want` (panics on another terminal state or timeout).
    pub async fn wait_for(&self, id: &str, want: &[&str], within: Duration) -> Value {
        let start = Instant::now();
        let mut last = Value::Null;
        while start.elapsed() < within {
            let (code, v) = self.scenario(id).await;
            assert_eq!(code, 200, "GET scenario {id}: {v}");
            let st = v["status"].as_str().unwrap_or_default();
            if want.contains(&st) {
                return v;
            }
            let terminal = ["completed", "failed", "timeout"];
            assert!(
                !terminal.contains(&st),
                "scenario {id} ended as {st} while waiting for {want:?}: {v}"
            );
            last = v;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("scenario {id} not {want:?} within {within:?}; last: {last}");
    }

    pub async fn post_worker(&self, id: &str, action: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/scenarios/{id}/{action}", self.worker))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("worker request");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn check(&self, id: &str) -> Value {
        let (code, v) = self.post_worker(id, "check", None).await;
        assert_eq!(code, 200, "check {id}: {v}");
        v
    }

    pub async fn exec(&self, id: &str, command: &str) -> Value {
        let (code, v) = self
            .post_worker(id, "exec", Some(json!({"command": command})))
            .await;
        assert_eq!(code, 200, "exec {command:?} in {id}: {v}");
        v
    }

    pub async fn submit(&self, id: &str) {
        let (code, v) = self.post_worker(id, "submit", None).await;
        assert_eq!(code, 202, "submit {id}: {v}");
    }

    pub async fn delete(&self, id: &str) -> u16 {
        self.http
            .delete(format!("{}/v1/scenarios/{id}", self.orchestrator))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("delete")
            .status()
            .as_u16()
    }

    /// `GET /v1/scores/{id}` (or a file under it): status code and bytes.
    pub async fn score_raw(&self, id: &str, file: Option<&str>) -> (u16, Vec<u8>) {
        let url = match file {
            Some(f) => format!("{}/v1/scores/{id}/{f}", self.scoreboard),
            None => format!("{}/v1/scores/{id}", self.scoreboard),
        };
        let r = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("score request");
        let s = r.status().as_u16();
        (s, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
    }

    /// Polls the score until it is published.
    pub async fn wait_score(&self, id: &str, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (code, body) = self.score_raw(id, None).await;
            if code == 200 {
                return serde_json::from_slice(&body).expect("score json");
            }
            assert!(
                start.elapsed() < within,
                "no score for {id} within {within:?} (last {code}: {})",
                String::from_utf8_lossy(&body)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Downloads the four bundle files into `dir`.
    pub async fn download_bundle(&self, id: &str, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("bundle dir");
        for f in [
            "score.json",
            "evidence.tar.zst",
            "manifest.json",
            "verdict.sig",
        ] {
            let (code, bytes) = self.score_raw(id, Some(f)).await;
            assert_eq!(code, 200, "download {f} of {id}");
            std::fs::write(dir.join(f), bytes).expect("write bundle file");
        }
        dir.to_path_buf()
    }
}

/// Verifies a downloaded bundle with the platform's verdict keys.
pub fn verify(data_dir: &Path, dir: &Path) {
    use forge_evidence::{KeyPurpose, KeySource, Keyring};
    let ring = Keyring::open(data_dir, KeyPurpose::Verdict).expect("verdict keyring");
    let keys = KeySource::from_keyring(&ring).expect("key source");
    forge_evidence::verify_bundle(dir, &keys).expect("bundle verifies");
}

/// Writes a copy of a bundled template with `edit` applied to its YAML text.
pub fn write_template(dir: &Path, bundled_file: &str, edit: impl Fn(String) -> String) {
    let src = format!(
        "{}/../../templates/{bundled_file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&src).expect("bundled template");
    std::fs::create_dir_all(dir).expect("template dir");
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing in {bundled_file}");
    std::fs::write(dir.join(bundled_file), edited).expect("write template");
}
