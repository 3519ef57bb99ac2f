//! The profile file: what it accepts, and errors that name file, line, field and reason.

use super::*;

const GOOD: &str = "\
profiles:
  mirror:
    description: the package mirror
    rules:
      - cidr: 198.18.1.0/24
        protocol: tcp
        ports: [443, \"8000-8099\"]
      - host: 198.18.2.7
        protocol: udp
        ports: [53]
  names:
    rules:
      - host: Mirror.Example.
        protocol: tcp
        ports: [80]
";

fn errors(text: &str) -> String {
    match EgressProfiles::parse("profiles.yaml", text) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_valid_file_reads_into_profiles() {
    let p = EgressProfiles::parse("profiles.yaml", GOOD).unwrap();
    assert_eq!(p.names().collect::<Vec<_>>(), ["mirror", "names"]);
    let m = p.get("mirror").unwrap();
    assert_eq!(m.description.as_deref(), Some("the package mirror"));
    assert_eq!(
        m.rules[0],
        Rule {
            destination: Destination::Cidr("198.18.1.0/24".parse().unwrap()),
            protocol: Protocol::Tcp,
            ports: vec![(443, 443), (8000, 8099)],
        }
    );
    assert_eq!(
        m.rules[1].destination,
        Destination::Host("198.18.2.7".into())
    );
    // Names are case-insensitive; the trailing dot of a fully qualified name goes.
    let n = p.get("names").unwrap();
    assert_eq!(
        n.rules[0].destination,
        Destination::Host("mirror.example".into())
    );
    assert!(p.get("absent").is_none());
}

#[test]
fn every_error_names_file_line_field_and_reason() {
    let text = "\
profiles:
  Bad Name:
    rules: []
  mirror:
    rules:
      - cidr: 10.0.0.1/24
        protocol: icmp
        ports: [0, \"90-80\", 22]
      - cidr: 10.0.0.0/8
        host: x.example
        protocol: tcp
        ports: [1]
      - host: \"-bad-.example\"
        protocol: tcp
        ports: []
        color: red
  meta:
    rules:
      - cidr: 169.254.169.254/32
        protocol: tcp
        ports: [80]
";
    let e = errors(text);
    let lines: Vec<&str> = e.lines().collect();
    for want in [
        "profiles.yaml:2:3: profiles.Bad Name: profile name `Bad Name` must be",
        "profiles.yaml:6:9: profiles.mirror.rules[0].cidr: `10.0.0.1/24` has host bits set; did you mean 10.0.0.0/24?",
        "profiles.yaml:7:9: profiles.mirror.rules[0].protocol: must be `tcp` or `udp`",
        "profiles.yaml:8:17: profiles.mirror.rules[0].ports[0]: `0` is not a port (1-65535)",
        "profiles.yaml:8:20: profiles.mirror.rules[0].ports[1]: `90-80` is not a port",
        "profiles.yaml:9:9: profiles.mirror.rules[1]: give either `cidr` or `host`, not both",
        "profiles.yaml:13:9: profiles.mirror.rules[2].host: `-bad-.example` is not a host name",
        "profiles.yaml:15:9: profiles.mirror.rules[2].ports: must be a list of 1 to 64 ports",
        "profiles.yaml:16:9: profiles.mirror.rules[2].color: unknown field `color`",
        "profiles.yaml:19:9: profiles.meta.rules[0].cidr: `169.254.169.254/32` lies in 169.254.0.0/16, which a lab may never reach",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in:\n{e}"
        );
    }
    assert_eq!(lines.len(), 10, "{e}");
}

#[test]
fn structure_errors() {
    let e = errors("{}");
    assert!(e.contains("profiles: is required"), "{e}");
    assert!(errors("profiles: [a]").contains("profiles: must be a mapping"));
    assert!(errors("profiles: {}\nextra: 1").contains("extra: unknown field `extra`"));
    assert!(errors("profiles:\n  p: {}\n").contains("profiles.p.rules: must be a non-empty list"));
    assert!(errors("profiles: [").contains("invalid YAML"));
    // No profiles at all is a valid (if useless) file.
    assert!(
        EgressProfiles::parse("f", "profiles: {}")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn load_reads_files_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress.yaml");
    std::fs::write(&path, GOOD).unwrap();
    assert!(EgressProfiles::load(&path).unwrap().get("mirror").is_some());
    let missing = dir.path().join("absent.yaml");
    let e = EgressProfiles::load(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "cannot read egress profiles {}",
            missing.display()
        )),
        "{e}"
    );
}

#[tokio::test]
async fn resolution_keeps_literals_and_refuses_what_labs_may_never_reach() {
    let p = EgressProfiles::parse("f", GOOD).unwrap();
    let r = p.get("mirror").unwrap().resolve().await.unwrap();
    assert_eq!(r.rules[1].destinations, ["198.18.2.7/32".parse().unwrap()]);
    assert!(r.hosts.is_empty(), "literals need no /etc/hosts line");

    // `localhost` comes from /etc/hosts through the system resolver (no network involved) and
    // is loopback: the lab's start fails naming profile and host.
    let text = "profiles:\n  lo:\n    rules:\n      - host: localhost\n        protocol: tcp\n        ports: [80]\n";
    let p = EgressProfiles::parse("f", text).unwrap();
    let e = p
        .get("lo")
        .unwrap()
        .resolve()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("egress profile `lo`: host `localhost` resolves to 127."),
        "{e}"
    );
}

#[test]
fn the_bundled_example_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/egress-profiles.example.yaml");
    let p = EgressProfiles::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p.names().collect::<Vec<_>>(),
        ["lab-services", "pypi-mirror"]
    );
}
