//! Lab link features of docs/dsl.md "Networks" on real kernels: point-to-point /31 and /30
//! links, unaddressed links leased over DHCP, dual-stack IPv6. Every packet stays inside the lab
//! the test launched.

use forge_runtime::Runtime;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_to_point_links_carry_traffic() {
    let rt = runtime().await;
    let t = fixture("p2p-lab.yaml");
    let (lab, guard) = launch(&rt, &t).await;
    let scn = &lab.scenario_id;
    // RFC 3021: both addresses of the /31 are hosts; the /30's hosts are .5 and .6.
    assert_prints(&rt, scn, "a", "ip -4 addr show eth0", "10.0.12.0/31").await;
    let b = sh(&rt, scn, "b", "ip -4 addr").await.stdout;
    assert!(
        b.contains("10.0.12.1/31") && b.contains("10.0.23.5/30"),
        "{b}"
    );
    assert_prints(&rt, scn, "c", "ip -4 addr show eth0", "10.0.23.6/30").await;
    for (from, to) in [("a", "10.0.12.1"), ("b", "10.0.12.0"), ("c", "10.0.23.5")] {
        let r = sh(&rt, scn, from, &format!("ping -c 1 -W 2 {to}")).await;
        assert_eq!(r.exit_code, 0, "{from} -> {to}: {r:?}");
    }
    guard.close(&rt).await;
    assert_eq!(lab_leftovers(scn), (vec![], false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaddressed_links_come_up_and_lease_over_dhcp() {
    let rt = runtime().await;
    let t = fixture("dhcp-lab.yaml");
    let (lab, guard) = launch(&rt, &t).await;
    let scn = &lab.scenario_id;
    // Up, with its planned MAC, and no IPv4 and no default route until the lease.
    let link = sh(&rt, scn, "pc", "ip addr show eth0").await.stdout;
    assert!(
        link.contains("UP") && link.contains("02:00:00:00:00:00"),
        "{link}"
    );
    assert!(!link.contains("inet "), "{link}");
    assert!(
        !sh(&rt, scn, "pc", "ip route")
            .await
            .stdout
            .contains("default")
    );
    let lease = sh(&rt, scn, "pc", "udhcpc -i eth0 -n -q -t 5 -T 1").await;
    assert_eq!(lease.exit_code, 0, "{lease:?}");
    // The lease hook (the image's /etc/udhcpc/default.script) applied address and router.
    assert_prints(&rt, scn, "pc", "ip -4 addr show eth0", "inet 10.50.0.1").await;
    assert_prints(&rt, scn, "pc", "ip route", "default via 10.50.0.1").await;
    assert_prints(&rt, scn, "pc", "wget -qO- http://10.50.0.20/", "FrostGate").await;
    guard.close(&rt).await;
    assert_eq!(lab_leftovers(scn), (vec![], false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_links_answer_at_once_over_ipv6() {
    let rt = runtime().await;
    let t = fixture("dual-stack-lab.yaml");
    let (lab, guard) = launch(&rt, &t).await;
    let scn = &lab.scenario_id;
    // Planned and explicit addresses, never tentative (no DAD), and IPv4 as before.
    let a = sh(&rt, scn, "alpha", "ip addr show eth0").await.stdout;
    assert!(
        a.contains("inet6 fd00:31::a/64") && a.contains("inet 10.31.0.10/24"),
        "{a}"
    );
    assert!(!a.contains("tentative"), "{a}");
    assert_prints(
        &rt,
        scn,
        "web",
        "ip -6 addr show eth0",
        "inet6 fd00:31::80/64",
    )
    .await;
    let g = sh(&rt, scn, "gamma", "ip -6 addr show eth0").await.stdout;
    assert!(
        !g.contains("fd00:31"),
        "gamma has no planned IPv6 address: {g}"
    );
    // Right after launch: ICMPv6 and TCP over IPv6, through the criteria's own probes.
    for c in forge_runtime::template_test::evaluate_criteria(&rt, scn, &t).await {
        assert!(
            c.result.passed,
            "{}: {:?}",
            c.result.criterion_id, c.result.message
        );
    }
    let r = sh(&rt, scn, "alpha", "wget -qO- 'http://[fd00:31::80]/'").await;
    assert!(r.stdout.contains("FrostGate"), "{r:?}");
    guard.close(&rt).await;
    assert_eq!(lab_leftovers(scn), (vec![], false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revived_container_gets_its_ipv6_and_unaddressed_links_back() {
    let rt = runtime().await;
    let t = fixture("dual-stack-lab.yaml");
    let (lab, guard) = launch(&rt, &t).await;
    let scn = &lab.scenario_id;
    let before = sh(&rt, scn, "gamma", "ip link show eth0").await.stdout;
    for c in ["alpha", "gamma"] {
        rt.kill(scn, c).await.expect("kill");
        rt.revive(scn, c).await.expect("revive");
    }
    // Re-plumbed from the container's label: the same address, MAC and IPv6 switched on.
    let a = sh(&rt, scn, "alpha", "ip addr show eth0").await.stdout;
    assert!(
        a.contains("inet6 fd00:31::a/64") && !a.contains("tentative"),
        "{a}"
    );
    let r = sh(&rt, scn, "alpha", "ping -c 1 -W 2 fd00:31::80").await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    let after = sh(&rt, scn, "gamma", "ip link show eth0").await.stdout;
    let mac = |s: &str| {
        s.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_owned)
    };
    assert_eq!(mac(&before), mac(&after), "{before} / {after}");
    assert!(mac(&after).is_some(), "{after}");
    guard.close(&rt).await;
    assert_eq!(lab_leftovers(scn), (vec![], false));
}
