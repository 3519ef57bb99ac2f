//! Turning a `POST /v1/spawn` body and headers into a validated spawn: the idempotency key,
//! the track, the template, and the body's fingerprint.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName};
use forge_catalog::Catalog;
use forge_core::template::ScenarioTemplate;
use forge_core::{SpawnRequest, Track};
use forge_http::ApiError;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Longest accepted request_id, in characters (white space at either end is trimmed first).
pub const MAX_REQUEST_ID_LEN: usize = 255;

/// A body field, a test of its JSON type, and what the type should be.
type TypeCheck = (&'static str, fn(&Value) -> bool, &'static str);

/// A spawn request that passed validation.
#[derive(Debug, Clone)]
pub struct ValidSpawn {
    pub request_id: String,
    pub track: Track,
    pub template: Arc<ScenarioTemplate>,
    /// Fingerprint of what was asked (track, template as given, metadata); the request_id is
    /// the key, not part of the fingerprint, so it may move between body and header.
    pub request_hash: String,
}

impl ValidSpawn {
    pub fn template_name(&self) -> &str {
        &self.template.metadata.name
    }
}

/// Validates `body` (already JSON) and the request_id header.
pub fn validate(
    body: Value,
    headers: &HeaderMap,
    request_id_header: &HeaderName,
    catalog: &Catalog,
) -> Result<ValidSpawn, ApiError> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "request body must be a JSON object",
        ));
    };
    // Never trusted, so refused rather than ignored: a client sending it believes it matters.
    for field in ["tenant_id", "tenant"] {
        if obj.contains_key(field) {
            return Err(ApiError::bad_request(
                "tenant_in_body",
                format!(
                    "`{field}` is not accepted in the body; the tenant comes from the bearer token"
                ),
            ));
        }
    }
    // serde names unknown and missing fields itself, but not the field of a wrong type.
    let expect: [TypeCheck; 4] = [
        ("track", Value::is_string, "a string"),
        ("request_id", |v| v.is_string() || v.is_null(), "a string"),
        ("template", |v| v.is_string() || v.is_null(), "a string"),
        (
            "metadata",
            |v| v.is_object() || v.is_null(),
            "a JSON object (map)",
        ),
    ];
    for (field, ok, want) in expect {
        if let Some(v) = obj.get(field)
            && !ok(v)
        {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("invalid request: `{field}` must be {want}"),
            ));
        }
    }
    if obj.get("metadata").is_some_and(Value::is_null) {
        obj.remove("metadata");
    }
    let req: SpawnRequest = serde_json::from_value(Value::Object(obj))
        .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid request: {e}")))?;
    let request_id = request_id(req.request_id.as_deref(), headers, request_id_header)?;
    let track: Track = req
        .track
        .parse()
        .map_err(|e: forge_core::model::UnknownTrack| {
            ApiError::bad_request("unsupported_track", e.to_string()).with_details(json!({
                "supported_tracks": Track::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            }))
        })?;
    let template = match req.template.as_deref() {
        None => catalog
            .default_for(track)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "no_template",
                    format!("the catalog has no template for track {track}"),
                )
            })?
            .template
            .clone(),
        Some(name) => {
            let entry = catalog.get(name).ok_or_else(|| {
                ApiError::bad_request(
                    "unknown_template",
                    format!("template `{name}` is not in the catalog"),
                )
                .with_details(json!({ "templates": templates_of(catalog, track) }))
            })?;
            if entry.track != track {
                return Err(ApiError::bad_request(
                    "template_track_mismatch",
                    format!(
                        "template `{name}` belongs to track {}, not {track}",
                        entry.track
                    ),
                )
                .with_details(json!({ "templates": templates_of(catalog, track) })));
            }
            entry.template.clone()
        }
    };
    let fingerprint = json!({
        "track": track.as_str(),
        "template": req.template,
        "metadata": canonical(&Value::Object(req.metadata)),
    });
    let request_hash = hex::encode(Sha256::digest(
        serde_json::to_vec(&fingerprint).expect("json serializes"),
    ));
    Ok(ValidSpawn {
        request_id,
        track,
        template,
        request_hash,
    })
}

fn templates_of(catalog: &Catalog, track: Track) -> Vec<String> {
    catalog
        .entries()
        .filter(|e| e.track == track)
        .map(|e| e.template.metadata.name.clone())
        .collect()
}

/// The idempotency key: from the body or the header; both must agree; one is required.
fn request_id(
    body: Option<&str>,
    headers: &HeaderMap,
    header_name: &HeaderName,
) -> Result<String, ApiError> {
    let header = match headers.get(header_name) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_request_id",
                format!("header {header_name} must be visible ASCII"),
            )
        })?),
    };
    let id = match (body.map(str::trim), header.map(str::trim)) {
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_request_id",
                format!("request_id is required, in the body or the {header_name} header"),
            ));
        }
        (Some(b), Some(h)) if b != h => {
            return Err(ApiError::bad_request(
                "request_id_conflict",
                format!(
                    "body request_id `{b}` differs from {header_name} `{h}`; send one, or the same in both"
                ),
            ));
        }
        (Some(id), _) | (None, Some(id)) => id,
    };
    if id.is_empty() {
        return Err(ApiError::bad_request(
            "missing_request_id",
            "request_id must not be empty",
        ));
    }
    let chars = id.chars().count();
    if chars > MAX_REQUEST_ID_LEN {
        return Err(ApiError::bad_request(
            "invalid_request_id",
            format!(
                "request_id is {chars} characters long; at most {MAX_REQUEST_ID_LEN} are allowed"
            ),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_request_id",
            "request_id must not contain control characters",
        ));
    }
    Ok(id.to_owned())
}

/// `v` with object keys sorted at every level, so key order does not change the fingerprint
/// (serde_json keeps insertion order in this workspace).
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: Option<&str>) -> HeaderMap {
        let mut m = HeaderMap::new();
        if let Some(v) = v {
            m.insert("x-request-id", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn request_id_sources() {
        let name = HeaderName::from_static("x-request-id");
        assert_eq!(request_id(Some("a"), &h(None), &name).unwrap(), "a");
        assert_eq!(request_id(None, &h(Some("b")), &name).unwrap(), "b");
        assert_eq!(request_id(Some("c"), &h(Some("c")), &name).unwrap(), "c");
        let e = request_id(Some("c"), &h(Some("d")), &name).unwrap_err();
        assert_eq!(e.code(), "request_id_conflict");
        assert_eq!(
            request_id(None, &h(None), &name).unwrap_err().code(),
            "missing_request_id"
        );
        assert_eq!(
            request_id(Some(" "), &h(None), &name).unwrap_err().code(),
            "missing_request_id"
        );
        let long = "x".repeat(300);
        assert_eq!(
            request_id(Some(&long), &h(None), &name).unwrap_err().code(),
            "invalid_request_id"
        );
    }

    #[test]
    fn fingerprint_ignores_key_order_and_request_id_placement() {
        let c = Catalog::bundled().unwrap();
        let name = HeaderName::from_static("x-request-id");
        let a = validate(
            json!({"track": "netplus", "request_id": "r", "metadata": {"a": 1, "b": {"y": 2, "x": 1}}}),
            &h(None),
            &name,
            &c,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"metadata": {"b": {"x": 1, "y": 2}, "a": 1}, "track": "netplus"}"#,
        )
        .unwrap();
        let b = validate(b, &h(Some("r")), &name, &c).unwrap();
        assert_eq!(a.request_hash, b.request_hash);
        let other = validate(
            json!({"track": "ccna", "request_id": "r"}),
            &h(None),
            &name,
            &c,
        )
        .unwrap();
        assert_ne!(a.request_hash, other.request_hash);
        assert_eq!(a.template_name(), "netplus-routing-lab");
    }
}
