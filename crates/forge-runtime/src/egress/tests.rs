//! Egress settings, the fabric's gateway addresses and profile lookup at launch.

use super::*;

fn template(egress: &str, gateway: bool) -> ScenarioTemplate {
    let gw = if gateway {
        "\n        gateway: 10.20.0.1"
    } else {
        ""
    };
    let router = if gateway {
        "\n      - name: router\n        image: forge/router:1\n        networks:\n          - {name: lan, address: 10.20.0.1}"
    } else {
        ""
    };
    let text = format!(
        "apiVersion: frostgate.forge/v1
kind: ScenarioTemplate
metadata:
  name: egress-unit
  labels: [class:ccna]
spec:
  limits: {{cpu: 1, memory_mb: 128, attacker_max_exploits: 0, timeout_minutes: 10}}
  network:
    {egress}
    subnets:
      - name: lan
        cidr: 10.20.0.0/24{gw}
      - name: small
        cidr: 10.30.0.0/29
  assets:
    containers:
      - name: a
        image: forge/learner:1
        networks: [lan]
      - name: b
        image: forge/learner:1
        networks:
          - {{name: small, address: 10.30.0.6}}{router}
  successCriteria:
    - id: x
      evidence:
        - {{type: file, container: a, path: /tmp/x}}
"
    );
    forge_core::template::load("t.yaml", &text).unwrap()
}

#[test]
fn the_fabric_gateway_is_the_highest_free_address_where_no_router_is() {
    let t = template("egress: allowlist\n    allowlist_profile: mirror", false);
    let plan = forge_core::template::plan_lab(&t).unwrap();
    let g = fabric_gateways(&t, &plan).unwrap();
    assert_eq!(
        g.iter()
            .map(|g| (g.bridge.as_str(), g.address.to_string(), g.prefix_len))
            .collect::<Vec<_>>(),
        [
            ("br0", "10.20.0.254".to_owned(), 24),
            // .6 is taken explicitly: the next one down.
            ("br1", "10.30.0.5".to_owned(), 29),
        ]
    );
    // A subnet with a declared gateway keeps its router.
    let t = template("egress: allowlist\n    allowlist_profile: mirror", true);
    let plan = forge_core::template::plan_lab(&t).unwrap();
    let g = fabric_gateways(&t, &plan).unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].subnet, "small");
}

#[test]
fn point_to_point_links_get_no_fabric_gateway() {
    let mut t = template("egress: allowlist\n    allowlist_profile: mirror", false);
    // A /30 whose two hosts would both be routers: the fabric must not take one of them.
    t.spec.network.subnets[1].cidr = "10.30.0.4/30".parse().unwrap();
    let plan = forge_core::template::plan_lab(&t).unwrap();
    let g = fabric_gateways(&t, &plan).unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].subnet, "lan");
}

#[tokio::test]
async fn deny_labs_get_nothing_and_unknown_profiles_are_named() {
    let cfg = EgressConfig::default();
    let t = template("egress: deny", false);
    let plan = forge_core::template::plan_lab(&t).unwrap();
    assert!(prepare(&cfg, &t, &plan).await.unwrap().is_none());

    let t = template("egress: allowlist\n    allowlist_profile: mirror", false);
    let e = prepare(&cfg, &t, &plan).await.unwrap_err().to_string();
    assert_eq!(
        e,
        "egress allowlist profile `mirror` is not configured on this lab host (configured: \
         none); define it in the FORGE_EGRESS_PROFILES file"
    );
    let profiles = EgressProfiles::parse(
        "f",
        "profiles:\n  other:\n    rules:\n      - {cidr: 198.18.0.0/15, protocol: tcp, ports: [1]}\n",
    )
    .unwrap();
    let cfg = EgressConfig::new(profiles.clone(), Uplink::Host, DEFAULT_LINK_POOL).unwrap();
    let e = prepare(&cfg, &t, &plan).await.unwrap_err().to_string();
    assert!(
        e.contains("`mirror` is not configured") && e.contains("(configured: other)"),
        "{e}"
    );

    let text = "profiles:\n  mirror:\n    rules:\n      - {cidr: 198.18.0.0/15, protocol: tcp, ports: [1]}\n";
    let cfg = EgressConfig::new(
        EgressProfiles::parse("f", text).unwrap(),
        Uplink::Host,
        DEFAULT_LINK_POOL,
    )
    .unwrap();
    let e = prepare(&cfg, &t, &plan).await.unwrap().unwrap();
    assert_eq!(e.profile.name, "mirror");
    assert_eq!(e.gateways.len(), 2);
}

#[test]
fn settings_are_checked() {
    let p = EgressProfiles::default;
    assert!(EgressConfig::new(p(), Uplink::Host, "198.19.0.0/24".parse().unwrap()).is_ok());
    for (pool, why) in [
        ("198.19.0.1/24", "without host bits"),
        ("198.19.0.1/32", "at least two addresses"),
        ("169.254.0.0/24", "lies in 169.254.0.0/16"),
    ] {
        let e = EgressConfig::new(p(), Uplink::Host, pool.parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{pool}: {e}");
    }
    for bad in ["", "a/b", "..", "forge_scn_0123456789ab"] {
        assert!(
            EgressConfig::new(p(), Uplink::Netns(bad.into()), DEFAULT_LINK_POOL).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn uplinks_round_trip_through_the_fabric_alias() {
    for u in [Uplink::Host, Uplink::Netns("upstream".into())] {
        assert_eq!(Uplink::from_alias(&u.alias()), Some(u));
    }
    assert_eq!(Uplink::from_alias("netns=../x"), None);
    assert_eq!(Uplink::from_alias("bogus"), None);
}
