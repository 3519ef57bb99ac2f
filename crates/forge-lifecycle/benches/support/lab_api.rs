//! The benches' HTTP client: spawn the netplus lab and poll its status every 10 ms until it
//! runs, and end it. Shared by `spawn.rs` and `modes.rs`.

use std::time::{Duration, Instant};

use forge_http::Service;
use forge_lifecycle::platform::Platform;
use serde_json::{Value, json};

pub struct Api {
    http: reqwest::Client,
    spawn: String,
    orchestrator: String,
    token: String,
}

impl Api {
    pub fn new(p: &Platform) -> Self {
        Self {
            http: reqwest::Client::new(),
            spawn: p.url(Service::Spawn),
            orchestrator: p.url(Service::Orchestrator),
            token: p.mint("demo", &["forge.spawn"], "bench").expect("token"),
        }
    }

    /// Spawn, then poll until running; (id, spawn → running).
    pub async fn spawn_to_running(&self) -> (String, Duration) {
        let t0 = Instant::now();
        let r = self
            .http
            .post(format!("{}/v1/spawn", self.spawn))
            .bearer_auth(&self.token)
            .json(&json!({"track": "netplus", "request_id": uuid::Uuid::new_v4().to_string()}))
            .send()
            .await
            .expect("spawn");
        assert_eq!(r.status().as_u16(), 201);
        let v: Value = r.json().await.expect("spawn body");
        let id = v["scenario_id"].as_str().unwrap().to_owned();
        loop {
            let v: Value = self
                .http
                .get(format!("{}/v1/scenarios/{id}", self.orchestrator))
                .bearer_auth(&self.token)
                .send()
                .await
                .expect("status")
                .json()
                .await
                .expect("status body");
            match v["status"].as_str().unwrap_or_default() {
                "running" => return (id, t0.elapsed()),
                "pending" | "creating" => {}
                other => panic!("{id} ended as {other}: {v}"),
            }
            assert!(t0.elapsed() < Duration::from_secs(180), "{id} never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
