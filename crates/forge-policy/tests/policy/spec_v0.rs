//! The spec's seed training gate (Rego v0) loads verbatim and decides like ours.

use forge_policy::loader::{self, PolicySource, RegoVersion};
use forge_policy::{EmbeddedEngine, PolicyName};

use crate::common::{fixture, spec_cases};

fn spec_text() -> String {
    std::fs::read_to_string(fixture("spec_training_v0.rego")).expect("fixture")
}

#[test]
fn spec_policy_is_detected_as_v0_and_ours_as_v1() {
    let spec = loader::parse_module(PolicySource::new("spec.rego", spec_text())).unwrap();
    assert_eq!(spec.version, RegoVersion::V0);
    assert_eq!(spec.package, "frostgate.forge.training");
    for src in loader::bundled_sources() {
        let m = loader::parse_module(src).unwrap();
        assert_eq!(m.version, RegoVersion::V1, "{}", m.name);
    }
}

#[test]
fn v1_without_import_is_accepted_as_v1() {
    let text = "package p\n\nallow if input.x == 1\n";
    let m = loader::parse_module(PolicySource::new("p.rego", text)).unwrap();
    assert_eq!(m.version, RegoVersion::V1);
}

#[test]
fn spec_policy_decides_like_ours() {
    let ours = EmbeddedEngine::bundled().unwrap();
    let spec = EmbeddedEngine::builder()
        .without_bundled()
        .policy("spec_training_v0.rego", spec_text())
        .build()
        .unwrap();
    for (case, input, expected) in spec_cases() {
        let a = ours.decide(PolicyName::TrainingGate, &input).unwrap();
        let b = spec.decide(PolicyName::TrainingGate, &input).unwrap();
        assert_eq!(a.allow, expected, "ours on {case}: {:?}", a.deny_reasons);
        assert_eq!(b.allow, expected, "spec on {case}");
        assert_eq!(a.input_hash, b.input_hash);
    }
}

#[test]
fn operator_dir_module_replaces_the_bundled_gate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("training.rego"), spec_text()).unwrap();
    let engine = EmbeddedEngine::builder()
        .operator_dir(dir.path())
        .build()
        .unwrap();
    let training: Vec<_> = engine
        .modules()
        .iter()
        .filter(|m| m.package == "frostgate.forge.training")
        .collect();
    assert_eq!(training.len(), 1);
    assert_eq!(training[0].version, RegoVersion::V0);
    // The other gates are still the bundled ones.
    assert!(engine.has_policy(PolicyName::SpawnGate));
    // The spec's own deny reason comes through.
    let d = engine
        .decide(
            PolicyName::TrainingGate,
            &crate::common::spec_minimal("netplus", 0, "allowlist"),
        )
        .unwrap();
    assert!(!d.allow);
    assert_eq!(d.deny_reasons, vec!["egress must be deny".to_owned()]);
}

#[test]
fn operator_data_enables_an_allowlist_profile() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("data.json"),
        r#"{"frostgate": {"forge": {"config": {"allowlist_profiles": ["pypi-mirror"]}}}}"#,
    )
    .unwrap();
    let engine = EmbeddedEngine::builder()
        .operator_dir(dir.path())
        .build()
        .unwrap();
    let mut input = crate::common::spec_minimal("netplus", 0, "allowlist");
    input["network"]["allowlist_profile"] = "pypi-mirror".into();
    assert!(
        engine
            .decide(PolicyName::TrainingGate, &input)
            .unwrap()
            .allow
    );
    input["network"]["allowlist_profile"] = "github".into();
    assert!(
        !engine
            .decide(PolicyName::TrainingGate, &input)
            .unwrap()
            .allow
    );
}
