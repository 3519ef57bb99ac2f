//! Spawn benchmark (issue 7): the netplus lab spawned through the platform's HTTP API
//! (`POST /v1/spawn`, then `GET /v1/scenarios/{id}` every 20 ms until `running`), N times
//! sequentially and 10 at a time, next to the plain `docker` CLI building the same 3-container
//! lab (2 internal networks with per-run subnets, 3 hardened `docker run -d`, one
//! `docker network connect`) in the same run.
//!
//! `cargo bench -p forge-lifecycle --bench spawn` (root; `FORGE_BENCH_N` sets N, default 5).
//! Every lab is ended with `DELETE`; a drop guard removes whatever is left (labs by the run's
//! label, CLI containers and networks by theirs), also on a panic.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use forge_core::ScenarioId;
use forge_lifecycle::platform::{Platform, PlatformConfig, Ports};
use forge_runtime::{DockerRuntime, Runtime};
use serde_json::{Value, json};

const LABEL: &str = "forge.test_run";
const CONCURRENT: usize = 10;
const IMAGES: [&str; 3] = ["forge/learner:1", "forge/router:1", "forge/web:1"];

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:8.1} ms", d.as_secs_f64() * 1000.0)
}

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let (p50, p95) = (pct(&v, 0.5), pct(&v, 0.95));
    println!("{name:<40} p50 {}   p95 {}", ms(p50), ms(p95));
    (p50, p95)
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn docker(args: &[&str]) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker cli");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same lab with the docker CLI (slot `i` picks its private subnets from 10.250.0.0/16);
/// returns the time until all three containers run, then removes it.
fn cli_lab(run: &str, i: usize) -> Duration {
    let (a, b) = (
        format!("10.250.{}.0/24", 2 * i),
        format!("10.250.{}.0/24", 2 * i + 1),
    );
    let ip = |net: &str, host: u8| net.replace(".0/24", &format!(".{host}"));
    let (na, nb) = (
        format!("forgespawnbench_{run}_{i}_a"),
        format!("forgespawnbench_{run}_{i}_b"),
    );
    let label = format!("forge.bench={run}");
    let names: Vec<String> = ["learner", "router", "web"]
        .iter()
        .map(|n| format!("forgespawnbench_{run}_{i}_{n}"))
        .collect();
    let hard = || {
        vec![
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges:true",
            "--read-only",
            "--tmpfs",
            "/tmp:size=64m",
            "--memory",
            "85m",
            "--cpus",
            "0.33",
            "--pids-limit",
            "128",
            "--restart",
            "no",
        ]
    };
    let t0 = Instant::now();
    // The router needs .1 on both subnets, so the bridges take .254.
    let (gw_a, gw_b) = (ip(&a, 254), ip(&b, 254));
    for (net, gw, name) in [(&a, &gw_a, &na), (&b, &gw_b, &nb)] {
        docker(&[
            "network",
            "create",
            "--internal",
            "--subnet",
            net,
            "--gateway",
            gw,
            "--label",
            &label,
            name,
        ]);
    }
    let (ip_l, ip_ra, ip_rb, ip_w) = (ip(&a, 10), ip(&a, 1), ip(&b, 1), ip(&b, 10));
    let run_args = |idx: usize, net: &str, addr: &str| {
        let mut v: Vec<String> = [
            "run",
            "-d",
            "--name",
            &names[idx],
            "--label",
            &label,
            "--network",
            net,
            "--ip",
            addr,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(hard().into_iter().map(str::to_owned));
        v
    };
    let mut learner = run_args(0, &na, &ip_l);
    learner.extend(["--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW", IMAGES[0]].map(String::from));
    let mut router = run_args(1, &na, &ip_ra);
    router.extend(
        [
            "--cap-add",
            "NET_ADMIN",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            IMAGES[1],
        ]
        .map(String::from),
    );
    let mut web = run_args(2, &nb, &ip_w);
    web.extend(
        [
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=0",
            IMAGES[2],
        ]
        .map(String::from),
    );
    docker(&argv(&learner));
    docker(&argv(&router));
    docker(&["network", "connect", "--ip", &ip_rb, &nb, &names[1]]);
    docker(&argv(&web));
    let ready = t0.elapsed();
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    docker(&rm);
    docker(&["network", "rm", &na, &nb]);
    ready
}

/// Removes everything of the run on drop: CLI containers and networks by label, platform labs
/// by the run label through the runtime's teardown (containers and namespace).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=forge.bench={}", self.0);
        for kind in [["ps", "-aq"], ["network", "ls"]] {
            let mut args: Vec<&str> = kind.to_vec();
            args.extend(["--filter", &filter, "-q"]);
            let out = Command::new("docker")
                .args(&args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            for id in out.unwrap_or_default().split_whitespace() {
                let rm = if kind[0] == "ps" {
                    vec!["rm", "-f", id]
                } else {
                    vec!["network", "rm", id]
                };
                let _ = Command::new("docker").args(&rm).output();
            }
        }
        let run = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(r) = DockerRuntime::connect().await
                    && let Ok(labs) = r.list_labs().await
                {
                    let ids: BTreeSet<String> = labs
                        .into_iter()
                        .filter(|l| l.labels.get(LABEL) == Some(&run))
                        .map(|l| l.scenario_id)
                        .collect();
                    for id in ids {
                        if let Ok(sid) = id.parse::<ScenarioId>() {
                            let _ = r.teardown(&sid).await;
                        }
                    }
                }
            });
            let out = Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("label={LABEL}={run}")])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in out.split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        })
        .join();
    }
}

struct Api {
    http: reqwest::Client,
    spawn: String,
    orchestrator: String,
    token: String,
}

impl Api {
    /// POST /v1/spawn, then polls every 20 ms until running; returns (id, spawn → running).
    async fn spawn_to_running(&self) -> (String, Duration) {
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
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn end(&self, id: &str) {
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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::var("FORGE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 60);
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let _cleanup = Cleanup(run.clone());
    let dir = tempfile::tempdir().expect("tempdir");

    let mut cfg = PlatformConfig::new(dir.path().to_path_buf());
    cfg.ports = Ports::EPHEMERAL;
    cfg.orchestrator.labels.insert(LABEL.into(), run.clone());
    cfg.supervisor.label_filters = vec![format!("{LABEL}={run}")];
    let platform = Platform::start(cfg).await.expect("platform starts");
    let api = Api {
        http: reqwest::Client::new(),
        spawn: platform.url("spawn"),
        orchestrator: platform.url("orchestrator"),
        token: platform
            .mint("demo", &["forge.spawn"], "bench")
            .expect("token"),
    };
    println!(
        "netplus lab (3 containers): spawn API -> running vs docker CLI, N = {n} sequential, \
         {CONCURRENT} concurrent, run {run}\n"
    );

    // Warm-up, not measured: first-use costs (page cache, the engine's lazy setup).
    let (id, _) = api.spawn_to_running().await;
    api.end(&id).await;
    let _ = cli_lab(&run, 0);

    let mut seq = Vec::new();
    let mut cli_seq = Vec::new();
    for i in 0..n {
        let (id, d) = api.spawn_to_running().await;
        api.end(&id).await;
        seq.push(d);
        cli_seq.push(cli_lab(&run, i + 1));
    }

    let t = Instant::now();
    let labs = futures::future::join_all((0..CONCURRENT).map(|_| api.spawn_to_running())).await;
    let api_wall = t.elapsed();
    let conc: Vec<Duration> = labs.iter().map(|(_, d)| *d).collect();
    futures::future::join_all(labs.iter().map(|(id, _)| api.end(id))).await;

    let t = Instant::now();
    let run2 = run.clone();
    let cli_conc: Vec<Duration> = tokio::task::spawn_blocking(move || {
        let handles: Vec<_> = (0..CONCURRENT)
            .map(|i| {
                let r = run2.clone();
                std::thread::spawn(move || cli_lab(&r, 64 + i))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
    .await
    .unwrap();
    let cli_wall = t.elapsed();

    println!("sequential (N = {n})");
    let (a50, a95) = summary("  spawn API -> running", seq);
    let (c50, c95) = summary("  docker CLI baseline", cli_seq);
    println!(
        "  ratio API/CLI                          p50 {:.2}x   p95 {:.2}x\n",
        a50.as_secs_f64() / c50.as_secs_f64(),
        a95.as_secs_f64() / c95.as_secs_f64()
    );
    println!("{CONCURRENT} at a time");
    let (a50, a95) = summary("  spawn API -> running", conc);
    let (c50, c95) = summary("  docker CLI baseline", cli_conc);
    println!(
        "  ratio API/CLI                          p50 {:.2}x   p95 {:.2}x",
        a50.as_secs_f64() / c50.as_secs_f64(),
        a95.as_secs_f64() / c95.as_secs_f64()
    );
    println!(
        "  wall clock for all {CONCURRENT}                   API {}   CLI {}",
        ms(api_wall),
        ms(cli_wall)
    );

    platform.shutdown().await;
}
