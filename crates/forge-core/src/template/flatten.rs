//! The training gate's input: the template's metadata and spec flattened into one object
//! (docs/design.md §5): `{metadata, limits, network, assets, successCriteria, solution}`.

use serde_json::{Map, Value};

use super::ScenarioTemplate;

/// Builds the policy input for the training gate from a validated template.
pub fn policy_input(t: &ScenarioTemplate) -> Value {
    let spec = serde_json::to_value(&t.spec).unwrap_or(Value::Null);
    let mut out = Map::new();
    out.insert(
        "metadata".into(),
        serde_json::to_value(&t.metadata).unwrap_or(Value::Null),
    );
    if let Value::Object(spec) = spec {
        for (k, v) in spec {
            out.insert(k, v);
        }
    }
    // Attachments are normalised to objects so policies never have to branch on their form.
    if let Some(containers) = out
        .get_mut("assets")
        .and_then(|a| a.get_mut("containers"))
        .and_then(Value::as_array_mut)
    {
        for c in containers {
            if let Some(nets) = c.get_mut("networks").and_then(Value::as_array_mut) {
                for n in nets.iter_mut() {
                    if let Value::String(name) = n {
                        *n = serde_json::json!({ "name": name });
                    }
                }
            }
        }
    }
    Value::Object(out)
}
