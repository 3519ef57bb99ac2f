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
