//! Input documents into regorus values, directly.
//!
//! `regorus::Value::deserialize(&serde_json::Value)` goes through serde's visitor machinery (a
//! boxed error type, per-entry limit checks, a temporary map per object); building the value by
//! hand costs a fraction of that and is part of every uncached decision. The result is the value
//! serde would build: the same numbers (u64, then i64, then f64, as serde_json hands them to a
//! visitor), strings, arrays and objects.

use std::collections::BTreeMap;

use serde_json::Value;

/// `v` as a regorus value.
pub(crate) fn to_rego(v: &Value) -> regorus::Value {
    match v {
        Value::Null => regorus::Value::Null,
        Value::Bool(b) => regorus::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                regorus::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                regorus::Value::from(i)
            } else {
                // serde_json holds only finite floats, so this never becomes regorus's null.
                regorus::Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => regorus::Value::String(s.as_str().into()),
        Value::Array(items) => regorus::Value::from(items.iter().map(to_rego).collect::<Vec<_>>()),
        Value::Object(map) => regorus::Value::from(
            map.iter()
                .map(|(k, v)| (regorus::Value::String(k.as_str().into()), to_rego(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[test]
    fn matches_serde_deserialization() {
        let doc = json!({
            "n": [0, 1, -1, 2.5, 3.0, -0.0, 1e300, u64::MAX, i64::MIN, 1025],
            "s": ["", "x", "ünï", "a\"b"],
            "o": {"": null, "b": true, "c": false, "nested": {"empty": {}, "list": []}},
            "z": {}
        });
        let via_serde = regorus::Value::deserialize(&doc).unwrap();
        assert_eq!(to_rego(&doc), via_serde);
        assert_eq!(to_rego(&doc).to_string(), via_serde.to_string());
    }
}
