//! The HTTP client both lifecycle test binaries drive a platform with: one bearer token, the
//! service URLs, and helpers that wait for states and scores and download bundles.

// Shared by both test binaries, each of which uses a subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use forge_http::Service;
use forge_lifecycle::platform::Platform;
use serde_json::{Value, json};

/// Roles of a learner's token.
pub const LEARNER_ROLES: &[&str] = &["forge.spawn"];

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
            spawn: p.url(Service::Spawn),
            orchestrator: p.url(Service::Orchestrator),
            worker: p.url(Service::Worker),
            scoreboard: p.url(Service::Scoreboard),
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
    pub async fn spawn(&self, body: Value) -> String {
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
        v["scenario_id"].as_str().expect("scenario_id").to_owned()
    }

    pub async fn spawn_track(&self, track: &str) -> String {
        let body = json!({"track": track, "request_id": uuid::Uuid::new_v4().to_string()});
        self.spawn(body).await
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
