//! Warm-pool benchmark (docs/design.md §8: a pool hit runs within 5 ms at the API): the netplus
//! track's default lab spawned with `POST /v1/spawn?wait=…` from a full warm pool, next to the
//! same lab spawned cold (an identical copy of the template under another name, which has no
//! pool) and to `GET /health` (the floor of one request), in the same run, on the real Docker
//! Engine. A spawn is timed from the request until the answer says `running`.
//!
//! `cargo bench -p forge-lifecycle --bench pool_hit` (root). `FORGE_POOL_HITS` sets how many
//! hits (the pool's size, default 10), `FORGE_BENCH_N` the cold spawns (default 5). Every lab is
//! ended with `DELETE`; a drop guard removes whatever carries the run's label, also on a panic.

// The forge binary's allocator, so the figures are the platform's own.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use forge_catalog::Catalog;
use forge_core::Track;
use forge_http::Service;
use forge_lifecycle::platform::{Backends, Platform, PlatformConfig, Ports};
use forge_testkit::sweep;
use serde_json::{Value, json};

const LABEL: &str = "forge.test_run";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Removes the run's labs on drop (containers and namespaces), also after a panic.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        sweep::teardown_labs(Some((LABEL, &self.0)), []);
        sweep::remove_labelled_containers(&format!("{LABEL}={}", self.0));
    }
}

struct Client {
    http: reqwest::Client,
    spawn: String,
    orchestrator: String,
    learner: String,
    operator: String,
}

impl Client {
    /// `POST /v1/spawn?wait=30s` of `template`: the answer and how long it took.
    async fn spawn(&self, template: &str) -> (Value, Duration) {
        let body = json!({"track": "netplus", "template": template,
                          "request_id": uuid::Uuid::new_v4().to_string()});
        let t = Instant::now();
        let r = self
            .http
            .post(format!("{}/v1/spawn?wait=30s", self.spawn))
            .bearer_auth(&self.learner)
            .json(&body)
            .send()
            .await
            .expect("spawn");
        let status = r.status().as_u16();
        let v: Value = r.json().await.expect("spawn body");
        let took = t.elapsed();
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["status"], "running", "not running within the wait: {v}");
        (v, took)
    }

    async fn end(&self, id: &str) {
        let r = self
            .http
            .delete(format!("{}/v1/scenarios/{id}", self.orchestrator))
            .bearer_auth(&self.learner)
            .send()
            .await
            .expect("end");
        assert_eq!(r.status().as_u16(), 200);
    }

    /// Ready labs of `template`'s pool.
    async fn ready(&self, template: &str) -> u64 {
        let p: Value = self
            .http
            .get(format!("{}/v1/pools", self.orchestrator))
            .bearer_auth(&self.operator)
            .send()
            .await
            .expect("pools")
            .json()
            .await
            .expect("pools body");
        p["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["template"] == template)
            .and_then(|v| v["ready"].as_u64())
            .unwrap_or(0)
    }
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, v: &[Duration]) -> (Duration, Duration) {
    let (p50, p95) = (percentile(v.to_vec(), 0.5), percentile(v.to_vec(), 0.95));
    println!(
        "  {what:<34} p50 {:>9.3} ms   p95 {:>9.3} ms   (n = {})",
        p50.as_secs_f64() * 1e3,
        p95.as_secs_f64() * 1e3,
        v.len()
    );
    (p50, p95)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let hits = env_usize("FORGE_POOL_HITS", 10).clamp(1, 30);
    let colds = env_usize("FORGE_BENCH_N", 5).clamp(1, 30);
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let _cleanup = Cleanup(run.clone());
    let dir = tempfile::tempdir().expect("tempdir");

    // The pooled template, and an identical copy of it under another name without a pool.
    let catalog = Catalog::bundled().expect("catalog");
    let entry = catalog
        .default_for(Track::Netplus)
        .expect("netplus default");
    let pooled = entry.template.metadata.name.clone();
    let cold = format!("{pooled}-cold");
    let file = entry.source.trim_start_matches("bundled:");
    let text = std::fs::read_to_string(format!(
        "{}/../../templates/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("bundled template file");
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(
        templates.join("cold-copy.yaml"),
        text.replacen(&format!("name: {pooled}"), &format!("name: {cold}"), 1)
            .lines()
            .filter(|l| !l.contains("catalog:default"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();

    let mut cfg = PlatformConfig::new(dir.path().join("data"));
    cfg.ports = Ports::ephemeral();
    cfg.template_dir = Some(templates);
    cfg.orchestrator.labels.insert(LABEL.into(), run.clone());
    cfg.orchestrator.host.capacity = (hits + colds + 4) as u32 * 2;
    cfg.orchestrator.pools.insert(pooled.clone(), hits as u32);
    cfg.supervisor.label_filters = vec![format!("{LABEL}={run}")];
    let backends = Backends::embedded(&cfg).await.expect("backends");
    let platform = Platform::start(cfg, backends)
        .await
        .expect("platform starts");
    let c = Client {
        http: reqwest::Client::new(),
        spawn: platform.url(Service::Spawn),
        orchestrator: platform.url(Service::Orchestrator),
        learner: platform.mint("demo", &["forge.spawn"], "bench").unwrap(),
        operator: platform.mint("demo", &["forge.observer"], "ops").unwrap(),
    };
    println!("{pooled}: spawn -> running from a warm pool vs cold, run {run}\n");

    let t = Instant::now();
    while c.ready(&pooled).await < hits as u64 {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the pool did not fill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  pool of {hits} filled in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut health = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = c
            .http
            .get(format!("{}/health", c.spawn))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        health.push(t.elapsed());
    }

    let mut ids = Vec::new();
    let mut hit_times = Vec::new();
    for _ in 0..hits {
        let (v, took) = c.spawn(&pooled).await;
        hit_times.push(took);
        ids.push(v["scenario_id"].as_str().unwrap().to_owned());
    }
    let mut cold_times = Vec::new();
    for _ in 0..colds {
        let (v, took) = c.spawn(&cold).await;
        cold_times.push(took);
        ids.push(v["scenario_id"].as_str().unwrap().to_owned());
    }

    println!();
    let (h50, _) = report("GET /health (floor)", &health);
    let (p50, _) = report("pool hit: spawn -> running", &hit_times);
    let (c50, _) = report("cold: spawn -> running", &cold_times);
    println!(
        "  ratio hit/cold                     p50 {:.4}x   hit/health p50 {:.1}x",
        p50.as_secs_f64() / c50.as_secs_f64(),
        p50.as_secs_f64() / h50.as_secs_f64()
    );
    let ok = p50 <= Duration::from_millis(5);
    println!(
        "  budget: pool hit p50 <= 5 ms       {}",
        if ok { "PASS" } else { "FAIL" }
    );

    for id in &ids {
        c.end(id).await;
    }
    platform.shutdown().await;
}
