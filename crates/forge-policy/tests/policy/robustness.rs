//! Hostile input: every field of every gate's input replaced by every kind of JSON value still
//! yields a decision (allow or deny), never an error or a panic, and the same one with strict
//! builtins (strict.rs, OPA's behaviour); concurrent decisions agree with sequential ones.

use std::sync::Arc;

use forge_policy::{EmbeddedEngine, PolicyName};
use serde_json::{Value, json};

use crate::common::gate_cases;
use crate::strict::{strict_decision, strict_engine};

pub fn garbage() -> Vec<Value> {
    vec![
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(1e300),
        json!(""),
        json!("10.10.0.0/33"),
        json!("rm -rf /"),
        json!([]),
        json!([1, "a", null, {"x": []}]),
        json!({}),
        json!({"name": 5, "cidr": []}),
    ]
}

/// JSON pointers of every node below the root.
pub fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_field_replaced_by_garbage_still_decides() {
    let engine = EmbeddedEngine::builder().decision_cache(0).build().unwrap();
    let mut strict = strict_engine();
    let mut seen = std::collections::BTreeSet::new();
    let mut decisions = 0;
    for (policy, input) in gate_cases() {
        // One structurally distinct input per gate is enough; the rest are variations.
        if !seen.insert((policy, input.to_string().len() / 200)) {
            continue;
        }
        let mut paths = Vec::new();
        pointers(&input, String::new(), &mut paths);
        for path in &paths {
            for junk in garbage() {
                let mut mutated = input.clone();
                *mutated.pointer_mut(path).unwrap() = junk.clone();
                let d = engine
                    .decide(policy, &mutated)
                    .unwrap_or_else(|e| panic!("{policy} with {path} = {junk}: {e}"));
                if !d.allow {
                    assert!(
                        !d.deny_reasons.is_empty() || d.requires_approval(),
                        "{policy} with {path} = {junk}: denied without a reason"
                    );
                }
                let under_strict = strict_decision(&mut strict, policy, &mutated)
                    .unwrap_or_else(|e| panic!("{policy} with {path} = {junk}, strict: {e}"));
                assert_eq!(
                    under_strict,
                    (d.allow, d.deny_reasons),
                    "{policy} with {path} = {junk}: strict builtins decide otherwise"
                );
                decisions += 1;
            }
        }
    }
    assert!(decisions > 500, "{decisions}");
}

#[test]
fn empty_and_foreign_inputs_are_denied_with_reasons() {
    let engine = EmbeddedEngine::bundled().unwrap();
    for policy in PolicyName::ALL {
        for input in [
            json!({}),
            json!({"input": {"metadata": {}}}),
            json!({"x": [1, 2, 3]}),
        ] {
            let d = engine.decide(policy, &input).unwrap();
            assert!(!d.allow, "{policy} allowed {input}");
            assert!(
                !d.deny_reasons.is_empty(),
                "{policy} gave no reason for {input}"
            );
        }
    }
}

#[test]
fn concurrent_decisions_match_sequential_ones() {
    // Cache off: every decision is a real concurrent evaluation on a pooled engine.
    let engine = Arc::new(EmbeddedEngine::builder().decision_cache(0).build().unwrap());
    let cases = gate_cases();
    let expected: Vec<_> = cases
        .iter()
        .map(|(p, i)| {
            let d = engine.decide(*p, i).unwrap();
            (d.allow, d.deny_reasons, d.extra)
        })
        .collect();
    let cases = Arc::new(cases);
    let expected = Arc::new(expected);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (engine, cases, expected) = (engine.clone(), cases.clone(), expected.clone());
            std::thread::spawn(move || {
                for round in 0..25 {
                    for (i, (p, input)) in cases.iter().enumerate().skip((t + round) % 3) {
                        let d = engine.decide(*p, input).unwrap();
                        assert_eq!((d.allow, d.deny_reasons, d.extra), expected[i]);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
