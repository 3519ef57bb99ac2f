//! Every decision is counted and audited.

use std::sync::Arc;

use forge_core::audit::{MemoryAuditSink, Outcome};
use forge_policy::{DecisionContext, EmbeddedEngine, PolicyName, input_hash};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::json;

use crate::common::{netplus_template, spec_minimal};

/// Decision counts by (policy, result), as the metrics recorder saw them.
struct Counts(Vec<(metrics_util::CompositeKey, DebugValue)>);

impl Counts {
    fn get(&self, policy: &str, result: &str) -> u64 {
        self.0
            .iter()
            .filter(|(key, _)| key.key().name() == "forge_opa_decisions_total")
            .filter(|(key, _)| {
                let labels: Vec<(&str, &str)> =
                    key.key().labels().map(|l| (l.key(), l.value())).collect();
                labels.contains(&("policy", policy)) && labels.contains(&("result", result))
            })
            .map(|(_, v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    }
}

/// Runs `f` under a recorder of its own, so the counts are this test's alone.
fn counting<T>(f: impl FnOnce() -> T) -> (T, Counts) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let out = metrics::with_local_recorder(&recorder, f);
    let snapshot = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| (k, v))
        .collect();
    (out, Counts(snapshot))
}

/// An engine with the bundled gates auditing into memory as the orchestrator.
fn audited_engine() -> (Arc<MemoryAuditSink>, EmbeddedEngine) {
    let sink = Arc::new(MemoryAuditSink::default());
    let engine = EmbeddedEngine::builder()
        .audit(sink.clone(), "forge_orchestrator")
        .build()
        .unwrap();
    (sink, engine)
}

#[test]
fn decisions_are_counted_by_policy_and_result() {
    let engine = EmbeddedEngine::bundled().unwrap();
    let ((), counts) = counting(|| {
        engine
            .decide(PolicyName::TrainingGate, &netplus_template())
            .unwrap();
        engine
            .decide(
                PolicyName::TrainingGate,
                &spec_minimal("netplus", 0, "deny"),
            )
            .unwrap();
        engine
            .decide(
                PolicyName::TrainingGate,
                &spec_minimal("netplus", 3, "deny"),
            )
            .unwrap();
        engine.decide(PolicyName::SpawnGate, &json!({})).unwrap();
        engine.decide(PolicyName::LlmGate, &json!(42)).unwrap_err();
    });
    assert_eq!(counts.get("training_gate", "allow"), 2);
    assert_eq!(counts.get("training_gate", "deny"), 1);
    assert_eq!(counts.get("spawn_gate", "deny"), 1);
    assert_eq!(counts.get("llm_gate", "error"), 1);
}

#[test]
fn decisions_are_audited() {
    let (sink, engine) = audited_engine();
    let template = netplus_template();
    let allowed = engine.decide(PolicyName::TrainingGate, &template).unwrap();
    let denied_input = spec_minimal("cissp", 6, "deny");
    let denied = engine
        .decide_with(
            PolicyName::TrainingGate,
            &denied_input,
            &DecisionContext {
                actor: Some("tenant:acme".into()),
                resource_id: Some("scn-42".into()),
            },
        )
        .unwrap();
    engine
        .decide(PolicyName::SpawnGate, &json!("x"))
        .unwrap_err();

    let events = sink.events();
    assert_eq!(events.len(), 3);

    let e = &events[0];
    assert_eq!(e.event_type, "policy.decision");
    assert_eq!(e.action, "decide");
    assert_eq!(e.outcome, Outcome::Success);
    assert_eq!(e.actor, "forge_orchestrator");
    assert_eq!(e.resource_id, "netplus-routing-lab");
    assert_eq!(e.details["policy"], "training_gate");
    assert_eq!(e.details["decision_id"], allowed.decision_id.as_str());
    assert_eq!(e.details["input_hash"], input_hash(&template).as_str());
    assert_eq!(e.details["deny_reasons"], json!([]));

    let e = &events[1];
    assert_eq!(e.outcome, Outcome::Denied);
    assert_eq!(e.actor, "tenant:acme");
    assert_eq!(e.resource_id, "scn-42");
    assert_eq!(e.details["decision_id"], denied.decision_id.as_str());
    assert_eq!(
        e.details["deny_reasons"],
        json!(["limits.attacker_max_exploits 6 exceeds the cissp limit of 5"])
    );

    let e = &events[2];
    assert_eq!(e.outcome, Outcome::Error);
    assert_eq!(e.details["policy"], "spawn_gate");
    assert!(
        e.details["error"]
            .as_str()
            .unwrap()
            .contains("invalid input")
    );
}

#[test]
fn input_hash_is_canonical() {
    let a = json!({"b": 1, "a": {"y": [1, 2, {"k": "v", "j": null}], "x": "s"}});
    let b: serde_json::Value =
        serde_json::from_str(r#"{"a":{"x":"s","y":[1,2,{"j":null,"k":"v"}]},"b":1}"#).unwrap();
    assert_eq!(input_hash(&a), input_hash(&b));
    assert_ne!(input_hash(&a), input_hash(&json!({"b": 2})));
    // sha256 of the canonical text `{"a":1}`.
    assert_eq!(
        input_hash(&json!({"a": 1})),
        "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    );
}

#[test]
fn llm_decisions_carry_approval() {
    let engine = EmbeddedEngine::bundled().unwrap();
    let d = engine
        .decide(
            PolicyName::LlmGate,
            &crate::common::llm_input("nft flush ruleset"),
        )
        .unwrap();
    assert!(!d.allow);
    assert!(d.deny_reasons.is_empty());
    assert!(d.requires_approval());
    assert_eq!(
        d.extra["approval_reasons"],
        json!(["proposal.command changes firewall rules"])
    );
    let d = engine
        .decide(PolicyName::LlmGate, &crate::common::llm_input("ip route"))
        .unwrap();
    assert!(d.allow && !d.requires_approval());
}

#[test]
fn cached_decisions_are_still_counted_audited_and_fresh() {
    let (sink, engine) = audited_engine();
    assert!(engine.caches_decisions());
    let input = spec_minimal("netplus", 2, "deny");
    let ((a, b), counts) = counting(|| {
        (
            engine.decide(PolicyName::TrainingGate, &input).unwrap(),
            engine.decide(PolicyName::TrainingGate, &input).unwrap(),
        )
    });
    assert_eq!(
        (a.allow, &a.deny_reasons, &a.input_hash),
        (b.allow, &b.deny_reasons, &b.input_hash)
    );
    assert_ne!(a.decision_id, b.decision_id);
    assert_eq!(counts.get("training_gate", "deny"), 2);
    let ids: Vec<_> = sink
        .events()
        .iter()
        .map(|e| e.details["decision_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(a.decision_id), json!(b.decision_id)]);
}

#[test]
fn cache_agrees_with_evaluation_and_stays_off_for_impure_policies() {
    let cached = EmbeddedEngine::bundled().unwrap();
    let cold = EmbeddedEngine::builder().decision_cache(0).build().unwrap();
    assert!(!cold.caches_decisions());
    for (policy, input) in crate::common::gate_cases() {
        let expected = cold.decide(policy, &input).unwrap();
        for _ in 0..2 {
            let d = cached.decide(policy, &input).unwrap();
            assert_eq!(
                (d.allow, &d.deny_reasons, &d.extra),
                (expected.allow, &expected.deny_reasons, &expected.extra),
                "{policy} {input}"
            );
        }
    }
    let clock = EmbeddedEngine::builder()
        .policy(
            "clock.rego",
            "package frostgate.forge.action\nimport rego.v1\nallow if time.now_ns() > 0\n",
        )
        .build()
        .unwrap();
    assert!(!clock.caches_decisions());
}
