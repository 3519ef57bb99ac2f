//! Embedded versus distributed mode in one run (issue 11): the netplus lab spawned through the
//! HTTP API until `running` (`POST /v1/spawn`, then `GET /v1/scenarios/{id}` every 10 ms), N
//! times one after another and 10 at a time, first on the embedded backends (SQLite, the
//! in-process bus, the evidence directory), then on the distributed ones (NATS JetStream,
//! PostgreSQL and SeaweedFS S3, real servers started for the run on loopback). Both on the
//! local Docker Engine; the embedded figures are the baseline the distributed ratio is against.
//!
//! `cargo bench -p forge-lifecycle --bench modes` (root; `FORGE_BENCH_N` sets N, default 10).
//! Every lab is ended with `DELETE`; a drop guard removes whatever is left, also on a panic.

// The forge binary's allocator, so the figures are the platform's own.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use forge_lifecycle::platform::{Backends, Platform, PlatformConfig, Ports};
use forge_testkit::cli_baseline::{ms, summary};
use forge_testkit::servers::{NatsServer, TestDatabase, seaweed};
use forge_testkit::sweep;

#[path = "support/lab_api.rs"]
mod lab_api;

use lab_api::Api;

const LABEL: &str = "forge.test_run";
const CONCURRENT: usize = 10;

/// Removes every lab of the run on drop.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        sweep::teardown_labs(Some((LABEL, &self.0)), []);
        sweep::remove_labelled_containers(&format!("{LABEL}={}", self.0));
    }
}

/// Spawn → running times of one platform: N in sequence, then 10 at once (and its wall clock).
async fn measure(p: &Platform, n: usize) -> (Vec<Duration>, Vec<Duration>, Duration) {
    let api = Api::new(p);
    // Warm-up, not measured.
    let (id, _) = api.spawn_to_running().await;
    api.end(&id).await;
    let mut seq = Vec::new();
    for _ in 0..n {
        let (id, d) = api.spawn_to_running().await;
        api.end(&id).await;
        seq.push(d);
    }
    let t = Instant::now();
    let labs = futures::future::join_all((0..CONCURRENT).map(|_| api.spawn_to_running())).await;
    let wall = t.elapsed();
    futures::future::join_all(labs.iter().map(|(id, _)| api.end(id))).await;
    (seq, labs.into_iter().map(|(_, d)| d).collect(), wall)
}

fn config(dir: &std::path::Path, run: &str) -> PlatformConfig {
    let mut cfg = PlatformConfig::new(dir.to_path_buf());
    cfg.ports = Ports::ephemeral();
    cfg.orchestrator.labels.insert(LABEL.into(), run.to_owned());
    cfg.supervisor.label_filters = vec![format!("{LABEL}={run}")];
    cfg
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::var("FORGE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 60);
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let _cleanup = Cleanup(run.clone());
    println!(
        "netplus lab (3 containers), spawn API -> running: embedded vs distributed mode, \
         N = {n} sequential, {CONCURRENT} concurrent, run {run}\n"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &run);
    let embedded = Platform::start(
        cfg.clone(),
        Backends::embedded(&cfg).await.expect("backends"),
    )
    .await
    .expect("embedded platform");
    let (e_seq, e_conc, e_wall) = measure(&embedded, n).await;
    embedded.shutdown().await;

    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let s3 = seaweed::shared().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), &run);
    cfg.nats_url = Some(nats.url());
    cfg.database_url = Some(db.url());
    cfg.s3 = Some(s3.config(&seaweed::fresh_bucket()));
    let distributed = Platform::start(
        cfg.clone(),
        Backends::embedded(&cfg).await.expect("backends"),
    )
    .await
    .expect("distributed platform");
    let (d_seq, d_conc, d_wall) = measure(&distributed, n).await;
    distributed.shutdown().await;

    println!("sequential (N = {n})");
    let (e50, e95) = summary("  embedded (SQLite, in-process bus)", e_seq);
    let (d50, d95) = summary("  distributed (NATS, PostgreSQL, S3)", d_seq);
    println!(
        "  ratio distributed/embedded                 p50 {:.2}x   p95 {:.2}x\n",
        ratio(d50, e50),
        ratio(d95, e95)
    );
    println!("{CONCURRENT} at a time");
    let (e50, e95) = summary("  embedded (SQLite, in-process bus)", e_conc);
    let (d50, d95) = summary("  distributed (NATS, PostgreSQL, S3)", d_conc);
    println!(
        "  ratio distributed/embedded                 p50 {:.2}x   p95 {:.2}x",
        ratio(d50, e50),
        ratio(d95, e95)
    );
    println!(
        "  wall clock for all {CONCURRENT}                      embedded {}   distributed {}",
        ms(e_wall),
        ms(d_wall)
    );
}
