//! Launch benchmark (design.md §8): the 3-container netplus lab brought up N times by the
//! runtime (fabric namespace + parallel create/start + netlink plumbing + setup) and by the
//! plain `docker` CLI (2 internal networks with per-run subnets, 3 `docker run -d` with the
//! same hardening flags, `docker network connect` for the router), side by side in one run.
//!
//! `cargo bench -p forge-runtime --bench launch` (root; `FORGE_BENCH_N` sets N, default 10).
//! Prints launch→ready p50/p95, teardown p50/p95, the ratio, and the runtime's phase breakdown.

use std::process::Command;
use std::time::{Duration, Instant};

use forge_core::ScenarioId;
use forge_runtime::{DockerRuntime, LabSpec, LaunchTimings, Runtime};

const IMAGES: [&str; 3] = ["forge/learner:1", "forge/router:1", "forge/web:1"];

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:7.1} ms", d.as_secs_f64() * 1000.0)
}

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let (p50, p95) = (pct(&v, 0.5), pct(&v, 0.95));
    println!("{name:<28} p50 {}   p95 {}", ms(p50), ms(p95));
    (p50, p95)
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

/// The same lab with the docker CLI; returns (ready, teardown) durations.
fn cli_lab(run: &str, i: usize) -> (Duration, Duration) {
    let (a, b) = (
        format!("10.213.{}.0/24", 2 * i),
        format!("10.213.{}.0/24", 2 * i + 1),
    );
    let ip = |net: &str, host: u8| net.replace(".0/24", &format!(".{host}"));
    let (na, nb) = (
        format!("forgebench_{run}_{i}_a"),
        format!("forgebench_{run}_{i}_b"),
    );
    let label = format!("forge.bench={run}");
    let names: Vec<String> = ["learner", "router", "web"]
        .iter()
        .map(|n| format!("forgebench_{run}_{i}_{n}"))
        .collect();
    let hard = |mem: &'static str| {
        vec![
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges:true",
            "--read-only",
            "--tmpfs",
            "/tmp:size=64m",
            "--memory",
            mem,
            "--cpus",
            "0.5",
            "--pids-limit",
            "64",
            "--restart",
            "no",
        ]
    };
    let t0 = Instant::now();
    // Docker takes .1 as the bridge's own address unless told otherwise; the lab needs .1 for
    // the router, so the bridge gets .254.
    let (gw_a, gw_b) = (ip(&a, 254), ip(&b, 254));
    docker(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        &a,
        "--gateway",
        &gw_a,
        "--label",
        &label,
        &na,
    ]);
    docker(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        &b,
        "--gateway",
        &gw_b,
        "--label",
        &label,
        &nb,
    ]);
    let (ip_l, ip_ra, ip_rb, ip_w) = (ip(&a, 10), ip(&a, 1), ip(&b, 1), ip(&b, 10));
    let mut learner = vec![
        "run",
        "-d",
        "--name",
        &names[0],
        "--label",
        &label,
        "--network",
        &na,
        "--ip",
        &ip_l,
    ];
    learner.extend(hard("128m"));
    learner.extend(["--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW", IMAGES[0]]);
    docker(&learner);
    let mut router = vec![
        "run",
        "-d",
        "--name",
        &names[1],
        "--label",
        &label,
        "--network",
        &na,
        "--ip",
        &ip_ra,
    ];
    router.extend(hard("128m"));
    router.extend([
        "--cap-add",
        "NET_ADMIN",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        IMAGES[1],
    ]);
    docker(&router);
    docker(&["network", "connect", "--ip", &ip_rb, &nb, &names[1]]);
    let mut web = vec![
        "run",
        "-d",
        "--name",
        &names[2],
        "--label",
        &label,
        "--network",
        &nb,
        "--ip",
        &ip_w,
    ];
    web.extend(hard("128m"));
    web.extend([
        "--sysctl",
        "net.ipv4.ip_unprivileged_port_start=0",
        IMAGES[2],
    ]);
    docker(&web);
    let ready = t0.elapsed();
    let t1 = Instant::now();
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    docker(&rm);
    docker(&["network", "rm", &na, &nb]);
    (ready, t1.elapsed())
}

fn cli_cleanup(run: &str) {
    let filter = format!("label=forge.bench={run}");
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
}

/// Removes whatever the bench created, also when it panics: CLI containers and networks by
/// label, runtime labs through the runtime (their scenario ids carry the run id).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        cli_cleanup(&self.0);
        let run = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(r) = DockerRuntime::connect().await {
                    let prefix = format!("scn-{run}");
                    let _ = r.reconcile(&|id: &str| !id.starts_with(&prefix)).await;
                }
            });
        })
        .join();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let n: usize = std::env::var("FORGE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let path = format!(
        "{}/tests/fixtures/netplus-lab.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let t = forge_core::template::load(&path, &std::fs::read_to_string(&path).unwrap())
        .expect("fixture");
    let _cleanup = Cleanup(run.clone());
    let rt = DockerRuntime::connect().await.expect("docker");
    rt.ensure_images(&IMAGES, false).await.expect("images");
    println!("netplus 3-container lab, N = {n} (runtime and docker CLI interleaved), run {run}\n");

    let (mut rt_ready, mut rt_down, mut cli_ready, mut cli_down) = (vec![], vec![], vec![], vec![]);
    let mut phases: Vec<LaunchTimings> = Vec::new();
    // One warm-up of each so first-use costs (image layers in page cache, docker's lazily
    // created state) do not land in either sample.
    for i in 0..=n {
        let scn: ScenarioId = format!("scn-{run}{i:06x}").parse().unwrap();
        let spec =
            LabSpec::new(scn.clone(), "bench", t.clone()).with_label("forge.bench", run.as_str());
        let t0 = Instant::now();
        let lab = rt.launch(spec).await;
        let ready = t0.elapsed();
        let t1 = Instant::now();
        let down = rt.teardown(&scn).await;
        let down_t = t1.elapsed();
        let lab = lab.expect("launch");
        down.expect("teardown");
        let (c_ready, c_down) = tokio::task::spawn_blocking({
            let run = run.clone();
            move || cli_lab(&run, i)
        })
        .await
        .unwrap();
        if i > 0 {
            rt_ready.push(ready);
            rt_down.push(down_t);
            phases.push(lab.timings);
            cli_ready.push(c_ready);
            cli_down.push(c_down);
        }
    }

    let (rt50, rt95) = summary("runtime launch->ready", rt_ready);
    let (cli50, cli95) = summary("docker CLI launch->ready", cli_ready);
    let (td50, _) = summary("runtime teardown", rt_down);
    let (ctd50, _) = summary("docker CLI teardown", cli_down);
    println!(
        "\nratio runtime/CLI launch: p50 {:.2}x  p95 {:.2}x   (target <= 0.5x)   teardown p50 {:.2}x",
        rt50.as_secs_f64() / cli50.as_secs_f64(),
        rt95.as_secs_f64() / cli95.as_secs_f64(),
        td50.as_secs_f64() / ctd50.as_secs_f64()
    );
    let avg = |f: fn(&LaunchTimings) -> Duration| {
        ms(phases.iter().map(f).sum::<Duration>() / phases.len().max(1) as u32)
    };
    println!("\nruntime phases, mean time from launch start until the phase finished:");
    println!("  images checked      {}", avg(|t| t.images_checked));
    println!(
        "  fabric ready        {}  (namespace + bridges, concurrent with containers)",
        avg(|t| t.fabric_ready)
    );
    println!("  containers created  {}", avg(|t| t.containers_created));
    println!("  containers started  {}", avg(|t| t.containers_started));
    println!("  links plumbed       {}", avg(|t| t.links_plumbed));
    println!("  setup done (ready)  {}", avg(|t| t.setup_done));
}
