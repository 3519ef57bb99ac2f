//! `forge policy eval|test`.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use crate::{forge, repo, run};

/// Policies whose tests pass, fail, evaluate to a non-boolean and error: forge-policy's
/// fixture for its runner, so both check the same tests.
fn failing_dir() -> PathBuf {
    repo().join("crates/forge-policy/tests/fixtures/failing")
}

#[test]
fn test_exits_zero_only_when_every_test_passes() {
    let data = tempfile::tempdir().unwrap();
    let out = run(forge(data.path())
        .args(["policy", "test"])
        .arg(repo().join("policies")))
    .expect(0);
    assert!(
        out.stdout
            .contains("PASS data.frostgate.forge.training_test."),
        "{out:?}"
    );
    assert!(
        out.stdout.trim_end().ends_with(" passed, 0 failed"),
        "{out:?}"
    );

    let out = run(forge(data.path())
        .args(["policy", "test", "-v"])
        .arg(failing_dir()))
    .expect(1);
    assert!(
        out.stdout.contains("PASS data.ops.gate_test.test_passes"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("FAIL data.ops.gate_test.test_fails (undefined)"),
        "{out:?}"
    );
    assert!(out.stdout.contains("(evaluated to 7)"), "{out:?}");
    assert!(out.stdout.contains("1 passed, 3 failed"), "{out:?}");

    let out =
        run(forge(data.path()).args(["policy", "test", "/nonexistent/forge-policies"])).expect(1);
    assert!(
        out.stderr
            .contains("cannot run the tests in /nonexistent/forge-policies"),
        "{out:?}"
    );
}

#[test]
fn eval_prints_the_decision_and_exits_zero_whatever_it_is() {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("input.json");
    std::fs::write(&input, r#"{"metadata": {"labels": []}}"#).unwrap();
    let out = run(forge(data.path())
        .args(["policy", "eval", "--policy", "training_gate", "--input"])
        .arg(&input))
    .expect(0);
    let decision: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(decision["allow"], false, "{decision}");
    assert!(!decision["deny_reasons"].as_array().unwrap().is_empty());

    // `-` reads stdin; the package name works as well as the gate's.
    let mut child = forge(data.path())
        .args([
            "policy",
            "eval",
            "--input",
            "-",
            "--policy",
            "frostgate.forge.llm",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");

    std::fs::write(&input, "{broken").unwrap();
    let out = run(forge(data.path())
        .args(["policy", "eval", "--policy", "training_gate", "--input"])
        .arg(&input))
    .expect(1);
    assert!(out.stderr.contains("is not valid JSON"), "{out:?}");

    let out = run(forge(data.path())
        .args(["policy", "eval", "--policy", "nope", "--input"])
        .arg(&input))
    .expect(2);
    assert!(out.stderr.contains("nope"), "{out:?}");
}

#[test]
fn eval_loads_operator_policies_from_policy_dir() {
    let data = tempfile::tempdir().unwrap();
    let ops = tempfile::tempdir().unwrap();
    std::fs::write(
        ops.path().join("training.rego"),
        "package frostgate.forge.training\nimport rego.v1\ndefault allow := true\ndeny_reasons := []\n",
    )
    .unwrap();
    let input = data.path().join("input.json");
    std::fs::write(&input, "{}").unwrap();
    let eval = || {
        let mut cmd = forge(data.path());
        cmd.args(["policy", "eval", "--policy", "training_gate", "--input"])
            .arg(&input);
        cmd
    };
    let bundled = run(&mut eval()).expect(0);
    let decision: serde_json::Value = serde_json::from_str(&bundled.stdout).unwrap();
    assert_eq!(decision["allow"], false, "{bundled:?}");
    let out = run(eval().env("POLICY_DIR", ops.path())).expect(0);
    let decision: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(decision["allow"], true, "{out:?}");
}

#[test]
fn eval_lines_answers_each_line_in_order() {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("inputs.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"subject": {"sub": "c", "tenant_id": "acme", "roles": ["forge.spawn"]}, "#,
            r#""tenant": {"id": "acme", "entitled_tracks": ["netplus"], "#,
            r#""max_active_scenarios": 2, "active_scenarios": 0}, "request": {"track": "netplus"}}"#,
            "\n{broken\n[1]\n{}\n",
        ),
    )
    .unwrap();
    let out = run(forge(data.path())
        .args([
            "policy",
            "eval",
            "--policy",
            "spawn_gate",
            "--lines",
            "--input",
        ])
        .arg(&input))
    .expect(0);
    let answers: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 4, "{out:?}");
    assert_eq!(answers[0]["allow"], true, "{out:?}");
    let error = |i: usize| answers[i]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error(1).contains("line 2 is not valid JSON"), "{out:?}");
    assert!(error(2).contains("must be a JSON object"), "{out:?}");
    assert_eq!(answers[3]["allow"], false, "{out:?}");
    assert!(
        answers[3]["deny_reasons"]
            .as_array()
            .unwrap()
            .contains(&"subject is required".into()),
        "{out:?}"
    );
}
