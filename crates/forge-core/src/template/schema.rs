//! JSON Schema (draft 2020-12) check of the whole template structure; the schema lives in
//! `schemas/scenario-template.schema.json` and extends the spec's with every field.

use std::sync::OnceLock;

use super::diagnostics::Diagnostic;
use super::yaml::SpannedDoc;

pub const SCHEMA: &str = include_str!("../../schemas/scenario-template.schema.json");

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: serde_json::Value =
            serde_json::from_str(SCHEMA).expect("bundled schema is valid JSON");
        jsonschema::draft202012::new(&schema).expect("bundled schema compiles")
    })
}

/// Every schema violation, as diagnostics with dotted paths.
pub fn check(doc: &SpannedDoc) -> Vec<Diagnostic> {
    validator()
        .iter_errors(&doc.value)
        .map(|e| {
            Diagnostic::new(
                pointer_to_path(&e.instance_path().to_string()),
                e.to_string(),
            )
        })
        .collect()
}

/// `/spec/assets/containers/1/networks/0` → `spec.assets.containers[1].networks[0]`.
pub fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// Address fields the schema only knows as strings: checked here so a typo is reported at its
/// path instead of failing deserialisation as a whole.
pub fn check_formats(doc: &SpannedDoc) -> Vec<Diagnostic> {
    use serde_json::Value;
    let mut out = Vec::new();
    let mut check = |path: String, v: Option<&Value>, what: &str, parse: fn(&str) -> bool| {
        if let Some(s) = v.and_then(Value::as_str)
            && !parse(s)
        {
            out.push(Diagnostic::new(
                path,
                format!("`{s}` is not a valid {what}"),
            ));
        }
    };
    let cidr_ok: fn(&str) -> bool = |s| s.parse::<ipnet::Ipv4Net>().is_ok();
    let addr_ok: fn(&str) -> bool = |s| s.parse::<std::net::Ipv4Addr>().is_ok();
    let attach_ok: fn(&str) -> bool = |s| s == "none" || s.parse::<std::net::Ipv4Addr>().is_ok();
    let cidr6_ok: fn(&str) -> bool = |s| s.parse::<ipnet::Ipv6Net>().is_ok();
    let attach6_ok: fn(&str) -> bool = |s| s == "none" || s.parse::<std::net::Ipv6Addr>().is_ok();
    let spec = doc.value.get("spec");
    let subnets = spec
        .and_then(|s| s.pointer("/network/subnets"))
        .and_then(Value::as_array);
    for (i, s) in subnets.into_iter().flatten().enumerate() {
        let p = format!("spec.network.subnets[{i}]");
        check(
            format!("{p}.cidr"),
            s.get("cidr"),
            "IPv4 CIDR (like 10.10.0.0/24)",
            cidr_ok,
        );
        check(
            format!("{p}.gateway"),
            s.get("gateway"),
            "IPv4 address",
            addr_ok,
        );
        check(
            format!("{p}.cidr6"),
            s.get("cidr6"),
            "IPv6 CIDR (like fd00:10::/64)",
            cidr6_ok,
        );
    }
    let containers = spec
        .and_then(|s| s.pointer("/assets/containers"))
        .and_then(Value::as_array);
    for (i, c) in containers.into_iter().flatten().enumerate() {
        let nets = c.get("networks").and_then(Value::as_array);
        for (k, n) in nets.into_iter().flatten().enumerate() {
            let p = format!("spec.assets.containers[{i}].networks[{k}]");
            check(
                format!("{p}.address"),
                n.get("address"),
                "IPv4 address (or none)",
                attach_ok,
            );
            check(
                format!("{p}.address6"),
                n.get("address6"),
                "IPv6 address (or none)",
                attach6_ok,
            );
        }
    }
    out
}
