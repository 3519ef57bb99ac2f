//! Wire types of the spawn API and its OpenAPI document.

use chrono::{DateTime, SecondsFormat, Utc};
use forge_core::ScenarioId;
use forge_http::ErrorEnvelope;
use forge_store::ScenarioRecord;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

/// Body of `POST /v1/spawn` (documentation mirror of `forge_core::SpawnRequest`, which is what
/// the handler parses; unknown fields are refused).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SpawnRequestBody {
    /// `netplus`, `ccna` or `cissp`.
    #[schema(example = "netplus", pattern = "^(netplus|ccna|cissp)$")]
    pub track: String,
    /// Idempotency key; required here or in the `x-request-id` header (both: must be equal).
    /// 1-255 bytes, no control characters, no spaces at either end.
    #[schema(example = "req-abc123", min_length = 1, max_length = 255)]
    pub request_id: Option<String>,
    /// A catalog template of the track; defaults to the track's default template.
    #[schema(example = "netplus-routing-lab", min_length = 1)]
    pub template: Option<String>,
    /// Free-form client data; part of the idempotency fingerprint, not stored.
    #[schema(value_type = Object)]
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
}

impl SpawnResponse {
    pub fn from_record(r: &ScenarioRecord) -> Self {
        Self {
            request_id: r.request_id.clone(),
            scenario_id: r.scenario_id.clone(),
            access_url: r.access_url.clone(),
            expires_at: r.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
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
         description = "Idempotency key (alternative to the body's request_id; header name set by REQUEST_ID_HEADER)"),
    ),
    responses(
        (status = 201, description = "Scenario accepted (pending); replays carry `Idempotent-Replayed: true`", body = SpawnResponse),
        (status = 400, description = "Missing/conflicting request_id, unsupported track, unknown template, invalid body", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorEnvelope),
        (status = 403, description = "Missing role, unknown tenant, spawn gate denied (policy_denied) or template refused by the training gate (training_gate_denied); details.deny_reasons", body = ErrorEnvelope),
        (status = 409, description = "Same request_id still in flight after the wait", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 415, description = "Content-Type is not application/json", body = ErrorEnvelope),
        (status = 422, description = "request_id reused with a different body", body = ErrorEnvelope),
        (status = 429, description = "Tenant rate limit; see Retry-After", body = ErrorEnvelope),
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

/// The spawn service's OpenAPI document; other services `merge` theirs into it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    SpawnApiDoc::openapi()
}

/// `created_at + timeout_minutes`.
pub fn expiry(created_at: DateTime<Utc>, timeout_minutes: u64) -> DateTime<Utc> {
    created_at
        + chrono::Duration::minutes(i64::try_from(timeout_minutes).unwrap_or(i64::MAX / 120_000))
}
