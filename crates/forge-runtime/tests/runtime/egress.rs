//! Egress allowlist profiles on real labs, against an upstream the test builds itself:
//! an "upstream" namespace (where the labs' uplinks attach, the stand-in for the host) routes to
//! a "world" namespace (the stand-in for the internet) over 198.18.1.0/24; the link pool is
//! 198.19.0.0/24. Every address is inside the test's own namespaces, every listener is one the
//! test starts, and the namespaces, labs and listeners go on drop, also when an assertion fails.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use forge_core::template::{Egress, ScenarioTemplate};
use forge_runtime::{
    DockerRuntime, EgressConfig, EgressProfiles, LabHandle, Runtime, RuntimeError, Uplink,
};

use crate::common::*;

const ALLOWED: u16 = 8443;
const OTHER: u16 = 9443;
const WORLD: &str = "198.18.1.2";
const UPSTREAM: &str = "198.18.1.1";

/// One profile whose CIDR also covers the upstream's own address and the link pool, so the
/// test shows those are carved out whatever the profile says.
const PROFILES: &str = "\
profiles:
  test-upstream:
    description: the test's world namespace, one port
    rules:
      - cidr: 198.18.0.0/15
        protocol: tcp
        ports: [8443]
";

/// A TCP listener on a thread of its own inside a test namespace: answers every connection
/// with its tag and counts them. Stops (and its socket closes) on drop.
struct Listener {
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(ns: &str, addr: &str, port: u16, tag: &'static str) -> Self {
        let path = format!("/run/netns/{ns}");
        let addr: SocketAddr = format!("{addr}:{port}").parse().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let (ready, bound) = std::sync::mpsc::channel();
        let (s, h) = (stop.clone(), hits.clone());
        let thread = std::thread::spawn(move || {
            // This thread alone enters the namespace; it is ours and ends with the listener.
            let f = std::fs::File::open(&path).expect("test namespace");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let l = TcpListener::bind(addr).expect("bind in the test namespace");
            l.set_nonblocking(true).unwrap();
            ready.send(()).unwrap();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut conn, _)) => {
                        h.fetch_add(1, Ordering::Relaxed);
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(tag.as_bytes());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => break,
                }
            }
        });
        bound.recv().expect("listener bound");
        Self {
            stop,
            hits,
            thread: Some(thread),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The upstream and world namespaces, wired and listening. Listeners stop before the
/// namespaces go (field order).
struct Upstream {
    world_allowed: Listener,
    world_other: Listener,
    host: Listener,
    world: TestNs,
    up: TestNs,
}

impl Upstream {
    /// `tag` keeps the namespaces of concurrent tests apart.
    fn build(tag: &str) -> Self {
        let up = TestNs::create(&format!("{tag}up"));
        let world = TestNs::create(&format!("{tag}wo"));
        up.ip(&[
            "link",
            "add",
            "w0",
            "type",
            "veth",
            "peer",
            "name",
            "w1",
            "netns",
            &world.name,
        ]);
        up.ip(&["addr", "add", &format!("{UPSTREAM}/24"), "dev", "w0"]);
        world.ip(&["addr", "add", &format!("{WORLD}/24"), "dev", "w1"]);
        for (ns, dev) in [(&up, "w0"), (&world, "w1")] {
            ns.ip(&["link", "set", dev, "up"]);
            ns.ip(&["link", "set", "lo", "up"]);
        }
        // The world can address the pool, so the test can show nothing enters a lab unasked.
        world.ip(&["route", "add", "198.19.0.0/24", "via", UPSTREAM]);
        run(&[
            "ip",
            "netns",
            "exec",
            &up.name,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        Self {
            world_allowed: Listener::start(&world.name, WORLD, ALLOWED, "world-allowed"),
            world_other: Listener::start(&world.name, WORLD, OTHER, "world-other"),
            // The "host": the uplink namespace itself, on the allowed port, on every address.
            host: Listener::start(&up.name, "0.0.0.0", ALLOWED, "upstream-host"),
            world,
            up,
        }
    }

    fn config(&self, profiles: &EgressProfiles) -> EgressConfig {
        EgressConfig::new(
            profiles.clone(),
            Uplink::Netns(self.up.name.clone()),
            "198.19.0.0/24".parse().unwrap(),
        )
        .expect("egress settings")
    }
}

/// The spec of `t` labelled as a lab host of this test's own: a platform running on the same
/// machine (`forge up`) reaps labs without a host label as its own leftovers.
fn spec_here(t: &ScenarioTemplate) -> forge_runtime::LabSpec {
    spec(t).with_label("forge.host", format!("test-{}", run_id()))
}

/// Launches `t` with [`spec_here`].
async fn launch_here(rt: &DockerRuntime, t: &ScenarioTemplate) -> (LabHandle, LabGuard) {
    let s = spec_here(t);
    let guard = LabGuard::new(&s.scenario_id);
    (rt.launch(s).await.expect("launch"), guard)
}

fn profiles() -> EgressProfiles {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress-profiles.yaml");
    std::fs::write(&path, PROFILES).unwrap();
    EgressProfiles::load(&path).expect("profile file")
}

fn allowlisted(profile: &str) -> ScenarioTemplate {
    let mut t = fixture("flat-lab.yaml");
    t.spec.network.egress = Egress::Allowlist;
    t.spec.network.allowlist_profile = Some(profile.into());
    t
}

/// The fabric's uplink address (`up0`) of a lab.
fn uplink_address(lab: &LabHandle) -> String {
    let out = run(&[
        "ip",
        "-n",
        &lab.network_id,
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        "up0",
    ]);
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap_or_else(|| panic!("no uplink address in {out:?}"))
        .to_owned()
}

async fn connect(rt: &DockerRuntime, lab: &LabHandle, to: &str, port: u16) -> String {
    let cmd = format!("nc -w 3 {to} {port} </dev/null");
    let r = sh(rt, &lab.scenario_id, "alpha", &cmd).await;
    r.stdout
}

fn nft_tables(ns: &str) -> String {
    run(&["ip", "netns", "exec", ns, "nft", "list", "tables"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlist_profile_opens_exactly_its_port() {
    let upstream = Upstream::build("a");
    let rt = runtime().await.with_egress(upstream.config(&profiles()));
    let t = allowlisted("test-upstream");
    let deny = fixture("flat-lab.yaml");
    let (a, b, c) = tokio::join!(
        launch_here(&rt, &t),
        launch_here(&rt, &t),
        launch_here(&rt, &deny)
    );
    let ((a, guard_a), (b, guard_b), (c, guard_c)) = (a, b, c);

    // The fabric is the gateway of the lab's router-less subnet.
    assert_prints(
        &rt,
        &a.scenario_id,
        "alpha",
        "ip route",
        "default via 10.30.0.254",
    )
    .await;
    assert!(nft_tables(&a.network_id).contains("table inet forge_egress"));
    assert!(nft_tables(&upstream.up.name).contains("table inet forge_uplink"));

    // The profile's port on the world answers; another port of the same host does not.
    let got = connect(&rt, &a, WORLD, ALLOWED).await;
    assert!(got.contains("world-allowed"), "allowed port: {got:?}");
    let got = connect(&rt, &b, WORLD, ALLOWED).await;
    assert!(
        got.contains("world-allowed"),
        "identical lab B too: {got:?}"
    );
    let got = connect(&rt, &a, WORLD, OTHER).await;
    assert!(!got.contains("world-other"), "other port answered: {got:?}");
    assert_eq!(
        upstream.world_other.hits(),
        0,
        "the other port saw a connection"
    );
    assert_eq!(upstream.world_allowed.hits(), 2);

    // The host (the uplink namespace): neither its address on the world side nor the uplink's
    // peer answers, though the profile's CIDR covers the first and the port is the allowed one.
    let (a_up, b_up) = (uplink_address(&a), uplink_address(&b));
    assert_ne!(a_up, b_up, "labs share an uplink address");
    let peer = {
        let last: u8 = a_up.rsplit('.').next().unwrap().parse().unwrap();
        format!("198.19.0.{}", last - 1)
    };
    for host in [UPSTREAM, peer.as_str()] {
        let got = connect(&rt, &a, host, ALLOWED).await;
        assert!(
            !got.contains("upstream-host"),
            "lab reached the host at {host}: {got:?}"
        );
    }
    assert_eq!(upstream.host.hits(), 0, "the host listener saw a lab");
    // The fabric itself refuses them (the uplink namespace's own guard is a second layer).
    let never = run(&[
        "ip",
        "netns",
        "exec",
        &a.network_id,
        "nft",
        "list",
        "set",
        "inet",
        "forge_egress",
        "never",
    ]);
    assert!(
        never.contains(UPSTREAM) && never.contains("198.19.0.0/24"),
        "{never}"
    );

    // The fabric itself does not answer its lab, not even a ping to the gateway it routes by.
    let ping = sh(&rt, &a.scenario_id, "alpha", "ping -c 1 -W 2 10.30.0.254").await;
    assert_ne!(ping.exit_code, 0, "the fabric answered: {ping:?}");

    // Inside an allowlisted lab, its hosts still talk to each other over the bridge.
    let serve =
        "mkdir -p /tmp/www && echo lab-b > /tmp/www/index.html && httpd -p 8443 -h /tmp/www";
    assert_eq!(sh(&rt, &b.scenario_id, "beta", serve).await.exit_code, 0);
    assert_prints(
        &rt,
        &b.scenario_id,
        "alpha",
        "timeout 3 wget -qO- http://beta:8443/",
        "lab-b",
    )
    .await;
    let ping = sh(&rt, &b.scenario_id, "alpha", "ping -c 1 -W 2 beta").await;
    assert_eq!(ping.exit_code, 0, "{ping:?}");

    // Another lab: its uplink address is as far as anything outside could get, and a lab
    // cannot get there (B listens on the allowed port behind it).
    let got = connect(&rt, &a, &b_up, ALLOWED).await;
    assert!(!got.contains("lab-b"), "lab A reached lab B: {got:?}");
    // Nor can the world open a connection into a lab through its uplink.
    let into = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &upstream.world.name,
            "busybox",
            "nc",
            "-w",
            "2",
            &b_up,
            "8443",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&into.stdout).contains("lab-b"),
        "the world reached into lab B"
    );

    // The deny lab next to them has no uplink at all.
    let routes = sh(&rt, &c.scenario_id, "alpha", "ip route").await.stdout;
    assert_eq!(routes.lines().count(), 1, "{routes}");
    let links = run(&["ip", "-n", &c.network_id, "-o", "link"]);
    assert!(!links.contains("up0"), "{links}");
    assert!(!nft_tables(&c.network_id).contains("forge_egress"));

    // Teardown takes the uplinks and, with the last one, the shared table.
    guard_a.close(&rt).await;
    let left = run(&["ip", "-n", &upstream.up.name, "-o", "link"]);
    assert!(
        !left.contains(&format!("fgu{}", a.scenario_id.suffix())),
        "{left}"
    );
    assert!(
        left.contains(&format!("fgu{}", b.scenario_id.suffix())),
        "{left}"
    );
    assert!(
        nft_tables(&upstream.up.name).contains("forge_uplink"),
        "B still needs it"
    );
    tokio::join!(guard_b.close(&rt), guard_c.close(&rt));
    let left = run(&["ip", "-n", &upstream.up.name, "-o", "link"]);
    assert!(!left.contains("fgu"), "{left}");
    let routes = run(&["ip", "-n", &upstream.up.name, "route"]);
    assert!(!routes.contains("198.19."), "{routes}");
    assert!(!nft_tables(&upstream.up.name).contains("forge_uplink"));
    for lab in [&a, &b, &c] {
        assert_eq!(lab_leftovers(&lab.scenario_id), (vec![], false));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_profile_fails_the_launch_naming_it() {
    let upstream = Upstream::build("b");
    let rt = runtime().await.with_egress(upstream.config(&profiles()));
    let unknown = spec_here(&allowlisted("not-configured"));
    let scn = unknown.scenario_id.clone();
    let _guard = LabGuard::new(&scn);
    let err = rt.launch(unknown).await.expect_err("unknown profile");
    assert!(
        matches!(&err, RuntimeError::EgressProfileUnknown { profile, .. } if profile == "not-configured"),
        "{err}"
    );
    assert!(
        err.to_string().contains("`not-configured`") && err.to_string().contains("test-upstream")
    );
    assert_eq!(
        lab_leftovers(&scn),
        (vec![], false),
        "nothing may be created"
    );
    // Without any profile file, the same lab fails the same way.
    let plain = runtime().await;
    let unconfigured = spec_here(&allowlisted("test-upstream"));
    let _guard2 = LabGuard::new(&unconfigured.scenario_id);
    let err = plain
        .launch(unconfigured)
        .await
        .expect_err("no profiles configured");
    assert!(err.to_string().contains("(configured: none)"), "{err}");
    assert!(!run(&["ip", "-n", &upstream.up.name, "-o", "link"]).contains("fgu"));

    // A profile that exists, but an uplink namespace that does not: the half-built lab goes.
    let gone = EgressConfig::new(
        profiles(),
        Uplink::Netns(format!("forge_t_{}gone", run_id())),
        "198.19.0.0/24".parse().unwrap(),
    )
    .unwrap();
    let rt = runtime().await.with_egress(gone);
    let failing = spec_here(&allowlisted("test-upstream"));
    let scn = failing.scenario_id.clone();
    let _guard3 = LabGuard::new(&scn);
    let err = rt.launch(failing).await.expect_err("no uplink namespace");
    assert!(err.to_string().contains("gone` does not exist"), "{err}");
    assert_eq!(
        lab_leftovers(&scn),
        (vec![], false),
        "the failed lab was torn down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_uplink_comes_and_goes_without_a_trace() {
    // The default uplink: the host's own namespace. No traffic is sent; the test checks what
    // the uplink leaves on the host while the lab runs and that teardown takes all of it.
    let cfg =
        EgressConfig::new(profiles(), Uplink::Host, "198.19.255.0/24".parse().unwrap()).unwrap();
    let rt = runtime().await.with_egress(cfg);
    let (lab, guard) = launch_here(&rt, &allowlisted("test-upstream")).await;
    let peer = format!("fgu{}", lab.scenario_id.suffix());
    let link = run(&["ip", "-4", "-o", "addr", "show", "dev", &peer]);
    assert!(link.contains("198.19.255."), "{link}");
    assert!(run(&["nft", "list", "tables"]).contains("table inet forge_uplink"));
    assert!(uplink_address(&lab).starts_with("198.19.255."));
    guard.close(&rt).await;
    assert!(!run(&["ip", "-o", "link"]).contains(&peer));
    assert!(!run(&["ip", "route"]).contains("198.19.255."));
    if !run(&["ip", "-o", "link"]).contains(": fgu") {
        assert!(!run(&["nft", "list", "tables"]).contains("forge_uplink"));
    }
}
