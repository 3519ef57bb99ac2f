//! Front-door benchmark (docs/design.md §8): `POST /v1/spawn` (auth, rate limit, idempotency,
//! gate, insert + ledger row, bus publish, audit; lab launch left out — nothing consumes the
//! bus) against `GET /health`, in the same run, over real HTTP/1.1 on loopback (keep-alive
//! connections, one per client), K concurrent clients, a fixed number of requests in all, on
//! both deployment modes' backends: embedded (SQLite, the in-process bus) and distributed
//! (PostgreSQL and NATS JetStream, real servers started for the run on loopback; skipped with a
//! message when they cannot start). The embedded front door runs twice: with a null audit sink
//! (the front door alone, which the budget is about) and with the signed, hash-chained audit
//! log `forge up` writes (`forge_evidence::AuditLog`), to show what auditing adds.
//!
//! Prints requests/s, p50/p99, the ratios, and PASS/FAIL against the budget: at least
//! 5,000 spawns/s with p99 at most 20 ms (embedded, null audit sink; the budget is stated for
//! 32 clients on 2 cores).
//!
//! `cargo bench -p forge-services --bench front_door`
//! Knobs: `FRONT_DOOR_CLIENTS` (default 32), `FRONT_DOOR_REQUESTS` (total per phase, default
//! 20000).

// The forge binary's allocator, so the figures are the platform's own.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_auth::{AuthConfig, LocalIssuer, Verifier};
use forge_bus::{Bus, MemoryBus, NatsBus, NatsBusConfig};
use forge_catalog::Catalog;
use forge_core::audit::{AuditSink, NullAuditSink};
use forge_evidence::{AuditLog, AuditLogConfig, KeyPurpose, Keyring};
use forge_services::spawn::{self, SpawnConfig, SpawnDeps, SpawnState, StaticGate};
use forge_services::tenants::TenantDirectory;
use forge_store::{PgStore, SqliteStore, Store};
use forge_testkit::servers::{NatsServer, TestDatabase};

/// The budget (docs/design.md §8): spawns per second, and p99.
const MIN_RPS: f64 = 5_000.0;
const MAX_P99: Duration = Duration::from_millis(20);

const TENANTS: &str = r#"
[plans.bench]
entitled_tracks = ["netplus", "ccna", "cissp"]
max_active_scenarios = 100000000
rate = { requests_per_second = 1000000000.0, burst = 1000000000 }
prices.netplus = { default = 100 }
prices.ccna = { default = 100 }
prices.cissp = { default = 100 }
[tenants.bench]
plan = "bench"
"#;

struct Stats {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn phase<F, Fut>(clients: usize, total: usize, make: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let make = Arc::new(make);
    let per = total / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            let mut errors = 0;
            for i in 0..per {
                let t = Instant::now();
                if !make(c * per + i).await {
                    errors += 1;
                }
                lat.push(t.elapsed());
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::with_capacity(total);
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Stats {
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    }
}

fn print(name: &str, s: &Stats) {
    println!(
        "{name:<58} {:>8.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}",
        s.rps,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.errors
    );
}

/// PASS when `s` meets the budget with no failed request.
fn verdict(s: &Stats) -> &'static str {
    if s.rps >= MIN_RPS && s.p99 <= MAX_P99 && s.errors == 0 {
        "PASS"
    } else {
        "FAIL"
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

/// One front door on `store` and `bus`, its URL, and the switch that stops it.
async fn front_door(
    dir: &std::path::Path,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    audit: Arc<dyn AuditSink>,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let auth = AuthConfig::local(dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = SpawnState::new(SpawnDeps {
        config: SpawnConfig::default(),
        verifier: Arc::new(Verifier::new(&auth)),
        store,
        bus,
        gate: Arc::new(StaticGate::like_policy()),
        audit,
        catalog: Arc::new(Catalog::bundled().unwrap()),
        tenants: Arc::new(TenantDirectory::from_toml(TENANTS, "bench").unwrap()),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(spawn::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    (format!("http://{addr}"), stop, server)
}

async fn run() {
    forge_auth::install_crypto_provider();
    let clients = env_usize("FRONT_DOOR_CLIENTS", 32);
    let total = env_usize("FRONT_DOOR_REQUESTS", 20_000);
    let dir = tempfile::tempdir().unwrap();
    let token = LocalIssuer::load_or_create(dir.path(), "forge-local", "forge")
        .unwrap()
        .mint(
            "bench",
            &["forge.spawn".into()],
            "bench",
            Duration::from_secs(3600),
        )
        .unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open_in_dir(dir.path()).await.unwrap());
    let (base, stop, server) = front_door(
        dir.path(),
        sqlite.clone(),
        Arc::new(MemoryBus::default()),
        Arc::new(NullAuditSink),
    )
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let health_url = format!("{base}/health");

    let spawn_req = {
        let (client, token) = (client.clone(), token.clone());
        move |base: &str, prefix: &'static str| {
            let url = format!("{base}/v1/spawn");
            let (client, token) = (client.clone(), token.clone());
            move |i: usize| {
                let req = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(format!(
                        r#"{{"track":"netplus","request_id":"{prefix}-{i}"}}"#
                    ));
                async move { req.send().await.map(|r| r.status() == 201).unwrap_or(false) }
            }
        }
    };
    let health_req = {
        let (client, url) = (client.clone(), health_url.clone());
        move |_i: usize| {
            let req = client.get(&url);
            async move { req.send().await.map(|r| r.status() == 200).unwrap_or(false) }
        }
    };

    println!(
        "front door: {clients} concurrent clients, {total} requests per phase, loopback HTTP/1.1"
    );
    // Warm-up: connections, SQLite cache, allocator.
    phase(clients, 2_000.min(total), spawn_req(&base, "warm")).await;
    phase(clients, 2_000.min(total), health_req.clone()).await;

    let health = phase(clients, total, health_req).await;
    let spawns = phase(clients, total, spawn_req(&base, "run")).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    print("GET /health", &health);
    print("POST /v1/spawn, embedded (SQLite, in-process bus)", &spawns);
    println!(
        "ratio spawn/health: {:.2} (throughput), p99 x{:.1}",
        spawns.rps / health.rps,
        spawns.p99.as_secs_f64() / health.p99.as_secs_f64()
    );
    println!(
        "budget (>= {MIN_RPS:.0} spawns/s, p99 <= {} ms, {clients} clients): {}",
        MAX_P99.as_millis(),
        verdict(&spawns)
    );

    // The same embedded front door writing forge up's signed audit log.
    let keys = Keyring::open(dir.path(), KeyPurpose::Audit).unwrap();
    let log = AuditLog::open_following(
        &AuditLog::default_path(dir.path()),
        keys,
        AuditLogConfig::default(),
    )
    .unwrap();
    let (base, stop, server) = front_door(
        dir.path(),
        sqlite,
        Arc::new(MemoryBus::default()),
        Arc::new(log),
    )
    .await;
    phase(clients, 2_000.min(total), spawn_req(&base, "warm-audit")).await;
    let audited = phase(clients, total, spawn_req(&base, "run-audit")).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    print(
        "POST /v1/spawn, embedded + signed audit log (forge up)",
        &audited,
    );
    println!(
        "ratio audited/embedded: {:.2} (throughput), p99 x{:.1}; budget: {}",
        audited.rps / spawns.rps,
        audited.p99.as_secs_f64() / spawns.p99.as_secs_f64(),
        verdict(&audited)
    );

    // The same front door on distributed mode's backends, when their servers can start here.
    let started = tokio::spawn(async {
        let nats = NatsServer::start().await;
        let db = TestDatabase::create().await;
        (nats, db)
    })
    .await;
    let (nats, db) = match started {
        Ok(servers) => servers,
        Err(e) => {
            let why = e
                .try_into_panic()
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                })
                .unwrap_or_else(|| "the servers did not start".to_owned());
            println!(
                "distributed (PostgreSQL, NATS JetStream): skipped, {why} (install nats-server \
                 and PostgreSQL, e.g. scripts/bootstrap.sh, to run it)"
            );
            return;
        }
    };
    let pg: Arc<dyn Store> = Arc::new(PgStore::connect(&db.url()).await.unwrap());
    let jetstream: Arc<dyn Bus> = Arc::new(
        NatsBus::connect(&nats.url(), NatsBusConfig::default())
            .await
            .unwrap(),
    );
    let (base, stop, server) = front_door(dir.path(), pg, jetstream, Arc::new(NullAuditSink)).await;
    phase(clients, 2_000.min(total), spawn_req(&base, "warm")).await;
    let distributed = phase(clients, total, spawn_req(&base, "run")).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    print(
        "POST /v1/spawn, distributed (PostgreSQL, NATS JetStream)",
        &distributed,
    );
    println!(
        "ratio distributed/embedded: {:.2} (throughput), p99 x{:.1}; budget: {}",
        distributed.rps / spawns.rps,
        distributed.p99.as_secs_f64() / spawns.p99.as_secs_f64(),
        verdict(&distributed)
    );
}
