//! Integration tests of the scenario DSL, playbooks and address planning, driven by the
//! fixture files: valid templates must load, and every invalid fixture must fail with the
//! path and reason its `# expect: path | reason` header names.

use std::path::{Path, PathBuf};

use forge_core::playbook::{self, Observation, PlaybookStep};
use forge_core::template::{self, ScenarioTemplate, load, plan_lab, policy_input};
use proptest::prelude::*;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir =
        Path::new(&*std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn repo_templates() -> Vec<PathBuf> {
    let dir =
        Path::new(&*std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../../templates");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn load_path(p: &Path) -> Result<ScenarioTemplate, template::TemplateErrors> {
    let text = std::fs::read_to_string(p).unwrap();
    load(&p.file_name().unwrap().to_string_lossy(), &text)
}

#[test]
fn spec_example_and_catalog_validate() {
    let mut files = fixtures("valid");
    files.extend(repo_templates());
    assert!(files.len() >= 7);
    for f in files {
        if let Err(e) = load_path(&f) {
            panic!("{} should be valid:\n{e}", f.display());
        }
    }
}

#[test]
fn every_invalid_fixture_names_path_and_reason() {
    let files = fixtures("invalid");
    assert!(
        files.len() >= 25,
        "need at least 25 kinds of mistake, have {}",
        files.len()
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let expects: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|l| {
                let (p, r) = l.split_once(" | ").expect("header is `path | reason`");
                (p.trim().to_owned(), r.trim().to_owned())
            })
            .collect();
        assert!(!expects.is_empty(), "{} has no expect header", f.display());
        let err = match load_path(&f) {
            Ok(_) => panic!("{} should be invalid", f.display()),
            Err(e) => e,
        };
        let rendered = err.to_string();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(rendered.starts_with(&name), "{rendered}");
        for (path, reason) in &expects {
            assert!(
                err.errors
                    .iter()
                    .any(|d| &d.path == path && d.reason.contains(reason.as_str())),
                "{}: expected `{path}: …{reason}…`, got:\n{rendered}",
                f.display()
            );
        }
        for d in &err.errors {
            assert!(d.line.is_some(), "{}: no line for {d}", f.display());
        }
    }
}

#[test]
fn errors_carry_line_and_column() {
    let f =
        Path::new(&*std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/invalid/unknown-subnet.yaml");
    let err = load_path(&f).unwrap_err();
    let text = std::fs::read_to_string(&f).unwrap();
    let line = text
        .lines()
        .position(|l| !l.starts_with('#') && l.contains("dmz_net"))
        .unwrap()
        + 1;
    let d = &err.errors[0];
    assert_eq!(d.line, Some(line), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("unknown-subnet.yaml:{line}:")),
        "{err}"
    );
}

#[test]
fn all_errors_are_reported_in_one_run() {
    let f =
        Path::new(&*std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/invalid/many-errors-at-once.yaml");
    assert!(load_path(&f).unwrap_err().errors.len() >= 2);
}

fn netplus() -> ScenarioTemplate {
    let p =
        Path::new(&*std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../../templates/netplus-routing.yaml");
    load_path(&p).unwrap()
}

#[test]
fn lab_plan_honours_explicit_and_assigns_implicit_addresses() {
    let t = netplus();
    let plan = plan_lab(&t).unwrap();
    let router = plan.container("router").unwrap();
    assert_eq!(router.attachments[0].cidr(), "10.10.0.1/24");
    assert_eq!(router.attachments[1].ifname, "eth1");
    assert_eq!(router.attachments[1].bridge, "br1");
    assert!(
        plan.hosts_file()
            .contains("10.20.0.10\ttarget_server target_server-target_net")
    );

    let spec =
        Path::new(&*std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/valid/spec-example.yaml");
    let plan = plan_lab(&load_path(&spec).unwrap()).unwrap();
    let addrs: Vec<String> = plan
        .containers
        .iter()
        .flat_map(|c| c.attachments.iter().map(|a| a.cidr()))
        .collect();
    assert_eq!(
        addrs,
        [
            "10.10.0.10/24",
            "10.10.0.11/24",
            "10.20.0.10/24",
            "10.20.0.11/24"
        ]
    );
}

#[test]
fn policy_input_is_flattened_with_object_attachments() {
    let spec =
        Path::new(&*std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/valid/spec-example.yaml");
    let v = policy_input(&load_path(&spec).unwrap());
    assert_eq!(v["metadata"]["labels"][0], "class:netplus");
    assert_eq!(v["limits"]["attacker_max_exploits"], 0);
    assert_eq!(v["network"]["egress"], "deny");
    assert_eq!(
        v["assets"]["containers"][0]["networks"][0]["name"],
        "learner_net"
    );
    assert!(v["successCriteria"].is_array());
    // Absent optional fields are absent, not null: policies test presence, and `null` is not
    // a number.
    assert!(v["limits"].get("pids").is_none(), "{v}");
    assert!(
        v["assets"]["containers"][0]["networks"][0]
            .get("address")
            .is_none()
    );
}

#[test]
fn spec_playbook_parses_and_criteria_map_to_steps() {
    let text = r#"
playbook:
  - step: execute_command
    container: learner_vm
    command: "ping -c 1 10.10.0.1"
    expect:
      exit_code: 0
      stdout_contains: "1 packets received"
  - step: check_file
    container: learner_vm
    path: /etc/hosts
    expect:
      contains: "gateway"
"#;
    let pb = playbook::parse_playbook("pb.yaml", text).unwrap();
    assert_eq!(pb.playbook.len(), 2);
    assert!(matches!(pb.playbook[1], PlaybookStep::CheckFile { .. }));
    let bad = playbook::parse_playbook("pb.yaml", "playbook:\n  - step: reboot\n").unwrap_err();
    assert!(bad.to_string().contains("pb.yaml:"), "{bad}");

    let plans = playbook::plan_criteria(&netplus());
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[0].steps[0].container(), "learner_vm");
    let obs = Observation::Command {
        exit_code: 0,
        stdout: "10.20.0.0/24 via 10.10.0.1 dev eth0".into(),
        stderr: String::new(),
        timed_out: false,
        duration_ms: 3,
    };
    assert!(playbook::evaluate(&plans[0].steps[0], &obs).passed);
    let outcome = playbook::evaluate(&plans[1].steps[0], &obs);
    assert!(!outcome.passed);
    assert!(
        outcome.message.contains("FrostGate target"),
        "{}",
        outcome.message
    );
}

/// Steps and expectations are objects: serde would also take an array, field by field (or, for
/// a tagged step, with the tag first), which no client means and no schema documents.
#[test]
fn steps_and_expectations_are_objects_never_arrays() {
    for json in [
        r#"{"playbook": [["execute_command", "vm", "id"]]}"#,
        r#"{"playbook": [{"step": "check_file", "container": "vm", "path": "/p", "expect": [true]}]}"#,
    ] {
        let err = serde_json::from_str::<playbook::Playbook>(json).unwrap_err();
        assert!(err.to_string().contains("expected a map"), "{json}: {err}");
    }
    let ok = r#"{"playbook": [{"step": "check_file", "container": "vm", "path": "/p",
                               "expect": {"file_exists": false}}]}"#;
    let pb = serde_json::from_str::<playbook::Playbook>(ok).unwrap();
    assert_eq!(pb.playbook[0].expect().file_exists, Some(false));
    let err = playbook::parse_playbook("pb.yaml", "playbook:\n  - [execute_command, vm, id]\n")
        .unwrap_err();
    assert!(err.to_string().contains("playbook[0]"), "{err}");
}

const NETPLUS: &str = include_str!("../../../templates/netplus-routing.yaml");

/// The netplus template with `extra` added to its first evidence item.
fn netplus_with_evidence(extra: &str) -> String {
    let at = "          command: \"ip route show\"\n";
    assert!(NETPLUS.contains(at), "fixture drifted");
    NETPLUS.replacen(at, &format!("{at}          {extra}\n"), 1)
}

#[test]
fn timeout_seconds_is_bounded_in_templates_playbooks_and_json() {
    use playbook::MAX_TIMEOUT_SECONDS;
    let max = u64::MAX;
    // Template: the schema refuses it at its path and line.
    let err = load(
        "lab.yaml",
        &netplus_with_evidence(&format!("timeout_seconds: {max}")),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("spec.successCriteria[0].evidence[0].timeout_seconds")
            && text.contains(&max.to_string()),
        "{text}"
    );
    assert!(text.starts_with("lab.yaml:"), "{text}");
    load("lab.yaml", &netplus_with_evidence("timeout_seconds: 300")).expect("300 is allowed");
    // The schema's bound is the code's bound.
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../schemas/scenario-template.schema.json")).unwrap();
    fn find<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
        match v {
            serde_json::Value::Object(o) => {
                o.get(key).or_else(|| o.values().find_map(|v| find(v, key)))
            }
            serde_json::Value::Array(a) => a.iter().find_map(|v| find(v, key)),
            _ => None,
        }
    }
    let bound = find(&schema, "timeout_seconds").expect("schema has timeout_seconds");
    assert_eq!(
        (&bound["minimum"], &bound["maximum"]),
        (&1.into(), &MAX_TIMEOUT_SECONDS.into()),
        "schema and MAX_TIMEOUT_SECONDS disagree"
    );

    // Playbook YAML: the error names the file, the step's field, its line and the range.
    for bad in [
        max.to_string(),
        "0".into(),
        "301".into(),
        "2.5".into(),
        "-1".into(),
    ] {
        let yaml = format!(
            "playbook:\n  - step: check_file\n    container: vm\n    path: /etc/hosts\n  - step: execute_command\n    container: vm\n    command: id\n    timeout_seconds: {bad}\n"
        );
        let err = playbook::parse_playbook("pb.yaml", &yaml).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("pb.yaml:8:")
                && text.contains("playbook[1].timeout_seconds")
                && text.contains(&format!("from 1 to {MAX_TIMEOUT_SECONDS}, got {bad}")),
            "{bad}: {text}"
        );
    }

    // JSON (the runner's API, bus messages): refused while deserialising, never a panic later.
    let json = format!(
        r#"{{"step":"probe_network","container":"vm","target":"web:80","timeout_seconds":{max}}}"#
    );
    let err = serde_json::from_str::<PlaybookStep>(&json).unwrap_err();
    assert!(err.to_string().contains("timeout_seconds must be"), "{err}");
    let mut t = serde_json::to_value(netplus()).unwrap();
    t["spec"]["successCriteria"][0]["evidence"][0]["timeout_seconds"] = max.into();
    let err = serde_json::from_value::<ScenarioTemplate>(t).unwrap_err();
    assert!(err.to_string().contains("timeout_seconds must be"), "{err}");

    // A step built in code is clamped, so deadline arithmetic cannot overflow.
    let step = PlaybookStep::ExecuteCommand {
        container: "vm".into(),
        command: "id".into(),
        expect: Default::default(),
        timeout_seconds: Some(max),
    };
    assert_eq!(step.timeout_seconds(), MAX_TIMEOUT_SECONDS);
}

#[test]
fn alias_expansion_is_budgeted_in_bytes_and_nodes() {
    // Few nodes, many bytes: one 64 KiB string repeated 100 times is 6.4 MB from a 65 KiB file.
    let mut yaml = format!("a: &big \"{}\"\nb: [", "x".repeat(64 * 1024));
    yaml.push_str(&["*big"; 100].join(", "));
    yaml.push_str("]\n");
    assert!(yaml.len() < template::MAX_YAML_BYTES);
    for err in [
        load("bomb.yaml", &yaml).unwrap_err(),
        playbook::parse_playbook("bomb.yaml", &yaml).unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            text.starts_with("bomb.yaml:2:")
                && text.contains(&format!(
                    "more than {} bytes (aliases included)",
                    template::MAX_EXPANDED_BYTES
                )),
            "{text}"
        );
    }
    // The classic billion laughs: nine levels of ten aliases each.
    let mut laughs = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = format!("*l{}", i - 1);
        laughs.push_str(&format!("l{i}: &l{i} [{}]\n", [p.as_str(); 10].join(", ")));
    }
    let text = load("laughs.yaml", &laughs).unwrap_err().to_string();
    assert!(
        text.starts_with("laughs.yaml:") && text.contains("expands to more than"),
        "{text}"
    );
    // Aliases within the budget still work.
    let ok = "a: &v {x: 1}\nb: [*v, *v]\n";
    assert_eq!(
        template::parse_yaml(ok).unwrap().value,
        serde_json::json!({"a": {"x": 1}, "b": [{"x": 1}, {"x": 1}]})
    );
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let mut text = String::from("# a comment that goes on\n");
    text.push_str(&"#".repeat(template::MAX_YAML_BYTES));
    let want = format!(
        "big.yaml: file is {} bytes; at most {} bytes of YAML are accepted",
        text.len(),
        template::MAX_YAML_BYTES
    );
    assert_eq!(load("big.yaml", &text).unwrap_err().to_string(), want);
    assert_eq!(
        playbook::parse_playbook("big.yaml", &text)
            .unwrap_err()
            .to_string(),
        want
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
        let _ = load("fuzz.yaml", &s);
        let _ = playbook::parse_playbook("fuzz.yaml", &s);
    }

    #[test]
    fn mutated_templates_never_panic(cut in 0usize..4000, insert in "[ -~\\n]{0,12}") {
        let base = include_str!("../../../templates/netplus-routing.yaml");
        let at = cut.min(base.len());
        let at = (0..=at).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
        let text = format!("{}{}{}", &base[..at], insert, &base[at..]);
        let _ = load("fuzz.yaml", &text);
    }
}

#[test]
fn consoles_are_the_learner_container_then_the_declared_ones() {
    let t = load_path(
        &repo_templates()
            .into_iter()
            .find(|p| p.ends_with("ccna-static-routing.yaml"))
            .unwrap(),
    )
    .unwrap();
    let consoles = t.consoles();
    let names: Vec<&str> = consoles.iter().map(|c| c.container.as_str()).collect();
    assert_eq!(names, ["r1", "pc"]);
    assert!(consoles.iter().all(|c| c.learner && c.command.is_none()));
    assert_eq!(consoles[1].title, "pc (10.1.0.10)");
    // An undeclared container has an instructor-only shell; an unknown one none at all.
    let r2 = t.console_of("r2").unwrap();
    assert!(!r2.learner);
    assert!(t.console_of("nope").is_none());

    let text = std::fs::read_to_string(fixtures("valid")[0].clone()).unwrap();
    let text = text.replacen(
        "      - name: router\n",
        "      - name: router\n        console: { command: [vtysh], learner: false }\n",
        1,
    );
    let t = load("console.yaml", &text).unwrap();
    let router = t.console_of("router").unwrap();
    assert_eq!(router.command.as_deref(), Some(&["vtysh".to_owned()][..]));
    assert!(!router.learner);
    assert_eq!(t.consoles().len(), 2);
    // `console: true` is the default console.
    let text = text.replace(
        "console: { command: [vtysh], learner: false }",
        "console: true",
    );
    let t = load("console.yaml", &text).unwrap();
    assert!(t.console_of("router").unwrap().learner);
}
