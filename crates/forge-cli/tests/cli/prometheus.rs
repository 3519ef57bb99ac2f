//! A real Prometheus (Debian's) scraping `forge up` with the repository's scrape configuration
//! (`deploy/prometheus/prometheus.yml`, only the ports moved to free ones and the interval cut
//! to 1 s), feature `docker`: after one spawn → solve → submit → score, and one lab container
//! killed and revived, every target is up and every metric the spec lists is there with the
//! spec's labels, as are the platform's own metrics of a normal run.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use forge_testkit::sweep;
use serde_json::Value;

use crate::repo;

const TEST_RUN_LABEL: &str = "forge.test_run";

/// The services' default ports, as the scrape configuration names them.
const PORTS: [(&str, u16); 7] = [
    ("FORGE_SPAWN_PORT", 8082),
    ("FORGE_ORCHESTRATOR_PORT", 8083),
    ("FORGE_WORKER_PORT", 8084),
    ("FORGE_OBSERVER_PORT", 8085),
    ("FORGE_SCOREBOARD_PORT", 8086),
    ("FORGE_RUNNER_PORT", 8087),
    ("FORGE_OPA_PORT", 8181),
];

/// Processes this test started, ended by PID on drop; then every lab of the run is removed.
struct Guard {
    children: Vec<Child>,
    run: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        sweep::teardown_labs(Some((TEST_RUN_LABEL, &self.run)), Vec::new());
        sweep::remove_labelled_containers(&format!("{TEST_RUN_LABEL}={}", self.run));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get_json(url: &str) -> Option<Value> {
    let out = Command::new("curl").args(["-fsS", url]).output().ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "{what} not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The metrics contract, `name -> labels`.
fn contract() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/metrics.txt")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().unwrap().to_owned();
            let labels = parts
                .next()
                .map(|ls| ls.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            (name, labels)
        })
        .collect()
}

#[test]
fn prometheus_scrapes_every_service_and_finds_every_spec_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let mut guard = Guard {
        children: Vec::new(),
        run: run.clone(),
    };
    let ports: Vec<(&str, u16, u16)> = PORTS.iter().map(|(v, d)| (*v, *d, free_port())).collect();
    let port = |var: &str| ports.iter().find(|p| p.0 == var).unwrap().2;

    // forge up, on free ports, labs labelled with the run.
    let data = tmp.path().join("data");
    let mut up = Command::new(env!("CARGO_BIN_EXE_forge"));
    up.current_dir(repo())
        .args(["--data-dir", data.to_str().unwrap(), "up"])
        .env("FORGE_LAB_LABEL", format!("{TEST_RUN_LABEL}={run}"))
        .env("FORGE_HOST_ID", format!("prom-{run}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("forge.log")).unwrap());
    for (var, _, p) in &ports {
        up.env(var, p.to_string());
    }
    guard.children.push(up.spawn().expect("forge up starts"));
    let spawn_url = format!("http://127.0.0.1:{}", port("FORGE_SPAWN_PORT"));
    wait_for("forge up ready", Duration::from_secs(120), || {
        get_json(&format!("{spawn_url}/ready")).is_some()
    });

    // The repository's scrape configuration, pointed at those ports, scraping every second.
    let mut config =
        std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap();
    for (_, default, p) in &ports {
        config = config.replace(
            &format!("localhost:{default}\""),
            &format!("127.0.0.1:{p}\""),
        );
    }
    config = config
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace(
            "  - rules/*.yml",
            &format!("  - {}/deploy/prometheus/rules/*.yml", repo().display()),
        );
    let config_path = tmp.path().join("prometheus.yml");
    std::fs::write(&config_path, &config).unwrap();
    let prom_port = free_port();
    let prom = format!("http://127.0.0.1:{prom_port}");
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus starts (apt-get install prometheus)");
    guard.children.push(prometheus);

    // One lab's life through the client commands.
    let client = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_forge"));
        cmd.args(["--data-dir", data.to_str().unwrap()])
            .args(args)
            .env("FORGE_SPAWN_URL", &spawn_url);
        for (var, url_var) in [
            ("FORGE_ORCHESTRATOR_PORT", "FORGE_ORCHESTRATOR_URL"),
            ("FORGE_WORKER_PORT", "FORGE_WORKER_URL"),
            ("FORGE_SCOREBOARD_PORT", "FORGE_SCOREBOARD_URL"),
        ] {
            cmd.env(url_var, format!("http://127.0.0.1:{}", port(var)));
        }
        crate::run(&mut cmd)
    };
    let spawned = client(&["spawn", "netplus"]).expect(0);
    let id = format!("{}{}", spawned.stdout, spawned.stderr)
        .split_whitespace()
        .find(|w| w.starts_with("scn-"))
        .map(|w| {
            w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .to_owned()
        })
        .expect("scenario id");
    // A lab container dies and the supervisor brings it back (forge_container_restarts_total).
    let suffix = id.trim_start_matches("scn-");
    let killed = Command::new("docker")
        .args(["kill", &format!("forge_{suffix}_router")])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    client(&[
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
    client(&["check", &id]).expect(0);
    client(&["submit", &id]).expect(0);
    wait_for("the score", Duration::from_secs(60), || {
        client(&["score", &id]).code == 0
    });

    // Every target up.
    wait_for("every target up", Duration::from_secs(30), || {
        get_json(&format!("{prom}/api/v1/targets")).is_some_and(|v| {
            let t = v["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            t.len() == PORTS.len() && t.iter().all(|t| t["health"] == "up")
        })
    });

    // Every spec metric, with its labels; and ours that a normal run has.
    let contract = contract();
    let expected = [
        "forge_spawn_requests_total",
        "forge_spawn_duration_seconds",
        "forge_active_scenarios",
        "forge_score_distribution",
        "forge_criteria_pass_rate",
        "forge_evidence_size_bytes",
        "forge_opa_decisions_total",
        "forge_nats_messages_total",
        "forge_container_restarts_total",
        "forge_lab_launch_seconds",
        "forge_scenario_transitions_total",
        "forge_labs",
        "forge_host_lease_expired",
        "forge_lab_orphans",
        "nats_jetstream_consumer_pending",
        "forge_audit_appends_total",
        "forge_audit_chain_verified",
        "forge_opa_decision_seconds",
        "forge_checks_total",
        "forge_evidence_collection_seconds",
    ];
    for name in expected {
        let labels = contract
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in metrics.txt"));
        let series = if name.ends_with("_seconds") || name.ends_with("_bytes") {
            format!("{name}_count")
        } else {
            name.to_owned()
        };
        let start = Instant::now();
        let found = loop {
            let v = get_json(&format!("{prom}/api/v1/series?match[]={series}"));
            let found = v
                .as_ref()
                .and_then(|v| v["data"].as_array().cloned())
                .unwrap_or_default();
            if !found.is_empty() {
                break found;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{series} never scraped: {v:?}\n{}",
                forge_log(tmp.path())
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        for label in labels {
            assert!(
                found.iter().all(|s| s.get(label).is_some()),
                "{series} lacks label {label}: {found:?}"
            );
        }
    }
    // forge_spawn_requests_total{status="success",track="netplus"}, URL-encoded.
    let query = "forge_spawn_requests_total%7Bstatus%3D%22success%22%2Ctrack%3D%22netplus%22%7D";
    let ok = get_json(&format!("{prom}/api/v1/query?query={query}")).unwrap();
    assert!(
        !ok["data"]["result"].as_array().unwrap().is_empty(),
        "a successful spawn is status=\"success\": {ok}"
    );
}

fn forge_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("forge.log")).unwrap_or_default()
}
