//! The benches' HTTP client: spawn a lab (the netplus track's default, or a named template),
//! poll its status until it reaches a state, check, submit, and end it. Shared by `spawn.rs`,
//! `modes.rs` and `soak.rs`, each of which uses a subset.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use forge_http::Service;
use forge_lifecycle::platform::Platform;
use serde_json::{Value, json};

/// How long any one lab may take to reach the state a bench waits for.
const WAIT_LIMIT: Duration = Duration::from_secs(180);

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    spawn: String,
    orchestrator: String,
    worker: String,
    token: String,
}

impl Api {
    pub fn new(p: &Platform) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(WAIT_LIMIT)
                .build()
                .expect("http client"),
            spawn: p.url(Service::Spawn),
            orchestrator: p.url(Service::Orchestrator),
            worker: p.url(Service::Worker),
            token: p.mint("demo", &["forge.spawn"], "bench").expect("token"),
        }
    }

    /// `POST /v1/spawn` of `track` (its default template, or `template`); the scenario id.
    pub async fn spawn(&self, track: &str, template: Option<&str>) -> String {
        let mut body = json!({"track": track, "request_id": uuid::Uuid::new_v4().to_string()});
        if let Some(t) = template {
            body["template"] = json!(t);
        }
        let r = self
            .http
            .post(format!("{}/v1/spawn", self.spawn))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("spawn");
        let status = r.status().as_u16();
        let v: Value = r.json().await.expect("spawn body");
        assert_eq!(status, 201, "spawn answered {status}: {v}");
        v["scenario_id"].as_str().expect("scenario_id").to_owned()
    }

    /// Polls `GET /v1/scenarios/{id}` every `poll` until its status is `want`; the time since
    /// `since`, or why it never got there (another final state, or [`WAIT_LIMIT`]).
    pub async fn wait_for(
        &self,
        id: &str,
        want: &str,
        since: Instant,
        poll: Duration,
    ) -> Result<Duration, String> {
        let t0 = Instant::now();
        loop {
            let r = self
                .http
                .get(format!("{}/v1/scenarios/{id}", self.orchestrator))
                .bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| format!("{id}: status: {e}"))?;
            let v: Value = r.json().await.map_err(|e| format!("{id}: status: {e}"))?;
            match v["status"].as_str().unwrap_or_default() {
                s if s == want => return Ok(since.elapsed()),
                "pending" | "creating" | "running" => {}
                other => return Err(format!("{id} ended as {other}: {}", v["error"])),
            }
            if t0.elapsed() > WAIT_LIMIT {
                return Err(format!("{id} not {want} within {WAIT_LIMIT:?}"));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Spawns the netplus track, then polls every 10 ms until running; (id, spawn → running).
    pub async fn spawn_to_running(&self) -> (String, Duration) {
        let t0 = Instant::now();
        let id = self.spawn("netplus", None).await;
        let d = self
            .wait_for(&id, "running", t0, Duration::from_millis(10))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (id, d)
    }

    /// `POST …/check` (200 expected); its body.
    pub async fn check(&self, id: &str) -> Result<Value, String> {
        self.post_worker(id, "check", 200).await
    }

    /// `POST …/submit` (202 expected).
    pub async fn submit(&self, id: &str) -> Result<(), String> {
        self.post_worker(id, "submit", 202).await.map(drop)
    }

    async fn post_worker(&self, id: &str, action: &str, want: u16) -> Result<Value, String> {
        let r = self
            .http
            .post(format!("{}/v1/scenarios/{id}/{action}", self.worker))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("{action} {id}: {e}"))?;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status != want {
            return Err(format!("{action} {id} answered {status}: {v}"));
        }
        Ok(v)
    }

    pub async fn end(&self, id: &str) {
        let r = self
            .http
            .delete(format!("{}/v1/scenarios/{id}", self.orchestrator))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("delete");
        assert_eq!(r.status().as_u16(), 200, "DELETE {id}");
    }
}
