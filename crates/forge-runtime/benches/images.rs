//! Image benchmark (docs/images.md): the same routed 3-container lab — learner, router, web
//! server on two subnets — on the BusyBox images and on the Debian images (workstation, BIRD 2
//! router, nginx), each brought up N times by the runtime and by the plain `docker` CLI, all
//! four interleaved in one run so they share the machine's state.
//!
//! The runtime's figure is launch → ready, where ready means every container's health probe
//! passed (what `running` means to a learner); the CLI's is until its last `docker run -d`
//! returned (a started container, not a checked one) — so the CLI baseline is the kinder one.
//!
//! `cargo bench -p forge-runtime --bench images` (root; `FORGE_BENCH_N` sets N, default 5).
//! Needs the images built (`forge images build`).

// The forge binary's allocator, so the figures are the platform's own.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use forge_core::ScenarioId;
use forge_core::template::ScenarioTemplate;
use forge_runtime::{DockerRuntime, LabSpec, Runtime};
use forge_testkit::cli_baseline::{CliLab, IMAGES, cleanup as cli_cleanup, summary};
use forge_testkit::sweep;

/// Per container: the fixtures' 384 MiB / 1.5 cores across three, the default PID cap.
const BUSYBOX_CLI: CliLab<'static> = CliLab {
    octet: 214,
    memory: "128m",
    cpus: "0.5",
    pids: "64",
    images: IMAGES,
    tmpfs: &["/run"],
};

/// The Debian lab's containers; the tmpfs mounts their `forge.tmpfs` labels ask the runtime for.
const DEBIAN_CLI: CliLab<'static> = CliLab {
    octet: 215,
    images: [
        "forge/workstation:1",
        "forge/router-bird:1",
        "forge/web-nginx:1",
    ],
    tmpfs: &["/run", "/var/log", "/var/www"],
    ..BUSYBOX_CLI
};

/// Removes whatever the bench created, also when it panics: CLI containers and networks by
/// label, runtime labs by their scenario ids' run prefix.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        cli_cleanup(&self.0);
        let prefix = format!("scn-{}", self.0);
        sweep::block_on_own_thread(move || async move {
            if let Ok(r) = DockerRuntime::connect().await {
                let _ = r.reconcile(&|id: &str| !id.starts_with(&prefix)).await;
            }
        });
    }
}

fn fixture(name: &str) -> ScenarioTemplate {
    let path = format!(
        "{}/tests/fixtures/{name}",
        &*std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")
    );
    forge_core::template::load(&path, &std::fs::read_to_string(&path).unwrap()).expect("fixture")
}

/// Launches `t` as scenario `scn` until ready, then tears it down: (ready, teardown).
async fn runtime_lab(
    rt: &DockerRuntime,
    t: &ScenarioTemplate,
    scn: &ScenarioId,
    run: &str,
) -> (Duration, Duration) {
    let spec = LabSpec::new(scn.clone(), "bench", t.clone())
        .with_label("forge.bench", run)
        .with_label("forge.host", format!("bench-{run}"));
    let t0 = Instant::now();
    let lab = rt.launch(spec).await;
    let ready = t0.elapsed();
    let t1 = Instant::now();
    let down = rt.teardown(scn).await;
    let down_t = t1.elapsed();
    lab.unwrap_or_else(|e| panic!("launch {}: {e}", t.metadata.name));
    down.expect("teardown");
    (ready, down_t)
}

async fn cli(lab: CliLab<'static>, run: &str, i: usize) -> Duration {
    let run = run.to_owned();
    tokio::task::spawn_blocking(move || lab.run(&run, i).0)
        .await
        .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("FORGE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let (busybox, debian) = (
        fixture("netplus-lab.yaml"),
        fixture("netplus-lab-debian.yaml"),
    );
    let _cleanup = Cleanup(run.clone());
    let rt = DockerRuntime::connect().await.expect("docker");
    println!("routed 3-container lab, BusyBox vs Debian images, N = {n}, run {run}\n");

    let mut samples: [Vec<Duration>; 4] = Default::default();
    // Index 0 is a warm-up of each (page cache, the engine's lazily made state).
    for i in 0..=n {
        let scn = |k: usize| -> ScenarioId { format!("scn-{run}{k}{i:05x}").parse().unwrap() };
        let (bb, _) = runtime_lab(&rt, &busybox, &scn(0), &run).await;
        let (deb, _) = runtime_lab(&rt, &debian, &scn(1), &run).await;
        let bb_cli = cli(BUSYBOX_CLI, &run, i).await;
        let deb_cli = cli(DEBIAN_CLI, &run, i).await;
        if i > 0 {
            for (s, d) in samples.iter_mut().zip([bb, deb, bb_cli, deb_cli]) {
                s.push(d);
            }
        }
    }
    let [bb, deb, bb_cli, deb_cli] = samples;
    let (bb50, bb95) = summary("busybox lab, runtime (until healthy)", bb);
    let (deb50, deb95) = summary("debian lab, runtime (until healthy)", deb);
    let (bbc50, _) = summary("busybox lab, docker CLI (until started)", bb_cli);
    let (debc50, _) = summary("debian lab, docker CLI (until started)", deb_cli);
    let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "\ndebian/busybox, runtime: p50 {:.2}x  p95 {:.2}x",
        r(deb50, bb50),
        r(deb95, bb95)
    );
    println!(
        "runtime/CLI p50: busybox {:.2}x  debian {:.2}x   (target <= 0.5x)",
        r(bb50, bbc50),
        r(deb50, debc50)
    );
}
