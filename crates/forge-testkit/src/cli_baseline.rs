//! The baselines our launch, spawn and soak benchmarks are measured against: the same
//! 3-container lab (learner, router, web) brought up with plain `docker` commands, then removed.
//!
//! - [`CliLab::up_parallel`] / [`CliLab::run_parallel`]: the fastest a user would write, and the
//!   one docs/design.md §8 sets the target against — one `--internal` network, then the three
//!   hardened `docker run -d` at once (one OS thread each).
//! - [`CliLab::run`]: the lab as a user would script it step by step — two `--internal`
//!   networks with per-run subnets, three `docker run -d` one after another,
//!   `docker network connect` for the router (the earlier baseline, still printed).
//!
//! Plus the percentile helpers the benchmarks print with. Benchmark support only; nothing in the
//! platform calls it.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::run;
use crate::sweep::{docker_ids, remove_labelled_containers};

/// The lab images both the runtime and the baseline use.
pub const IMAGES: [&str; 3] = ["forge/learner:1", "forge/router:1", "forge/web:1"];

/// Resource flags of the baseline's containers (the runtime splits the template's limits the
/// same way).
#[derive(Debug, Clone, Copy)]
pub struct CliLab<'a> {
    /// Second octet of the baseline's private subnets (`10.<octet>.<2i>.0/24`), so concurrent
    /// benchmarks never share an address space.
    pub octet: u8,
    pub memory: &'a str,
    pub cpus: &'a str,
    pub pids: &'a str,
    /// The learner's, the router's and the web server's image ([`IMAGES`] for BusyBox).
    pub images: [&'a str; 3],
    /// Writable directories besides `/tmp` (the runtime gives every container `/run`, and an
    /// image's `forge.tmpfs` label asks for more).
    pub tmpfs: &'a [&'a str],
}

fn docker(args: &[&str]) {
    let mut argv = vec!["docker"];
    argv.extend_from_slice(args);
    run(&argv);
}

/// The `k`-th /24 from `10.<octet>.0.0` on (spilling into the next second octets), so a run of
/// hundreds of labs still gets distinct subnets.
fn subnet(octet: u8, k: usize) -> String {
    let second = usize::from(octet) + k / 256;
    assert!(
        second < 256,
        "too many baseline subnets from 10.{octet}.0.0"
    );
    format!("10.{second}.{}.0/24", k % 256)
}

/// A lab the parallel baseline brought up: what to remove, and how long it took.
#[derive(Debug)]
pub struct CliUp {
    pub ready: Duration,
    names: Vec<String>,
    network: String,
}

impl CliUp {
    /// `docker rm -f` of the three containers, then the network; returns how long it took.
    pub fn down(self) -> Duration {
        let t = Instant::now();
        let mut rm = vec!["rm", "-f"];
        rm.extend(self.names.iter().map(String::as_str));
        docker(&rm);
        docker(&["network", "rm", &self.network]);
        t.elapsed()
    }
}

impl CliLab<'_> {
    /// The hardening flags every baseline container gets (the runtime's, as CLI flags).
    fn hardening(&self, extra_tmpfs: &[String]) -> Vec<String> {
        let mut hard: Vec<String> = [
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges:true",
            "--read-only",
            "--tmpfs",
            "/tmp:size=64m",
            "--memory",
            self.memory,
            "--cpus",
            self.cpus,
            "--pids-limit",
            self.pids,
            "--restart",
            "no",
        ]
        .map(str::to_owned)
        .to_vec();
        for t in extra_tmpfs {
            hard.extend(["--tmpfs".to_owned(), t.clone()]);
        }
        hard
    }

    /// Brings lab `i` of run `run` up the fastest way the CLI allows: one `--internal` network
    /// (`10.<octet>.<2i>.0/24`), then the learner, router and web `docker run -d` at once, each
    /// from its own thread. `ready` is when the last of them returned. Everything carries the
    /// label `forge.bench=<run>` for [`cleanup`].
    pub fn up_parallel(&self, run: &str, i: usize) -> CliUp {
        let net = subnet(self.octet, 2 * i);
        let ip = |host: u8| net.replace(".0/24", &format!(".{host}"));
        let network = format!("forgebench_{run}_{i}_p");
        let label = format!("forge.bench={run}");
        let extra_tmpfs: Vec<String> = self.tmpfs.iter().map(|d| format!("{d}:size=16m")).collect();
        let hard = self.hardening(&extra_tmpfs);
        let t0 = Instant::now();
        docker(&[
            "network",
            "create",
            "--internal",
            "--subnet",
            &net,
            "--gateway",
            &ip(254),
            "--label",
            &label,
            &network,
        ]);
        let specs: [(&str, u8, Vec<&str>); 3] = [
            (
                "learner",
                10,
                vec![
                    "--cap-add",
                    "NET_ADMIN",
                    "--cap-add",
                    "NET_RAW",
                    self.images[0],
                ],
            ),
            (
                "router",
                1,
                vec![
                    "--cap-add",
                    "NET_ADMIN",
                    "--sysctl",
                    "net.ipv4.ip_forward=1",
                    self.images[1],
                ],
            ),
            (
                "web",
                20,
                vec![
                    "--sysctl",
                    "net.ipv4.ip_unprivileged_port_start=0",
                    self.images[2],
                ],
            ),
        ];
        let names: Vec<String> = specs
            .iter()
            .map(|(n, _, _)| format!("forgebench_{run}_{i}_p{n}"))
            .collect();
        thread::scope(|s| {
            for ((_, host, extra), name) in specs.iter().zip(&names) {
                let addr = ip(*host);
                let (hard, label, network) = (&hard, &label, &network);
                s.spawn(move || {
                    let mut args: Vec<&str> = vec![
                        "run",
                        "-d",
                        "--name",
                        name,
                        "--label",
                        label,
                        "--network",
                        network,
                        "--ip",
                        &addr,
                    ];
                    args.extend(hard.iter().map(String::as_str));
                    args.extend(extra.iter().copied());
                    docker(&args);
                });
            }
        });
        CliUp {
            ready: t0.elapsed(),
            names,
            network,
        }
    }

    /// `labs` labs (indexes `first..first + labs`) brought up with [`CliLab::up_parallel`] by
    /// `workers` threads at once; returns the wall clock until the last one was up, and the labs
    /// (for [`CliUp::down`]). The soak benchmark's baseline: the same number of containers the
    /// platform starts, started by the CLI in parallel.
    pub fn up_many(
        &self,
        run: &str,
        first: usize,
        labs: usize,
        workers: usize,
    ) -> (Duration, Vec<CliUp>) {
        let next = std::sync::atomic::AtomicUsize::new(first);
        let done = std::sync::Mutex::new(Vec::with_capacity(labs));
        let t0 = Instant::now();
        thread::scope(|s| {
            for _ in 0..workers.clamp(1, labs.max(1)) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= first + labs {
                            break;
                        }
                        let up = self.up_parallel(run, i);
                        done.lock().unwrap_or_else(|p| p.into_inner()).push(up);
                    }
                });
            }
        });
        let wall = t0.elapsed();
        (wall, done.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// [`CliLab::up_parallel`], then removes the lab; returns (ready, teardown) durations.
    pub fn run_parallel(&self, run: &str, i: usize) -> (Duration, Duration) {
        let up = self.up_parallel(run, i);
        let ready = up.ready;
        (ready, up.down())
    }

    /// Brings lab `i` of run `run` up step by step (two networks, the runs one after another,
    /// a `network connect`), then removes it; returns (ready, teardown) durations.
    /// Everything carries the label `forge.bench=<run>` for [`cleanup`].
    pub fn run(&self, run: &str, i: usize) -> (Duration, Duration) {
        let (a, b) = (subnet(self.octet, 2 * i), subnet(self.octet, 2 * i + 1));
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
        let extra_tmpfs: Vec<String> = self.tmpfs.iter().map(|d| format!("{d}:size=16m")).collect();
        let hard = self.hardening(&extra_tmpfs);
        let t0 = Instant::now();
        // Docker takes .1 as the bridge's own address unless told otherwise; the router needs .1.
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
        let container = |name: &str, net: &str, addr: &str, extra: &[&str]| {
            let mut args = vec![
                "run",
                "-d",
                "--name",
                name,
                "--label",
                &label,
                "--network",
                net,
                "--ip",
                addr,
            ];
            args.extend(hard.iter().map(String::as_str));
            args.extend(extra);
            docker(&args);
        };
        container(
            &names[0],
            &na,
            &ip_l,
            &[
                "--cap-add",
                "NET_ADMIN",
                "--cap-add",
                "NET_RAW",
                self.images[0],
            ],
        );
        container(
            &names[1],
            &na,
            &ip_ra,
            &[
                "--cap-add",
                "NET_ADMIN",
                "--sysctl",
                "net.ipv4.ip_forward=1",
                self.images[1],
            ],
        );
        docker(&["network", "connect", "--ip", &ip_rb, &nb, &names[1]]);
        container(
            &names[2],
            &nb,
            &ip_w,
            &[
                "--sysctl",
                "net.ipv4.ip_unprivileged_port_start=0",
                self.images[2],
            ],
        );
        let ready = t0.elapsed();
        let t1 = Instant::now();
        let mut rm = vec!["rm", "-f"];
        rm.extend(names.iter().map(String::as_str));
        docker(&rm);
        docker(&["network", "rm", &na, &nb]);
        (ready, t1.elapsed())
    }
}

/// Removes every container and network of run `run`, whatever state a panic left them in.
pub fn cleanup(run: &str) {
    let label = format!("forge.bench={run}");
    remove_labelled_containers(&label);
    // Networks after the containers: one still in use cannot be removed. Under a burst of
    // concurrent `run` and `rm -f` the engine (20.10) can keep a stale endpoint on a network
    // for a moment, or for good, which blocks its subnet for the next run: retry, then say so.
    let filter = format!("label={label}");
    let networks = || docker_ids(&["network", "ls", "--filter", &filter, "-q"]).unwrap_or_default();
    for attempt in 0..3 {
        let left = networks();
        if left.is_empty() {
            return;
        }
        if attempt > 0 {
            thread::sleep(Duration::from_millis(500));
        }
        for id in &left {
            let _ = Command::new("docker").args(["network", "rm", id]).output();
        }
    }
    let left = networks();
    if !left.is_empty() {
        eprintln!(
            "cleanup: the engine kept stale endpoints on the baseline's networks {left:?} \
             ({label}); restart dockerd, then `docker network rm` them"
        );
    }
}

/// The `p`-th percentile (0..=1) of sorted samples.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:8.1} ms", d.as_secs_f64() * 1000.0)
}

/// Prints `name p50 … p95 …` and returns (p50, p95).
pub fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let (p50, p95) = (pct(&v, 0.5), pct(&v, 0.95));
    println!("{name:<40} p50 {}   p95 {}", ms(p50), ms(p95));
    (p50, p95)
}
