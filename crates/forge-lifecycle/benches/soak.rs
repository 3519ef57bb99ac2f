//! Soak benchmark (docs/design.md §8: "100 concurrent labs … all running within 20 s (pools
//! off), all torn down with zero leftovers"): SOAK_LABS labs (default 100) of the three tracks
//! spawned at once through the HTTP API on the local Docker Engine, each taken through
//! spawn → running → check → submit → scored and gone (`completed`, which the orchestrator sets
//! only after the lab is removed).
//!
//! The labs are BusyBox ones, cycled per track: netplus-routing (3 containers), ccna-interfaces
//! (3), and cissp-file-integrity (2) / cissp-segmentation (5) in turn: about 3.15 containers a
//! lab, 315 for 100 labs.
//!
//! Reports the time until all labs run (PASS/FAIL against 20 s), spawn → running p50/p95, check
//! latency p50/p95 (each lab checks as soon as it runs, so under the load of the others'
//! launches), teardown (first submit until every lab is gone), the process's peak RSS (VmHWM:
//! the platform runs in this process) and leftovers (containers with the run's label, fabric
//! namespaces of the run's scenarios; must be 0). The baseline, in the same run: the plain
//! `docker` CLI starting the same number of labs' containers in parallel (per lab one internal
//! network and three `docker run -d` at once, SOAK_CLI_WORKERS labs at a time).
//!
//! `cargo bench -p forge-lifecycle --bench soak` (root). Knobs: SOAK_LABS (default 100),
//! SOAK_PARALLEL (the host's `max_parallel_launches`, default the platform's own, 8: at 100,
//! health probes waiting behind every other lab's launch time out), SOAK_POLL_MS (status polling
//! of each lab, default 100), SOAK_CLI_WORKERS (default 100). A drop guard removes whatever the
//! run left, also on a panic.

// The forge binary's allocator, so the figures are the platform's own.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forge_core::ScenarioId;
use forge_lifecycle::platform::{Backends, Platform, PlatformConfig, Ports};
use forge_testkit::cli_baseline::{CliLab, IMAGES, cleanup as cli_cleanup, ms, summary};
use forge_testkit::sweep;

#[path = "support/lab_api.rs"]
mod lab_api;

use lab_api::Api;

const LABEL: &str = "forge.test_run";
/// docs/design.md §8: every lab running within this long of the first spawn.
const TARGET: Duration = Duration::from_secs(20);

/// Per container: a 256 MiB / 1 core lab split across three, the default PID cap.
const CLI: CliLab<'static> = CliLab {
    octet: 220,
    memory: "85m",
    cpus: "0.33",
    pids: "128",
    images: IMAGES,
    tmpfs: &["/run"],
};

/// (track, template) of lab `i`: the tracks in turn, cissp alternating a 2- and a 5-container
/// lab.
fn template_of(i: usize) -> (&'static str, &'static str) {
    match (i % 3, (i / 3) % 2) {
        (0, _) => ("netplus", "netplus-routing-lab"),
        (1, _) => ("ccna", "ccna-interfaces-lab"),
        (_, 0) => ("cissp", "cissp-file-integrity-lab"),
        _ => ("cissp", "cissp-segmentation-lab"),
    }
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Removes everything of the run on drop: CLI containers and networks, the platform's labs by
/// label and by the ids spawned (a namespace whose containers are gone has no label), then any
/// container still carrying the label.
struct Cleanup {
    run: String,
    ids: Arc<Mutex<Vec<String>>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        cli_cleanup(&self.run);
        let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        sweep::teardown_labs(Some((LABEL, &self.run)), ids);
        sweep::remove_labelled_containers(&format!("{LABEL}={}", self.run));
    }
}

/// What one lab went through.
struct LabRun {
    to_running: Duration,
    /// When it was seen running, from the start of the spawns.
    running_at: Duration,
    check: Duration,
    /// When it was seen gone, from the first submit.
    gone_at: Duration,
}

/// The kernel's high-water mark of this process's resident memory.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Containers labelled with the run, and fabric namespaces of its scenarios.
fn leftovers(run: &str, ids: &[String]) -> (usize, usize) {
    let filter = format!("label={LABEL}={run}");
    let containers = sweep::docker_ids(&["ps", "-aq", "--filter", &filter])
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    let ours: Vec<String> = ids
        .iter()
        .filter_map(|id| id.parse::<ScenarioId>().ok())
        .map(|id| id.network_id())
        .collect();
    let namespaces = forge_runtime::list_namespaces()
        .iter()
        .filter(|n| ours.contains(n))
        .count();
    (containers, namespaces)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let labs = knob("SOAK_LABS", 100).max(1);
    let parallel = knob(
        "SOAK_PARALLEL",
        PlatformConfig::new(std::path::PathBuf::new())
            .orchestrator
            .max_parallel_launches,
    )
    .max(1);
    let poll = Duration::from_millis(knob("SOAK_POLL_MS", 100) as u64);
    let cli_workers = knob("SOAK_CLI_WORKERS", 100).max(1);
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let _cleanup = Cleanup {
        run: run.clone(),
        ids: ids.clone(),
    };
    let containers: usize = (0..labs)
        .map(|i| match template_of(i).1 {
            "cissp-file-integrity-lab" => 2,
            "cissp-segmentation-lab" => 5,
            _ => 3,
        })
        .sum();
    println!(
        "soak: {labs} labs ({containers} containers) of 3 tracks at once, pools off, \
         max_parallel_launches {parallel}, status polled every {poll:?}, run {run}\n"
    );

    // Baseline first, on an idle engine like the platform's run gets: the CLI starting as
    // many labs' containers (3 a lab) in parallel, then removing them.
    let (cli_wall, cli_down) = tokio::task::spawn_blocking({
        let run = run.clone();
        move || {
            let (wall, ups) = CLI.up_many(&run, 0, labs, cli_workers);
            let t = Instant::now();
            std::thread::scope(|s| {
                for up in ups {
                    s.spawn(move || up.down());
                }
            });
            (wall, t.elapsed())
        }
    })
    .await
    .expect("cli baseline");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = PlatformConfig::new(dir.path().to_path_buf());
    cfg.ports = Ports::ephemeral();
    cfg.orchestrator.labels.insert(LABEL.into(), run.clone());
    cfg.orchestrator.host.capacity = u32::try_from(labs).unwrap_or(u32::MAX).max(20);
    cfg.orchestrator.max_parallel_launches = parallel;
    cfg.supervisor.label_filters = vec![format!("{LABEL}={run}")];
    let backends = Backends::embedded(&cfg).await.expect("backends");
    let platform = Platform::start(cfg, backends)
        .await
        .expect("platform starts");
    let api = Api::new(&platform);
    let rss_idle = peak_rss();

    // Warm-up, not measured: first-use costs (page cache, the engine's lazy setup).
    let (id, _) = api.spawn_to_running().await;
    ids.lock().unwrap().push(id.clone());
    api.end(&id).await;

    let all_running = Arc::new(tokio::sync::Barrier::new(labs));
    let submitted: Arc<tokio::sync::OnceCell<Instant>> = Arc::default();
    let t0 = Instant::now();
    let tasks = (0..labs).map(|i| {
        let (api, ids, all_running, submitted) = (
            api.clone(),
            ids.clone(),
            all_running.clone(),
            submitted.clone(),
        );
        async move {
            let (track, template) = template_of(i);
            let t = Instant::now();
            let id = api.spawn(track, Some(template)).await;
            ids.lock().unwrap().push(id.clone());
            let ran = api.wait_for(&id, "running", t, poll).await;
            let running_at = t0.elapsed();
            let checked = match &ran {
                Ok(_) => {
                    let c = Instant::now();
                    api.check(&id).await.map(|_| c.elapsed())
                }
                Err(e) => Err(e.clone()),
            };
            // Teardown is measured with every lab up: the submits go out together.
            all_running.wait().await;
            let since = *submitted.get_or_init(|| async { Instant::now() }).await;
            let (to_running, check) = (ran?, checked?);
            api.submit(&id).await?;
            let gone_at = api.wait_for(&id, "completed", since, poll).await?;
            Ok::<_, String>(LabRun {
                to_running,
                running_at,
                check,
                gone_at,
            })
        }
    });
    let results = futures::future::join_all(tasks).await;
    let rss_peak = peak_rss();
    platform.shutdown().await;

    let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let ok: Vec<LabRun> = ok.into_iter().filter_map(Result::ok).collect();
    for e in failed.iter().filter_map(|r| r.as_ref().err()).take(5) {
        println!("lab failed: {e}");
    }
    let ids = ids.lock().unwrap().clone();
    let (left_containers, left_namespaces) = leftovers(&run, &ids);

    let all_up = ok.iter().map(|r| r.running_at).max().unwrap_or_default();
    let teardown = ok.iter().map(|r| r.gone_at).max().unwrap_or_default();
    println!(
        "labs completed the whole flow           {} of {labs} ({} failed)",
        ok.len(),
        failed.len()
    );
    println!(
        "all {labs} running after                   {}   docker CLI parallel: {}   ratio {:.2}x",
        ms(all_up),
        ms(cli_wall),
        all_up.as_secs_f64() / cli_wall.as_secs_f64()
    );
    summary(
        "spawn -> running",
        ok.iter().map(|r| r.to_running).collect(),
    );
    summary(
        "check (under the launches' load)",
        ok.iter().map(|r| r.check).collect(),
    );
    println!(
        "teardown (submit -> all gone)           {}   docker CLI rm -f: {}   ratio {:.2}x",
        ms(teardown),
        ms(cli_down),
        teardown.as_secs_f64() / cli_down.as_secs_f64()
    );
    println!("peak RSS (VmHWM)                         {rss_peak}   (after start: {rss_idle})");
    println!(
        "leftovers                                {left_containers} containers, \
         {left_namespaces} namespaces"
    );
    let pass =
        failed.is_empty() && all_up <= TARGET && left_containers == 0 && left_namespaces == 0;
    println!(
        "\nall {labs} running within {TARGET:?}, no failures, zero leftovers: {}",
        if pass { "PASS" } else { "FAIL" }
    );
}
