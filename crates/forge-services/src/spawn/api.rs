//! Wire types of the spawn API and its OpenAPI document.

use chrono::{DateTime, SecondsFormat, Utc};
use forge_catalog::Catalog;
use forge_core::{ScenarioId, Track};
use forge_http::ErrorEnvelope;
use forge_store::ScenarioRecord;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

/// Body of `POST /v1/spawn` (documentation mirror of `forge_core::SpawnRequest`, which is what
/// the handler parses; unknown fields are refused). The served document has one variant of it
/// per track, each naming the track's templates ([`openapi`]).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SpawnRequestBody {
    /// `netplus`, `ccna` or `cissp` (those the catalog has templates of).
    #[schema(example = "netplus")]
    pub track: String,
    /// Idempotency key; required here or in the `x-request-id` header (both: must be equal).
    /// 1-255 characters without control characters once white space at either end is trimmed.
    #[schema(
        example = "req-abc123",
        pattern = "^[\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000](?:[^\\u0000-\\u001f\\u007f-\\u009f]{0,253}[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000])?[\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub request_id: Option<String>,
    /// A catalog template of the track; defaults to the track's default template.
    #[schema(example = "netplus-routing-lab")]
    pub template: Option<String>,
    /// Free-form client data; part of the idempotency fingerprint, not stored.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// 201 body of `POST /v1/spawn` (spec: Spawn Service API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SpawnResponse {
    pub request_id: String,
    #[schema(value_type = String, example = "scn-def456789012")]
    pub scenario_id: ScenarioId,
    #[schema(example = "http://localhost:8082/access/scn-def456789012")]
    pub access_url: String,
    /// RFC 3339, UTC, whole seconds: creation time plus the template's `timeout_minutes`.
    #[schema(example = "2026-01-11T13:30:00Z")]
    pub expires_at: String,
    /// The scenario's status when answered: `pending`; `running` at once on a warm pool hit; or
    /// with `?wait=` whatever it reached (`running` once the lab is up).
    #[schema(example = "pending")]
    pub status: String,
}

impl SpawnResponse {
    pub fn from_record(r: &ScenarioRecord) -> Self {
        Self {
            request_id: r.request_id.clone(),
            scenario_id: r.scenario_id.clone(),
            access_url: r.access_url.clone(),
            expires_at: r.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            status: r.status.as_str().to_owned(),
        }
    }
}

/// Documentation of `POST /v1/spawn` (the handler itself is in `handler.rs`).
#[utoipa::path(
    post,
    path = "/v1/spawn",
    tag = "spawn",
    request_body(content = SpawnRequestBody, content_type = "application/json"),
    params(
        ("x-request-id" = Option<String>, Header,
         description = "Idempotency key (alternative to the body's request_id; header name set by REQUEST_ID_HEADER): visible ASCII, 1-255 characters once spaces and tabs at either end are trimmed",
         pattern = "^[\\t ]*[!-~](?:[ -~]{0,253}[!-~])?[\\t ]*$"),
        ("wait" = Option<String>, Query,
         description = "Hold the answer until the scenario is past `pending` and `creating` (`running` once its lab is up; a warm-pool hit takes milliseconds), at most this long: `500ms`, `5s`, up to 30s",
         pattern = "^((0|[1-9][0-9]{0,3}|[12][0-9]{4}|30000)ms|(0|[1-9]|[12][0-9]|30)s)$"),
    ),
    responses(
        (status = 201, description = "Scenario accepted (pending; running on a warm pool hit; or as far as it got within `wait`); replays carry `Idempotent-Replayed: true`", body = SpawnResponse),
        (status = 400, description = "No request_id (`missing_request_id`), a body request_id that differs from the header's (`request_id_conflict`), or an invalid body (`invalid_request`, `invalid_json`, `invalid_request_id`, `unsupported_track`, `unknown_template`, `template_track_mismatch`, `tenant_in_body`), or a bad `wait` (`invalid_wait`)", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorEnvelope),
        (status = 403, description = "Missing role, unknown tenant, spawn gate denied (policy_denied) or template refused by the training gate (training_gate_denied); details.deny_reasons", body = ErrorEnvelope),
        (status = 409, description = "Same request_id still in flight after the wait (`request_in_progress`); see Retry-After", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 415, description = "Content-Type is not application/json", body = ErrorEnvelope),
        (status = 422, description = "request_id already used with a different body (`idempotency_key_reused`)", body = ErrorEnvelope),
        (status = 429, description = "Tenant rate limit; see Retry-After", body = ErrorEnvelope),
        (status = 500, description = "Internal error of the platform (logged); never the answer to a bad request", body = ErrorEnvelope),
        (status = 502, description = "Policy engine unavailable", body = ErrorEnvelope),
        (status = 503, description = "Bus unavailable; retry with the same request_id", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn spawn_doc() {}

#[derive(OpenApi)]
#[openapi(paths(spawn_doc), components(schemas(SpawnRequestBody, SpawnResponse)))]
struct SpawnApiDoc;

/// The spawn service's OpenAPI document for `catalog`: the body is one object per track the
/// catalog has templates of, naming that track and its templates, so that a body the schema
/// allows names a template of its own track.
pub fn openapi(catalog: &Catalog) -> utoipa::openapi::OpenApi {
    use utoipa::PartialSchema;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{OneOfBuilder, Schema};
    let mut doc = SpawnApiDoc::openapi();
    let RefOr::T(Schema::Object(base)) = SpawnRequestBody::schema() else {
        unreachable!("a struct's schema is an object");
    };
    let mut body = OneOfBuilder::new().description(base.description.clone());
    for track in Track::ALL {
        let mut templates: Vec<&str> = catalog
            .entries()
            .filter(|e| e.track == track)
            .map(|e| e.template.metadata.name.as_str())
            .collect();
        if templates.is_empty() {
            continue;
        }
        templates.sort_unstable();
        let mut variant = base.clone();
        variant.description = None;
        for (property, values) in [
            ("track", vec![json!(track.as_str())]),
            // null: the track's default template
            (
                "template",
                templates
                    .iter()
                    .map(|t| json!(t))
                    .chain([json!(null)])
                    .collect(),
            ),
        ] {
            if let Some(RefOr::T(Schema::Object(p))) = variant.properties.get_mut(property) {
                p.enum_values = Some(values);
                p.examples.clear();
            }
        }
        body = body.item(Schema::Object(variant));
    }
    let schemas = &mut doc.components.get_or_insert_with(Default::default).schemas;
    schemas.insert(
        "SpawnRequestBody".into(),
        RefOr::T(Schema::OneOf(body.build())),
    );
    doc
}

/// `created_at + timeout_minutes`.
pub fn expiry(created_at: DateTime<Utc>, timeout_minutes: u64) -> DateTime<Utc> {
    created_at
        + chrono::Duration::minutes(i64::try_from(timeout_minutes).unwrap_or(i64::MAX / 120_000))
}
