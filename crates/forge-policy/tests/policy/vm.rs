//! The shipped gates run on regorus's VM, everything else on the interpreter, and the two decide
//! alike: on every gate's inputs with each field removed or replaced by every kind of JSON value
//! (a missing field is where the VM once decided otherwise).

use forge_policy::{Decision, EmbeddedEngine, PolicyName};
use serde_json::Value;

use crate::common::{gate_cases, netplus_template, policies_dir};
use crate::robustness::{garbage, pointers};

#[test]
fn shipped_gates_run_on_the_vm_and_operator_gates_on_the_interpreter() {
    let shipped = EmbeddedEngine::bundled().unwrap();
    for gate in PolicyName::ALL {
        assert!(shipped.on_vm(gate), "{gate} is not on the vm");
    }

    // The shipped text from a directory is still the text CI checks against OPA.
    let same_text = EmbeddedEngine::builder()
        .operator_dir(policies_dir())
        .build()
        .unwrap();
    assert!(same_text.on_vm(PolicyName::TrainingGate));

    // An operator's own gate is not: the interpreter is the reference.
    let text = std::fs::read_to_string(policies_dir().join("action_gate.rego")).unwrap();
    let edited = text.replace(
        "\"forge.instructor\"",
        "\"forge.instructor\", \"forge.red\"",
    );
    assert_ne!(text, edited, "the edit changed nothing");
    let operator = EmbeddedEngine::builder()
        .policy("ops/action_gate.rego", edited)
        .build()
        .unwrap();
    assert!(!operator.on_vm(PolicyName::ActionGate));
    assert!(operator.on_vm(PolicyName::TrainingGate));

    let off = EmbeddedEngine::builder().vm(false).build().unwrap();
    assert!(PolicyName::ALL.into_iter().all(|g| !off.on_vm(g)));
}

/// The input without the node at `pointer` (a key, or an element of a list).
fn without(input: &Value, pointer: &str) -> Value {
    let mut out = input.clone();
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    match out.pointer_mut(parent).unwrap() {
        Value::Object(map) => {
            map.remove(last);
        }
        Value::Array(items) => {
            items.remove(last.parse::<usize>().unwrap());
        }
        _ => unreachable!("a pointer's parent holds children"),
    }
    out
}

/// The shipped gates on the VM and on the interpreter, both without a decision cache.
fn uncached_engines() -> (EmbeddedEngine, EmbeddedEngine) {
    let builder = || EmbeddedEngine::builder().decision_cache(0);
    (
        builder().build().unwrap(),
        builder().vm(false).build().unwrap(),
    )
}

fn outcome(d: Decision) -> (bool, Vec<String>, serde_json::Map<String, Value>) {
    (d.allow, d.deny_reasons, d.extra)
}

#[test]
fn the_vm_and_the_interpreter_decide_alike() {
    let (vm, interpreter) = uncached_engines();
    let mut decisions = 0;
    for (gate, input) in gate_cases() {
        let mut paths = Vec::new();
        pointers(&input, String::new(), &mut paths);
        let mut variants = vec![input.clone(), Value::Object(Default::default())];
        for path in &paths {
            variants.push(without(&input, path));
            for junk in garbage() {
                let mut mutated = input.clone();
                *mutated.pointer_mut(path).unwrap() = junk;
                variants.push(mutated);
            }
        }
        for variant in variants {
            let a = vm.decide(gate, &variant).map(outcome);
            let b = interpreter.decide(gate, &variant).map(outcome);
            match (a, b) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{gate} decides otherwise on {variant}"),
                (a, b) => panic!("{gate} on {variant}: vm {a:?}, interpreter {b:?}"),
            }
            decisions += 1;
        }
    }
    assert!(decisions > 1000, "{decisions}");
}

#[test]
fn a_large_lab_decides_on_the_vm_as_on_the_interpreter() {
    // 200 containers on 50 subnets: past the VM's default budget of 25,000 instructions.
    let mut lab = netplus_template();
    let subnets: Vec<Value> = (0..50)
        .map(|i| serde_json::json!({"name": format!("net{i}"), "cidr": format!("10.{i}.0.0/24")}))
        .collect();
    let containers: Vec<Value> = (0..200)
        .map(|i| {
            serde_json::json!({
                "name": format!("c{i}"), "image": "forge/nginx-test:1.0", "read_only": true,
                "capabilities": ["NET_ADMIN", "NET_RAW"],
                "networks": [{"name": format!("net{}", i % 50), "address": format!("10.{}.0.{}", i % 50, 10 + i)}],
            })
        })
        .collect();
    lab["network"]["subnets"] = Value::Array(subnets);
    lab["assets"]["containers"] = Value::Array(containers);
    let (vm, interpreter) = uncached_engines();
    let a = outcome(vm.decide(PolicyName::TrainingGate, &lab).unwrap());
    let b = outcome(interpreter.decide(PolicyName::TrainingGate, &lab).unwrap());
    assert_eq!(a, b);
    // Over the netplus ceiling of 6 containers, and nothing else.
    assert_eq!(a.1.len(), 1, "{:?}", a.1);
}
