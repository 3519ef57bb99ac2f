//! Lab networking: the routing lab works end to end, identical labs with identical addresses
//! run side by side without seeing each other, and nothing outside a lab is reachable from it.
//! Every listener here is one the test started (in a lab, a test namespace, or on docker0's
//! address of this host).

use std::time::Duration;

use forge_runtime::template_test::evaluate_criteria;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_lab_works_end_to_end() {
    let rt = runtime().await;
    let t = fixture("netplus-lab.yaml");
    let (lab, guard) = launch(&rt, &t).await;
    let scn = &lab.scenario_id;
    assert_eq!(lab.network_id, format!("forge_scn_{}", scn.suffix()));
    assert!(
        run(&["ip", "netns", "list"]).contains(&lab.network_id),
        "ip netns list shows the fabric"
    );

    // Addresses from the plan, default route only where the gateway rule says so.
    let ip = sh(&rt, scn, "router", "ip -4 addr").await.stdout;
    assert!(
        ip.contains("10.10.0.1/24") && ip.contains("10.20.0.1/24"),
        "{ip}"
    );
    assert_prints(&rt, scn, "web", "ip route", "default via 10.20.0.1").await;
    assert!(
        !sh(&rt, scn, "learner", "ip route")
            .await
            .stdout
            .contains("default")
    );
    // Lab names resolve (extra_hosts), and NET_RAW makes ping work.
    let ping = sh(&rt, scn, "learner", "ping -c 1 -W 2 router").await;
    assert_eq!(ping.exit_code, 0, "{ping:?}");
    // No NET_RAW on web: ping is refused.
    assert_ne!(
        sh(&rt, scn, "web", "ping -c 1 -W 1 10.20.0.1")
            .await
            .exit_code,
        0
    );

    let before = evaluate_criteria(&rt, scn, &t).await;
    let passed = |rs: &[forge_runtime::template_test::EvaluatedCriterion], id: &str| {
        rs.iter()
            .find(|c| c.result.criterion_id == id)
            .map(|c| c.result.passed)
            .unwrap()
    };
    assert!(
        !passed(&before, "route-add")
            && !passed(&before, "connectivity")
            && !passed(&before, "web-port")
    );
    assert!(passed(&before, "setup-ran") && passed(&before, "web-running"));
    let r = sh(&rt, scn, "learner", &t.spec.solution[0].command).await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    let after = evaluate_criteria(&rt, scn, &t).await;
    for c in &after {
        assert!(
            c.result.passed,
            "{} failed after the solution: {:?}",
            c.result.criterion_id, c.result.message
        );
        assert_eq!(c.artifacts.len(), c.result.evidence_refs.len());
    }
    guard.close(&rt).await;
    assert_eq!(lab_leftovers(scn), (vec![], false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_labs_cannot_reach_each_other() {
    let rt = runtime().await;
    let t = fixture("flat-lab.yaml");
    let (a, b) = tokio::join!(launch(&rt, &t), launch(&rt, &t));
    let ((a, guard_a), (b, guard_b)) = (a, b);
    // Same plan, same addresses.
    assert_eq!(a.plan, b.plan);
    let beta_ip = a.plan.container("beta").unwrap().attachments[0]
        .address
        .expect("beta is addressed")
        .to_string();

    let serve = |tag: &'static str| {
        format!(
            "mkdir -p /tmp/www && echo {tag} > /tmp/www/index.html && httpd -p 9000 -h /tmp/www"
        )
    };
    assert_eq!(
        sh(&rt, &a.scenario_id, "beta", &serve("lab-a-listener"))
            .await
            .exit_code,
        0
    );
    let fetch = format!("timeout 3 wget -qO- http://{beta_ip}:9000/");
    let from_a = sh(&rt, &a.scenario_id, "alpha", &fetch).await;
    assert!(
        from_a.stdout.contains("lab-a-listener"),
        "inside lab A the listener answers: {from_a:?}"
    );
    let from_b = sh(&rt, &b.scenario_id, "alpha", &fetch).await;
    assert_ne!(
        from_b.exit_code, 0,
        "lab B must not reach lab A's listener: {from_b:?}"
    );
    assert!(!from_b.stdout.contains("lab-a-listener"));

    // The same address in lab B is lab B's own host.
    assert_eq!(
        sh(&rt, &b.scenario_id, "beta", &serve("lab-b-listener"))
            .await
            .exit_code,
        0
    );
    let from_b = sh(&rt, &b.scenario_id, "alpha", &fetch).await;
    assert!(from_b.stdout.contains("lab-b-listener"), "{from_b:?}");
    assert_prints(&rt, &a.scenario_id, "alpha", &fetch, "lab-a-listener").await;
    tokio::join!(guard_a.close(&rt), guard_b.close(&rt));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outside_the_lab_is_reachable() {
    let rt = runtime().await;
    let t = fixture("flat-lab.yaml");

    // A namespace of our own with an address in the lab's range and a listener in it.
    let ns = TestNs::create("out");
    ns.ip(&["link", "add", "o0", "type", "veth", "peer", "name", "o1"]);
    ns.ip(&["addr", "add", "10.30.0.200/24", "dev", "o0"]);
    ns.ip(&["link", "set", "o0", "up"]);
    ns.ip(&["link", "set", "o1", "up"]);
    ns.ip(&["link", "set", "lo", "up"]);
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "outside-listener").unwrap();
    // `ip netns exec` execs httpd, so the child's PID is the listener's: killed by PID on drop.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _listener = Kill(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "busybox",
                "httpd",
                "-f",
                "-p",
                "10.30.0.200:9000",
                "-h",
            ])
            .arg(www.path())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sanity = run(&[
        "ip",
        "netns",
        "exec",
        &ns.name,
        "busybox",
        "wget",
        "-qO-",
        "http://10.30.0.200:9000/",
    ]);
    assert!(
        sanity.contains("outside-listener"),
        "the outside listener works from its own namespace"
    );

    // A TCP listener on this host's docker0 address.
    let docker0 = run(&["ip", "-4", "-o", "addr", "show", "docker0"]);
    let host_ip = docker0
        .split_whitespace()
        .nth(3)
        .and_then(|c| c.split('/').next())
        .expect("docker0 address")
        .to_owned();
    let host_listener = tokio::net::TcpListener::bind((host_ip.as_str(), 0))
        .await
        .unwrap();
    let port = host_listener.local_addr().unwrap().port();

    let (lab, guard) = launch(&rt, &t).await;
    let scn = &lab.scenario_id;
    let r = sh(
        &rt,
        scn,
        "alpha",
        "timeout 3 wget -qO- http://10.30.0.200:9000/",
    )
    .await;
    assert_ne!(r.exit_code, 0, "lab reached a listener outside it: {r:?}");
    assert!(!r.stdout.contains("outside-listener"));
    let r = sh(
        &rt,
        scn,
        "alpha",
        &format!("nc -w 2 {host_ip} {port} </dev/null"),
    )
    .await;
    assert_ne!(
        r.exit_code, 0,
        "lab reached the host's docker0 address: {r:?}"
    );
    let accepted = tokio::time::timeout(Duration::from_millis(200), host_listener.accept()).await;
    assert!(
        accepted.is_err(),
        "the host listener saw a connection from the lab"
    );
    // No route out at all: only the lab subnet.
    let routes = sh(&rt, scn, "alpha", "ip route").await.stdout;
    assert_eq!(routes.lines().count(), 1, "{routes}");
    guard.close(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_between_lab_hosts_with_net_raw() {
    let rt = runtime().await;
    let t = fixture("flat-lab.yaml");
    let (lab, guard) = launch(&rt, &t).await;
    let r = sh(&rt, &lab.scenario_id, "alpha", "ping -c 2 -W 2 beta").await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(r.stdout.contains("2 packets received"), "{}", r.stdout);
    guard.close(&rt).await;
}

/// On an overlay2 engine the runtime writes `/etc/hosts` and Docker builds no network sandbox
/// (`docker/hosts.rs`): each container is still alone in a namespace of its own, holding only
/// `lo` and its planned link; the hosts file is root's and read-only inside and names every lab
/// host. Elsewhere Docker's sandbox stays and the same holds of its hosts file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_hosts_resolve_without_a_docker_network_sandbox() {
    let rt = runtime().await;
    let (lab, guard) = launch(&rt, &fixture("flat-lab.yaml")).await;
    let scn = &lab.scenario_id;
    let v = docker_inspect(&forge_runtime::container_name(scn, "alpha"));
    let overlay2 = v["GraphDriver"]["Name"] == "overlay2";
    assert_eq!(
        v["Config"]["NetworkDisabled"] == true,
        overlay2,
        "{}",
        v["Config"]
    );
    assert_eq!(v["HostConfig"]["NetworkMode"], "none");
    assert!(
        v["HostConfig"]["ExtraHosts"].is_null() == overlay2,
        "{}",
        v["HostConfig"]["ExtraHosts"]
    );

    let hosts = sh(&rt, scn, "alpha", "cat /etc/hosts").await.stdout;
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(
        hosts.contains("\talpha") && hosts.contains("\tbeta"),
        "{hosts}"
    );
    let w = sh(&rt, scn, "alpha", "echo 10.9.9.9 evil >> /etc/hosts").await;
    assert_ne!(w.exit_code, 0, "/etc/hosts is writable: {w:?}");
    assert_prints(&rt, scn, "alpha", "stat -c %u:%a /etc/hosts", "0:644").await;

    // A namespace of its own, not the host's, with nothing in it but lo and the lab link.
    let pid = v["State"]["Pid"].as_i64().unwrap();
    let ns = |p: &str| std::fs::read_link(format!("{p}/ns/net")).unwrap();
    assert_ne!(ns(&format!("/proc/{pid}")), ns("/proc/self"));
    let links = sh(&rt, scn, "alpha", "ls /sys/class/net").await.stdout;
    let mut links: Vec<&str> = links.split_whitespace().collect();
    links.sort_unstable();
    assert_eq!(links, ["eth0", "lo"]);
    let r = sh(&rt, scn, "alpha", "ping -c 1 -W 2 beta").await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    guard.close(&rt).await;
}
