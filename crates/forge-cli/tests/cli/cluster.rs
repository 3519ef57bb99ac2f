//! The local cluster (`scripts/cluster.sh`, feature `docker`: root and the Docker Engine): real
//! nats-server, PostgreSQL and SeaweedFS, two lab hosts and one `forge serve` per service on
//! loopback. The README walk-through runs against it with the `forge` client (spawn → exec →
//! check → submit → score → `forge bundle verify URL`, the bundle read back from S3); then one
//! lab host is killed with SIGKILL: after its lease its labs are failed with a reason, new spawns
//! go to the other host, and when it starts again it removes its orphans.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use forge_testkit::sweep;

use crate::{Run, repo, run};

const TEST_RUN_LABEL: &str = "forge.test_run";

/// The cluster of one test: stopped, and every lab of the run removed, on drop.
struct Cluster {
    dir: PathBuf,
    run: String,
    env: BTreeMap<String, String>,
    _tmp: tempfile::TempDir,
}

fn script(args: &[&str], extra: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/cluster.sh")).args(args);
    cmd.env("FORGE_BIN", env!("CARGO_BIN_EXE_forge"));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

impl Cluster {
    fn up() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("forge-cluster-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let dir = tmp.path().join("cluster");
        let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let label = format!("{TEST_RUN_LABEL}={run}");
        let mut cluster = Self {
            dir,
            run,
            env: BTreeMap::new(),
            _tmp: tmp,
        };
        let dir = cluster.dir.to_str().unwrap().to_owned();
        let up = script(
            &["up", &dir],
            &[
                ("FORGE_CLUSTER_LABEL", label.as_str()),
                ("FORGE_HOST_CAPACITY", "2"),
                ("FORGE_HOST_LEASE", "3s"),
            ],
        );
        assert_eq!(up.code, 0, "cluster up: {up:#?}");
        assert!(up.stdout.contains("cluster is up"), "{}", up.stdout);
        let env = std::fs::read_to_string(cluster.dir.join("env")).unwrap();
        for line in env.lines().filter_map(|l| l.strip_prefix("export ")) {
            let (k, v) = line.split_once('=').unwrap();
            cluster.env.insert(k.to_owned(), v.to_owned());
        }
        cluster
    }

    /// A `forge` client command with the cluster's client settings.
    fn forge(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_forge"));
        cmd.env_clear().envs(&self.env).args(args);
        run(&mut cmd)
    }

    /// `(status, host, error)` of every scenario, from the cluster's PostgreSQL.
    fn scenarios(&self) -> BTreeMap<String, (String, String, String)> {
        let out = Command::new(psql())
            .args(["-tA", "-F", "\t", "-d", &self.env["DATABASE_URL"], "-c"])
            .arg("SELECT scenario_id, status, coalesce(host_id, ''), coalesce(error, '') FROM scenarios")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[0].into(), (f[1].into(), f[2].into(), f[3].into()))
            })
            .collect()
    }

    fn wait_scenarios(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&BTreeMap<String, (String, String, String)>) -> bool,
    ) -> BTreeMap<String, (String, String, String)> {
        let start = Instant::now();
        loop {
            let s = self.scenarios();
            if done(&s) {
                return s;
            }
            assert!(
                start.elapsed() < within,
                "not {what} within {within:?}: {s:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The request id the scenario was spawned with.
    fn request_id_of(&self, id: &str) -> String {
        let out = Command::new(psql())
            .args(["-tA", "-d", &self.env["DATABASE_URL"], "-c"])
            .arg(format!(
                "SELECT request_id FROM scenarios WHERE scenario_id = '{id}'"
            ))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn pid_of(&self, name: &str) -> i32 {
        let pids = std::fs::read_to_string(self.dir.join("pids")).unwrap();
        pids.lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(n, _)| *n == name)
            .map(|(_, p)| p.parse().unwrap())
            .next_back()
            .unwrap_or_else(|| panic!("no {name} in {pids}"))
    }

    fn spawn(&self) -> String {
        let out = self.forge(&["spawn", "netplus"]).expect(0);
        out.stdout
            .split_whitespace()
            .chain(out.stderr.split_whitespace())
            .find(|w| w.starts_with("scn-"))
            .map(|w| {
                w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                    .to_owned()
            })
            .unwrap_or_else(|| panic!("no scenario id: {out:#?}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let down = script(&["down", self.dir.to_str().unwrap()], &[]);
        if down.code != 0 {
            eprintln!("cluster down: {down:#?}");
        }
        sweep::teardown_labs(Some((TEST_RUN_LABEL, &self.run)), Vec::new());
        sweep::remove_labelled_containers(&format!("{TEST_RUN_LABEL}={}", self.run));
    }
}

fn psql() -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/psql"))
        .find(|p| p.is_file())
        .expect("psql")
}

fn count(s: &BTreeMap<String, (String, String, String)>, status: &str, host: &str) -> usize {
    s.values()
        .filter(|(st, h, _)| st == status && h == host)
        .count()
}

/// Containers of learners' labs on `host` (its warm pool's labs, `forge.pool`, left out: a host
/// refills its pool as soon as it is back).
fn labs_of_host(host: &str) -> usize {
    let of = |extra: &[&str]| {
        let filter = format!("label=forge.host={host}");
        let mut args = vec!["ps", "-aq", "--filter", filter.as_str()];
        args.extend_from_slice(extra);
        sweep::docker_ids(&args).unwrap_or_default().len()
    };
    of(&[]) - of(&["--filter", "label=forge.pool"])
}

#[test]
fn the_walkthrough_and_a_killed_lab_host_on_the_local_cluster() {
    let c = Cluster::up();

    // The README walk-through, with the client's settings from DIR/env.
    let id = c.spawn();
    c.forge(&[
        "exec",
        &id,
        "ip",
        "route",
        "add",
        "10.20.0.0/24",
        "via",
        "10.10.0.1",
    ])
    .expect(0);
    let check = c.forge(&["check", &id]).expect(0);
    assert!(check.stdout.contains("2 of 2 objectives met"), "{check:#?}");
    c.forge(&["submit", &id]).expect(0);
    let start = Instant::now();
    let score = loop {
        let s = c.forge(&["score", &id]);
        if s.code == 0 {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no score: {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(score.stdout.contains("score    1.00"), "{score:#?}");
    assert!(
        score.stdout.contains("s3://forge-evidence/"),
        "the evidence lives in the S3 server: {score:#?}"
    );
    let url = format!("{}/v1/scores/{id}", c.env["FORGE_SCOREBOARD_URL"]);
    let verified = c.forge(&["bundle", "verify", &url]).expect(0);
    assert!(
        verified.stdout.starts_with(&format!("OK {id}")),
        "{verified:#?}"
    );
    let s = c.wait_scenarios("completed", Duration::from_secs(20), |s| {
        s.get(&id).is_some_and(|(st, _, _)| st == "completed")
    });

    // JSON log lines (the services' stderr is a file), every service the lab went through,
    // one request id: the spawn's.
    let request_id = c.request_id_of(&id);
    let owner = &s[&id].1;
    let mut services = std::collections::BTreeSet::new();
    for log in ["spawn", &format!("host-{owner}"), "scoreboard"] {
        let text = std::fs::read_to_string(c.dir.join(format!("logs/{log}.log"))).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &serde_json::Value| v["request_id"] == request_id.as_str())
            .collect();
        assert!(
            !lines.is_empty(),
            "no line of {request_id} in {log}.log:\n{text}"
        );
        for l in &lines {
            assert_eq!(l["scenario_id"], id.as_str(), "{l}");
            services.insert(l["service"].as_str().unwrap_or_default().to_owned());
        }
    }
    for service in [
        "forge_spawn_service",
        "forge_orchestrator",
        "forge_worker_agent",
        "forge_scoreboard",
    ] {
        assert!(
            services.contains(service),
            "{service} missing from {services:?}"
        );
    }

    // Capacity 2 per host: four labs, two on each host.
    let ids: Vec<String> = (0..4).map(|_| c.spawn()).collect();
    let s = c.wait_scenarios("2 running on each host", Duration::from_secs(60), |s| {
        count(s, "running", "cluster-a") == 2 && count(s, "running", "cluster-b") == 2
    });
    assert!(ids.iter().all(|i| s[i].0 == "running"), "{s:#?}");
    assert!(labs_of_host("cluster-b") > 0);

    // SIGKILL host b: after its 3 s lease, its labs fail with a reason naming it.
    let b = c.pid_of("host-cluster-b");
    assert!(
        Command::new("kill")
            .args(["-9", &b.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let s = c.wait_scenarios("b's labs failed", Duration::from_secs(30), |s| {
        count(s, "failed", "cluster-b") == 2
    });
    for (st, host, error) in s.values() {
        if host == "cluster-b" && st == "failed" {
            assert!(
                error.contains("lab host `cluster-b` stopped renewing its lease"),
                "{error}"
            );
        }
    }
    assert_eq!(
        count(&s, "running", "cluster-a"),
        2,
        "a keeps its labs: {s:#?}"
    );

    // Room on a (one of its labs ends), and the next spawn goes there.
    let on_a = s
        .iter()
        .find(|(_, (st, h, _))| st == "running" && h == "cluster-a")
        .map(|(i, _)| i.clone())
        .unwrap();
    let ended = Command::new("curl")
        .args(["-fsS", "-X", "DELETE", "-H"])
        .arg(format!("Authorization: Bearer {}", c.env["FORGE_TOKEN"]))
        .arg(format!(
            "{}/v1/scenarios/{on_a}",
            c.env["FORGE_ORCHESTRATOR_URL"]
        ))
        .output()
        .unwrap();
    assert!(ended.status.success(), "{ended:?}");
    let next = c.spawn();
    let s = c.wait_scenarios("the new lab running", Duration::from_secs(30), |s| {
        s.get(&next).is_some_and(|(st, _, _)| st == "running")
    });
    assert_eq!(s[&next].1, "cluster-a");

    // Host b returns and removes the labs it no longer owns.
    assert!(
        labs_of_host("cluster-b") > 0,
        "b's labs outlived it on the engine"
    );
    let dir = c.dir.to_str().unwrap();
    script(&["start-host", "cluster-b", dir], &[]).expect(0);
    let log = std::fs::read_to_string(Path::new(dir).join("logs/host-cluster-b.log")).unwrap();
    assert!(log.contains("2 orphans removed"), "{log}");
    assert_eq!(labs_of_host("cluster-b"), 0);
}
