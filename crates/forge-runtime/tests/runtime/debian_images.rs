//! The Debian lab images (`images/*/Dockerfile`, docs/images.md) under the platform's
//! hardening: a lab of every one of them (`fixtures/debian-lab.yaml`) becomes healthy, its
//! daemons serve the lab from read-only roots with only the capabilities the template
//! declares, and the spec's example template (from docs/forge-reference.md, unchanged)
//! launches on the images its names alias.
//!
//! The first run on a machine builds the images (debootstrap and apt from the Debian mirror
//! apt uses: a few minutes); later runs find them up to date. All traffic stays in the labs.

use std::time::{Duration, Instant};

use forge_core::ScenarioId;
use forge_runtime::{DockerRuntime, ExecRequest, ImageCatalog, Runtime};

use crate::common::*;

/// What the fixture and the spec example run on (aliases included).
const IMAGES: [&str; 9] = [
    "forge/workstation:1",
    "forge/router-bird:1",
    "forge/vyos-mini:1.4",
    "forge/web-nginx:1",
    "forge/ssh-server:1",
    "forge/dns:1",
    "forge/firewall:1",
    "forge/learner-alpine:3.19",
    "forge/nginx-test:1.0",
];

/// The runtime, with the Debian images built (once per test process).
async fn debian_runtime() -> DockerRuntime {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let rt = runtime().await;
    BUILT
        .get_or_init(|| async {
            let catalog = ImageCatalog::discover(None).expect("image catalog");
            rt.ensure_images(&catalog, &IMAGES, false)
                .await
                .expect("debian images build");
        })
        .await;
    rt
}

/// Runs `cmd` until it exits 0 (within `within`); the last result either way.
async fn until_ok(
    rt: &DockerRuntime,
    scn: &ScenarioId,
    container: &str,
    req: impl Fn() -> ExecRequest,
    within: Duration,
) -> forge_runtime::ExecResult {
    let deadline = Instant::now() + within;
    loop {
        let r = rt
            .exec(scn, container, req())
            .await
            .unwrap_or_else(|e| panic!("exec in {container}: {e}"));
        if r.exit_code == 0 || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the container's HEALTHCHECK (from its configuration, as the engine would) until it
/// passes; panics with its output if it never does.
async fn assert_healthy(rt: &DockerRuntime, scn: &ScenarioId, container: &str) {
    let v = docker_inspect(&forge_runtime::container_name(scn, container));
    let test: Vec<String> = v["Config"]["Healthcheck"]["Test"]
        .as_array()
        .unwrap_or_else(|| panic!("{container}: no HEALTHCHECK"))
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    let argv: Vec<String> = match test.split_first() {
        Some((kind, rest)) if kind == "CMD" => rest.to_vec(),
        Some((kind, rest)) if kind == "CMD-SHELL" => {
            vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
        }
        _ => panic!("{container}: unexpected healthcheck {test:?}"),
    };
    let req = || ExecRequest::argv(argv.clone()).timeout(Duration::from_secs(20));
    let r = until_ok(rt, scn, container, req, Duration::from_secs(60)).await;
    assert_eq!(
        r.exit_code, 0,
        "{container}: healthcheck {argv:?} failed: {}{}",
        r.stdout, r.stderr
    );
}

async fn read(rt: &DockerRuntime, scn: &ScenarioId, container: &str, path: &str) -> String {
    let f = rt
        .read_file(scn, container, path, 1 << 20)
        .await
        .unwrap_or_else(|e| panic!("read {path} in {container}: {e}"));
    String::from_utf8_lossy(&f.bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_images_work_under_the_hardening() {
    let rt = debian_runtime().await;
    let (lab, guard) = launch(&rt, &fixture("debian-lab.yaml")).await;
    let scn = &lab.scenario_id;
    let names = ["ws", "r1", "r2", "web", "ssh", "dns", "fw"];

    // The hardening holds for Dockerfile images too, with the image's own tmpfs mounts.
    for name in names {
        let v = docker_inspect(&forge_runtime::container_name(scn, name));
        let h = &v["HostConfig"];
        assert_eq!(h["ReadonlyRootfs"], true, "{name}");
        assert_eq!(h["CapDrop"], serde_json::json!(["ALL"]), "{name}");
        assert_eq!(h["NetworkMode"], "none", "{name}");
        assert_eq!(h["Privileged"], false, "{name}");
        let secopt = h["SecurityOpt"].to_string();
        assert!(
            secopt.contains("no-new-privileges:true"),
            "{name}: {secopt}"
        );
        assert!(
            h["Memory"].as_i64().unwrap_or(0) > 0,
            "{name}: memory limit"
        );
        assert!(
            h["PidsLimit"].as_i64().unwrap_or(0) > 0,
            "{name}: pids limit"
        );
        let caps = h["CapAdd"].to_string();
        match name {
            "ws" | "r1" | "r2" => assert!(
                caps.contains("NET_RAW") && caps.contains("NET_ADMIN"),
                "{name}: {caps}"
            ),
            "fw" => assert_eq!(h["CapAdd"], serde_json::json!(["NET_ADMIN"]), "{name}"),
            _ => assert!(h["CapAdd"].is_null(), "{name}: {caps}"),
        }
        let tmpfs = h["Tmpfs"].as_object().expect("tmpfs");
        let expected: &[&str] = match name {
            "web" => &["/var/log", "/var/www"],
            "ssh" => &["/var/log", "/var/lib/sshd"],
            "dns" => &["/var/cache/bind", "/var/log"],
            "r1" | "r2" => &["/var/log"],
            _ => &[],
        };
        for dir in expected {
            assert!(
                tmpfs.contains_key(*dir),
                "{name}: tmpfs {dir} missing: {tmpfs:?}"
            );
        }
        assert_eq!(tmpfs.len(), 2 + expected.len(), "{name}: {tmpfs:?}");
        // tini is PID 1 (it reaps what execs orphan).
        assert_prints(&rt, scn, name, "cat /proc/1/comm", "tini").await;
    }
    for name in names {
        assert_healthy(&rt, scn, name).await;
    }

    // Routers: BIRD up, OSPF adjacency over the transit link, the far LAN learned.
    assert_prints(
        &rt,
        scn,
        "r1",
        "birdc show status",
        "Daemon is up and running",
    )
    .await;
    let full = until_ok(
        &rt,
        scn,
        "r1",
        || ExecRequest::shell("birdc show ospf neighbors | grep -q Full"),
        Duration::from_secs(60),
    )
    .await;
    let neighbors = sh(&rt, scn, "r1", "birdc show ospf neighbors").await.stdout;
    assert_eq!(full.exit_code, 0, "no Full adjacency: {neighbors}");
    let route = until_ok(
        &rt,
        scn,
        "r1",
        || ExecRequest::shell("ip route show 10.31.2.0/24 | grep -q 'proto bird'"),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(route.exit_code, 0, "r1 did not learn 10.31.2.0/24 from r2");
    // The setup's `birdc configure`, in BIRD's own log on the image's /var/log tmpfs.
    let bird_log = read(&rt, scn, "r1", "/var/log/bird.log").await;
    assert!(bird_log.contains("Reconfigured"), "bird.log: {bird_log}");

    // nginx answers the workstation across both routers, and logs it.
    assert_prints(
        &rt,
        scn,
        "ws",
        "curl -s --max-time 5 http://10.31.2.10/",
        "Welcome to nginx",
    )
    .await;
    assert_prints(
        &rt,
        scn,
        "ws",
        "curl -s --max-time 5 http://10.31.2.10/lab.html",
        "forge lab page",
    )
    .await;
    let access = read(&rt, scn, "web", "/var/log/nginx/access.log").await;
    assert!(access.contains("10.31.1.10"), "access log: {access}");

    // sshd (non-root) listens on 22; a refused login from the workstation is in auth.log.
    assert_prints(&rt, scn, "ssh", "id -un", "admin").await;
    assert_prints(&rt, scn, "ssh", "ss -Hltn 'sport = :22'", ":22").await;
    let login = sh(
        &rt,
        scn,
        "ws",
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o ConnectTimeout=5 root@10.31.2.20 true",
    )
    .await;
    assert_ne!(login.exit_code, 0, "{login:?}");
    assert!(login.stderr.contains("Permission denied"), "{login:?}");
    let auth = until_ok(
        &rt,
        scn,
        "ssh",
        || ExecRequest::shell("grep -q 'user root 10.31.1.10' /var/log/auth.log"),
        Duration::from_secs(10),
    )
    .await;
    let log = read(&rt, scn, "ssh", "/var/log/auth.log").await;
    assert_eq!(auth.exit_code, 0, "auth.log: {log}");
    assert!(
        log.lines()
            .any(|l| l.contains(" ssh sshd[") && l.contains("10.31.1.10")),
        "auth.log lines are not in syslog's format: {log}"
    );

    // BIND serves the zone the setup added, and the default one; queries are logged.
    assert_prints(
        &rt,
        scn,
        "ws",
        "dig +short +time=2 +tries=2 @10.31.2.30 www.corp.test",
        "10.31.2.10",
    )
    .await;
    assert_prints(
        &rt,
        scn,
        "ws",
        "dig +short +time=2 +tries=2 @10.31.2.30 lab.test SOA",
        "ns1.lab.test.",
    )
    .await;
    let queries = read(&rt, scn, "dns", "/var/log/named/query.log").await;
    assert!(queries.contains("www.corp.test"), "query log: {queries}");

    // nmap (raw SYN scan: NET_RAW) finds each server's service.
    let scan = sh(
        &rt,
        scn,
        "ws",
        "nmap -n -Pn -sS -p 22,53,80 --max-retries 2 10.31.2.10,20,30",
    )
    .await
    .stdout;
    for (host, port) in [
        ("10.31.2.10", "80/tcp"),
        ("10.31.2.20", "22/tcp"),
        ("10.31.2.30", "53/tcp"),
    ] {
        let section = scan
            .split("Nmap scan report for ")
            .find(|s| s.starts_with(host));
        assert!(
            section.is_some_and(|s| s.lines().any(|l| l.starts_with(port) && l.contains("open"))),
            "{host} {port} not open: {scan}"
        );
    }

    // tcpdump captures (NET_RAW) as root without CAP_SETUID/SETGID.
    let capture = sh(
        &rt,
        scn,
        "ws",
        "timeout 8 tcpdump -l -n -i eth0 -c 2 icmp & sleep 1; ping -c 2 -W 1 10.31.1.1 >/dev/null; wait",
    )
    .await;
    assert!(
        capture.stdout.contains("ICMP echo request"),
        "tcpdump: {}{}",
        capture.stdout,
        capture.stderr
    );

    // The firewall forwards, and its setup loaded a ruleset (NET_ADMIN).
    assert_prints(&rt, scn, "fw", "cat /proc/sys/net/ipv4/ip_forward", "1").await;
    assert_prints(&rt, scn, "fw", "nft list ruleset", "table inet filter").await;

    guard.close(&rt).await;
    assert_eq!(lab_leftovers(scn), (vec![], false));
}

/// The example template of docs/forge-reference.md ("Template Structure"), as written there.
fn spec_example() -> forge_core::template::ScenarioTemplate {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/forge-reference.md");
    let doc = std::fs::read_to_string(path).expect("docs/forge-reference.md");
    let after = doc
        .split("### Template Structure")
        .nth(1)
        .expect("Template Structure section");
    let yaml = after
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the example's yaml block");
    forge_core::template::load("forge-reference.md#template-structure", yaml)
        .unwrap_or_else(|e| panic!("the spec example does not validate: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_example_launches_unchanged() {
    let rt = debian_runtime().await;
    let t = spec_example();
    let (lab, guard) = launch(&rt, &t).await;
    let scn = &lab.scenario_id;
    for name in ["learner_vm", "router", "target_server"] {
        assert_healthy(&rt, scn, name).await;
    }
    assert_prints(
        &rt,
        scn,
        "router",
        "birdc show status",
        "Daemon is up and running",
    )
    .await;
    let target = lab
        .plan
        .container("target_server")
        .and_then(|c| c.attachments.first())
        .and_then(|a| a.address)
        .expect("target address");
    // The example's connectivity criterion looks for "nginx" in the page.
    assert_prints(
        &rt,
        scn,
        "router",
        &format!("curl -s --max-time 5 http://{target}/"),
        "nginx",
    )
    .await;
    guard.close(&rt).await;
    assert_eq!(lab_leftovers(scn), (vec![], false));
}
