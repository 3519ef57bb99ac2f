//! The baseline our launch and spawn benchmarks are measured against: the same 3-container
//! netplus lab (learner, router, web) brought up with plain `docker` commands, as a user would
//! script it — two `--internal` networks with per-run subnets, three `docker run -d` with the
//! runtime's hardening flags, `docker network connect` for the router — then removed. Plus the
//! percentile helpers both benchmarks print with. Benchmark support only; nothing in the
//! platform calls it.

use std::process::Command;
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

impl CliLab<'_> {
    /// Brings lab `i` of run `run` up, then removes it; returns (ready, teardown) durations.
    /// Everything carries the label `forge.bench=<run>` for [`cleanup`].
    pub fn run(&self, run: &str, i: usize) -> (Duration, Duration) {
        let (a, b) = (
            format!("10.{}.{}.0/24", self.octet, 2 * i),
            format!("10.{}.{}.0/24", self.octet, 2 * i + 1),
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
        let extra_tmpfs: Vec<String> = self.tmpfs.iter().map(|d| format!("{d}:size=16m")).collect();
        let mut hard = vec![
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
        ];
        for t in &extra_tmpfs {
            hard.extend(["--tmpfs", t.as_str()]);
        }
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
            args.extend(&hard);
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
    // Networks after the containers: one still in use cannot be removed.
    let filter = format!("label={label}");
    for id in docker_ids(&["network", "ls", "--filter", &filter, "-q"]).unwrap_or_default() {
        let _ = Command::new("docker").args(["network", "rm", &id]).output();
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
