//! Lab network features beyond a plain /24 (docs/dsl.md "Networks"): point-to-point /30 and
//! /31 links, checked through loading and address planning.

use std::net::Ipv4Addr;

use forge_core::template::{ScenarioTemplate, TemplateErrors, hosts_file, load, plan_lab};

/// A two-router lab whose only subnet is `cidr`, with the given attachment lines for `r1` and
/// `r2` (YAML flow mappings or subnet names).
fn lab(cidr: &str, r1: &str, r2: &str) -> Result<ScenarioTemplate, TemplateErrors> {
    lab_with(&format!("cidr: {cidr}"), r1, r2)
}

/// [`lab`] with the subnet's fields after its name given whole (`cidr: …, cidr6: …`).
fn lab_with(subnet: &str, r1: &str, r2: &str) -> Result<ScenarioTemplate, TemplateErrors> {
    let text = format!(
        r#"apiVersion: frostgate.forge/v1
kind: ScenarioTemplate
metadata:
  name: p2p-lab
  labels: [class:ccna, tier:foundation, topic:routing]
spec:
  limits: {{cpu: 1, memory_mb: 256, attacker_max_exploits: 0, timeout_minutes: 30}}
  network:
    egress: deny
    subnets:
      - {{name: link, {subnet}}}
  assets:
    containers:
      - name: r1
        image: forge/router:1
        learner: true
        networks: [{r1}]
        capabilities: [NET_ADMIN]
      - name: r2
        image: forge/router:1
        networks: [{r2}]
        capabilities: [NET_ADMIN]
  successCriteria:
    - id: ping
      evidence:
        - type: command
          container: r1
          command: "ping -c1 -W1 r2"
          expect: {{exit_code: 0}}
"#
    );
    load("p2p.yaml", &text)
}

fn addresses(t: &ScenarioTemplate) -> Vec<String> {
    plan_lab(t)
        .unwrap()
        .containers
        .iter()
        .flat_map(|c| c.attachments.iter().map(|a| a.cidr()))
        .collect()
}

#[test]
fn slash_31_uses_both_addresses() {
    let t = lab("10.0.0.0/31", "link", "link").unwrap();
    assert_eq!(addresses(&t), ["10.0.0.0/31", "10.0.0.1/31"]);
    let t = lab(
        "10.0.0.0/31",
        "{name: link, address: 10.0.0.1}",
        "{name: link, address: 10.0.0.0}",
    )
    .unwrap();
    assert_eq!(addresses(&t), ["10.0.0.1/31", "10.0.0.0/31"]);
}

#[test]
fn slash_30_has_two_hosts() {
    let t = lab("10.0.0.4/30", "link", "link").unwrap();
    assert_eq!(addresses(&t), ["10.0.0.5/30", "10.0.0.6/30"]);
    let t = lab("10.0.0.4/30", "{name: link, address: 10.0.0.6}", "link").unwrap();
    assert_eq!(addresses(&t), ["10.0.0.6/30", "10.0.0.5/30"]);
    for reserved in ["10.0.0.4", "10.0.0.7"] {
        let e = lab(
            "10.0.0.4/30",
            &format!("{{name: link, address: {reserved}}}"),
            "link",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("network or broadcast"), "{e}");
        assert!(
            e.contains("spec.assets.containers[0].networks[0].address"),
            "{e}"
        );
    }
}

#[test]
fn a_full_point_to_point_link_is_exhausted_not_overfilled() {
    // A third host on a /31 has nowhere to go: planning says so rather than reusing an address.
    let t = lab("10.0.0.0/31", "link", "link").unwrap();
    let mut t2 = t.clone();
    let mut extra = t2.spec.assets.containers[1].clone();
    extra.name = "r3".into();
    t2.spec.assets.containers.push(extra);
    assert!(plan_lab(&t2).is_err());
}

#[test]
fn slash_32_is_refused_with_the_allowed_range() {
    let e = lab("10.0.0.0/32", "link", "link").unwrap_err().to_string();
    assert!(e.contains("spec.network.subnets[0].cidr"), "{e}");
    assert!(e.contains("between /8 and /31"), "{e}");
}

#[test]
fn unaddressed_attachments_are_planned_up_without_an_address() {
    let t = lab("10.0.0.0/24", "{name: link, address: none}", "link").unwrap();
    assert_eq!(addresses(&t), ["none", "10.0.0.10/24"]);
    let plan = plan_lab(&t).unwrap();
    // No hosts entry for a name without an address; a stable MAC for a DHCP static lease.
    assert!(!plan.hosts_file().contains("r1"), "{}", plan.hosts_file());
    let r1 = &plan.container("r1").unwrap().attachments[0];
    assert_eq!(r1.mac, [0x02, 0, 0, 0, 0, 0]);
    assert_eq!(
        plan.container("r2").unwrap().attachments[0].mac,
        [0x02, 0, 10, 0, 0, 10]
    );
    // The gate sees the same word the author wrote.
    let input = forge_core::template::policy_input(&t);
    assert_eq!(
        input["assets"]["containers"][0]["networks"][0]["address"],
        "none"
    );
}

#[test]
fn a_misspelt_unaddressed_attachment_names_the_field() {
    let e = lab("10.0.0.0/24", "{name: link, address: nonе}", "link")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spec.assets.containers[0].networks[0].address"),
        "{e}"
    );
    assert!(e.contains("IPv4 address (or none)"), "{e}");
}

fn addresses6(t: &ScenarioTemplate) -> Vec<Option<String>> {
    plan_lab(t)
        .unwrap()
        .containers
        .iter()
        .flat_map(|c| c.attachments.iter().map(|a| a.cidr6()))
        .collect()
}

#[test]
fn dual_stack_subnets_plan_ula_addresses() {
    let dual = "cidr: 10.0.0.0/24, cidr6: 'fd00:10::/64'";
    let t = lab_with(dual, "{name: link, address6: 'fd00:10::1'}", "link").unwrap();
    assert_eq!(
        addresses6(&t),
        [Some("fd00:10::1/64".into()), Some("fd00:10::a/64".into())]
    );
    // `address6: none` leaves the interface for the learner; IPv4 is planned as usual.
    let t = lab_with(dual, "{name: link, address6: none}", "link").unwrap();
    assert_eq!(addresses6(&t), [None, Some("fd00:10::a/64".into())]);
    assert_eq!(addresses(&t), ["10.0.0.10/24", "10.0.0.11/24"]);
    // RFC 6164: both addresses of a /127 are hosts.
    let t = lab_with("cidr: 10.0.0.0/31, cidr6: 'fd00::/127'", "link", "link").unwrap();
    assert_eq!(
        addresses6(&t),
        [Some("fd00::/127".into()), Some("fd00::1/127".into())]
    );
    // The gate sees the prefix as written.
    let input = forge_core::template::policy_input(&t);
    assert_eq!(input["network"]["subnets"][0]["cidr6"], "fd00::/127");
}

#[test]
fn ipv6_mistakes_name_the_field() {
    let cases = [
        (
            "cidr: 10.0.0.0/24, cidr6: '2001:db8::/64'",
            "link",
            "spec.network.subnets[0].cidr6",
            "inside fd00::/8",
        ),
        (
            "cidr: 10.0.0.0/24, cidr6: 'fd00::/32'",
            "link",
            "spec.network.subnets[0].cidr6",
            "between /48 and /127",
        ),
        (
            "cidr: 10.0.0.0/24, cidr6: 'fd00::/64'",
            "{name: link, address6: 'fd00:1::1'}",
            "spec.assets.containers[0].networks[0].address6",
            "outside fd00::/64",
        ),
        (
            "cidr: 10.0.0.0/24, cidr6: 'fd00::/64'",
            "{name: link, address6: 'fd00::'}",
            "spec.assets.containers[0].networks[0].address6",
            "subnet-router anycast",
        ),
        (
            "cidr: 10.0.0.0/24",
            "{name: link, address6: 'fd00::1'}",
            "spec.assets.containers[0].networks[0].address6",
            "has no cidr6",
        ),
        (
            "cidr: 10.0.0.0/24, cidr6: 'fd00::/64'",
            "{name: link, address6: 'fd00::zz'}",
            "spec.assets.containers[0].networks[0].address6",
            "IPv6 address (or none)",
        ),
    ];
    for (subnet, r1, path, reason) in cases {
        let e = lab_with(subnet, r1, "link").unwrap_err().to_string();
        assert!(e.contains(path) && e.contains(reason), "{subnet} {r1}: {e}");
    }
}

#[test]
fn ipv6_probe_targets_stay_in_the_lab() {
    use forge_core::playbook::{network_probe_command, split_target};
    assert_eq!(split_target("fd00::10"), ("fd00::10", None));
    assert_eq!(split_target("[fd00::10]:80"), ("fd00::10", Some("80")));
    assert_eq!(split_target("10.0.0.1:80"), ("10.0.0.1", Some("80")));
    assert!(network_probe_command("[fd00::10]:80", 3).starts_with("nc -w 3 'fd00::10' 80"));
    assert!(network_probe_command("fd00::10", 3).starts_with("ping -c 1 -W 3 'fd00::10'"));
}

#[test]
fn hosts_file_starts_like_dockers_and_lists_every_lab_name() {
    let t = hosts_file(&[
        (Ipv4Addr::new(10, 0, 0, 10), vec!["learner".into()]),
        (
            Ipv4Addr::new(10, 0, 0, 1),
            vec!["router".into(), "gw".into()],
        ),
        (Ipv4Addr::new(10, 0, 0, 9), vec![]),
    ]);
    assert!(t.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost"));
    assert!(
        t.ends_with("10.0.0.10\tlearner\n10.0.0.1\trouter gw\n"),
        "{t}"
    );
    assert!(!t.contains("10.0.0.9"));
}
