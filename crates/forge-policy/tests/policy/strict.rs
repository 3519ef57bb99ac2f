//! The bundled gates with strict builtins: regorus made to raise the errors OPA's own engine
//! raises (a builtin given an argument of the wrong type, or a malformed CIDR), which the
//! embedded engine turns into undefined. robustness.rs decides every malformed input under both,
//! so a gate that would fail under a real OPA behind OPA_URL fails with plain `cargo test` and no
//! OPA; `scripts/check-opa-parity.sh` is the full comparison against OPA itself.

use forge_policy::PolicyName;
use forge_policy::loader::{self, RegoVersion};
use serde_json::Value;

/// The bundled gates in a regorus engine with strict builtin errors.
pub fn strict_engine() -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine.set_strict_builtin_errors(true);
    for src in loader::bundled_sources() {
        let m = loader::parse_module(src).unwrap();
        engine.set_rego_v0(m.version == RegoVersion::V0);
        engine.add_policy(m.name, m.text).unwrap();
    }
    engine
}

/// allow and the sorted deny reasons of the gate's package document, as the Data API gives it.
pub fn strict_decision(
    engine: &mut regorus::Engine,
    policy: PolicyName,
    input: &Value,
) -> Result<(bool, Vec<String>), String> {
    engine.set_input(regorus::Value::from(input.clone()));
    let results = engine
        .eval_query(format!("data.{}", policy.package()), false)
        .map_err(|e| e.to_string())?;
    let doc = results
        .result
        .first()
        .and_then(|r| r.expressions.first())
        .map(|e| serde_json::to_value(&e.value).unwrap())
        .unwrap_or_default();
    let allow = doc["allow"].as_bool().unwrap_or(false);
    let mut reasons: Vec<String> = doc["deny_reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    reasons.sort();
    Ok((allow, reasons))
}
