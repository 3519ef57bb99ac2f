//! The Rego test runner (`forge policy test` itself is tested in forge-cli).

use forge_policy::run_tests;

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

#[test]
fn failing_tests_are_reported_by_name() {
    // Shared with forge-cli's `forge policy test` check.
    let report = run_tests(&fixture("failing")).unwrap();
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
fn a_missing_directory_is_an_error_not_an_empty_pass() {
    let err = run_tests(std::path::Path::new("/nonexistent/forge-policies")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/forge-policies"),
        "{err}"
    );
}
