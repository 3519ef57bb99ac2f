//! The Rego test runner and the `forge policy` CLI pieces.

use std::path::PathBuf;

use forge_policy::cli::{PolicyCommand, run};
use forge_policy::{PolicyName, run_tests};

use crate::common::{fixture, policies_dir};

#[test]
fn bundled_policy_tests_all_pass() {
    let report = run_tests(&policies_dir()).unwrap();
    let failures: Vec<_> = report.results.iter().filter(|r| !r.passed).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(report.passed() >= 100, "only {} tests", report.passed());
    for package in ["training_test", "spawn_test", "action_test", "llm_test"] {
        let prefix = format!("data.frostgate.forge.{package}.test_");
        assert!(
            report.results.iter().any(|r| r.name.starts_with(&prefix)),
            "no tests in {package}"
        );
    }
    assert!(
        report
            .results
            .iter()
            .any(|r| r.name == "data.frostgate.forge.training_test.test_allow_netplus_template")
    );
}

fn failing_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gate.rego"),
        "package ops.gate\nimport rego.v1\ndefault allow := false\nallow if input.ok == true\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("gate_test.rego"),
        r#"package ops.gate_test
import rego.v1
import data.ops.gate

# test_in_a_comment is not a test
test_passes if gate.allow with input as {"ok": true}

test_fails if gate.allow with input as {"ok": false}

test_not_a_boolean := 7

test_errors if {
	x := 1 / 0
	x > 0
}
"#,
    )
    .unwrap();
    dir
}

#[test]
fn failing_tests_are_reported_by_name() {
    let dir = failing_dir();
    let report = run_tests(dir.path()).unwrap();
    let by_name = |n: &str| {
        report
            .results
            .iter()
            .find(|r| r.name == format!("data.ops.gate_test.{n}"))
            .unwrap_or_else(|| panic!("{n} not run: {report:#?}"))
    };
    assert_eq!(report.results.len(), 4, "{report:#?}");
    assert!(by_name("test_passes").passed);
    let fails = by_name("test_fails");
    assert!(!fails.passed);
    assert_eq!(fails.failure.as_deref(), Some("undefined"));
    assert_eq!(
        by_name("test_not_a_boolean").failure.as_deref(),
        Some("evaluated to 7")
    );
    assert!(!by_name("test_errors").passed);
    assert_eq!(report.passed(), 1);
    assert_eq!(report.failed(), 3);
    assert!(!report.success());
}

#[test]
fn v0_tests_run_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("spec_training_v0.rego"),
        dir.path().join("training.rego"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("training_test.rego"),
        "package frostgate.forge.training_test\n\ntest_cissp {\n  data.frostgate.forge.training.allow with input as {\"metadata\": {\"labels\": [\"class:cissp\"]}, \"limits\": {\"attacker_max_exploits\": 5}, \"network\": {\"egress\": \"deny\"}}\n}\n",
    )
    .unwrap();
    let report = run_tests(dir.path()).unwrap();
    assert_eq!(report.results.len(), 1);
    assert!(report.success(), "{report:#?}");
}

#[test]
fn cli_test_exit_codes() {
    let code = run(PolicyCommand::Test {
        dir: Some(policies_dir()),
        verbose: false,
    })
    .unwrap();
    assert_eq!(code, 0);
    let dir = failing_dir();
    let code = run(PolicyCommand::Test {
        dir: Some(dir.path().to_path_buf()),
        verbose: true,
    })
    .unwrap();
    assert_eq!(code, 1);
    assert!(
        run(PolicyCommand::Test {
            dir: Some(PathBuf::from("/nonexistent/forge-policies")),
            verbose: false,
        })
        .is_err()
    );
}

#[test]
fn cli_eval_prints_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(&input, crate::common::netplus_template().to_string()).unwrap();
    let code = run(PolicyCommand::Eval {
        policy: PolicyName::TrainingGate,
        input: input.clone(),
        policy_dir: None,
    })
    .unwrap();
    assert_eq!(code, 0);

    std::fs::write(&input, "{broken").unwrap();
    let err = run(PolicyCommand::Eval {
        policy: PolicyName::TrainingGate,
        input,
        policy_dir: None,
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("is not valid JSON"), "{err:#}");
}

#[test]
fn cli_parses_with_clap() {
    use clap::{Parser, Subcommand};
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }
    #[derive(Subcommand)]
    enum Cmd {
        #[command(subcommand)]
        Policy(PolicyCommand),
    }
    let cli = Cli::try_parse_from([
        "forge", "policy", "eval", "--policy", "llm_gate", "--input", "in.json",
    ])
    .unwrap();
    let Cmd::Policy(PolicyCommand::Eval { policy, .. }) = cli.cmd else {
        panic!("not eval");
    };
    assert_eq!(policy, PolicyName::LlmGate);
    let cli = Cli::try_parse_from(["forge", "policy", "test", "-v"]).unwrap();
    assert!(matches!(
        cli.cmd,
        Cmd::Policy(PolicyCommand::Test {
            dir: None,
            verbose: true
        })
    ));
    assert!(
        Cli::try_parse_from([
            "forge", "policy", "eval", "--policy", "nope", "--input", "x"
        ])
        .is_err()
    );
}
