//! Broken policies and inputs give clear errors, never panics.

use forge_policy::{EmbeddedEngine, PolicyError, PolicyName};
use serde_json::json;

#[test]
fn syntax_error_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.rego");
    std::fs::write(
        &path,
        "package ops.broken\nimport rego.v1\n\nallow if {\n    input.x ==\n}\n",
    )
    .unwrap();
    let err = EmbeddedEngine::builder()
        .operator_dir(dir.path())
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PolicyError::Parse { .. }), "{text}");
    assert!(text.contains("broken.rego:6"), "{text}");
}

#[test]
fn module_valid_in_neither_dialect_reports_both() {
    let err = EmbeddedEngine::builder()
        .policy("odd.rego", "package odd\n\nallow {{ true\n")
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("odd.rego"), "{text}");
    assert!(
        text.contains("as rego v1") && text.contains("as rego v0"),
        "{text}"
    );
}

#[test]
fn v0_module_with_v1_import_is_not_retried_as_v0() {
    let err = EmbeddedEngine::builder()
        .policy(
            "mixed.rego",
            "package mixed\nimport rego.v1\nallow { true }\n",
        )
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PolicyError::Parse { .. }), "{text}");
    assert!(!text.contains("as rego v0"), "{text}");
}

#[test]
fn compile_errors_are_reported_at_build() {
    let err = EmbeddedEngine::builder()
        .policy(
            "unknown_fn.rego",
            "package frostgate.forge.spawn\nimport rego.v1\nallow if no_such.function(input)\n",
        )
        .build()
        .unwrap_err();
    assert!(matches!(err, PolicyError::Compile(_)), "{err}");
    assert!(err.to_string().contains("no_such.function"), "{err}");

    let err = EmbeddedEngine::builder()
        .policy(
            "conflict.rego",
            "package frostgate.forge.spawn\nimport rego.v1\nallow := true\nallow := false\n",
        )
        .build()
        .unwrap_err();
    assert!(matches!(err, PolicyError::Compile(_)), "{err}");
}

#[test]
fn missing_directory_and_bad_data_are_clear() {
    let err = EmbeddedEngine::builder()
        .operator_dir("/nonexistent/forge-policies")
        .build()
        .unwrap_err();
    assert!(matches!(err, PolicyError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/forge-policies"),
        "{err}"
    );

    let err = EmbeddedEngine::builder()
        .data("inline", json!([1, 2]))
        .build()
        .unwrap_err();
    assert!(matches!(err, PolicyError::Data { .. }), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.json"), "{oops").unwrap();
    let err = EmbeddedEngine::builder()
        .operator_dir(dir.path())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("data.json"), "{err}");
}

#[test]
fn malformed_input_is_invalid_input() {
    let engine = EmbeddedEngine::bundled().unwrap();
    for input in [json!(null), json!(5), json!("training"), json!([{}])] {
        let err = engine.decide(PolicyName::TrainingGate, &input).unwrap_err();
        assert!(matches!(err, PolicyError::InvalidInput(_)), "{err}");
        assert!(err.is_client_error());
        assert!(
            err.to_string()
                .starts_with("invalid input: input must be a JSON object"),
            "{err}"
        );
    }
}

#[test]
fn unknown_and_unloaded_policies() {
    let err = "firewall_gate".parse::<PolicyName>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown policy firewall_gate (known: training_gate, spawn_gate, action_gate, llm_gate)"
    );
    assert_eq!(
        "training".parse::<PolicyName>().unwrap(),
        PolicyName::TrainingGate
    );
    assert_eq!(
        "frostgate.forge.llm".parse::<PolicyName>().unwrap(),
        PolicyName::LlmGate
    );

    let engine = EmbeddedEngine::builder().without_bundled().build().unwrap();
    let err = engine
        .decide(PolicyName::SpawnGate, &json!({}))
        .unwrap_err();
    assert!(matches!(err, PolicyError::NotLoaded { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "policy spawn_gate is not loaded (no module declares package frostgate.forge.spawn)"
    );
}

#[test]
fn non_boolean_allow_is_an_eval_error() {
    let engine = EmbeddedEngine::builder()
        .without_bundled()
        .policy(
            "odd.rego",
            "package frostgate.forge.action\nimport rego.v1\nallow := \"yes\"\n",
        )
        .build()
        .unwrap();
    let err = engine
        .decide(PolicyName::ActionGate, &json!({}))
        .unwrap_err();
    assert!(matches!(err, PolicyError::Eval { .. }), "{err}");
    assert!(err.to_string().contains("allow must be a boolean"), "{err}");
}
