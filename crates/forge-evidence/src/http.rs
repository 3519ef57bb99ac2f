//! The audit verification endpoints (spec: Audit Trail, Verification endpoints), served by the
//! observer hub (docs/design.md §7.8):
//!
//! - `GET /audit/keys/current` → `{"key_id","algorithm":"ed25519","public_key_pem","created_at"}`
//!   of the active audit key (never a revoked one);
//! - `GET /audit/keys/{key_id}` → the same plus `status`, `retired_at`, `revoked_at`,
//!   `valid_until`, for any key the audit keyring ever had (revoked keys show `revoked`);
//! - `GET /audit/events/{event_id}/signature` → `{"event_id","key_id","signature"}`.
//!
//! The keyring index is re-read on every key request, so `forge keys rotate|revoke --purpose
//! audit` in another process shows up at once. Errors are [`forge_http::ApiError`]s (the envelope
//! `{"error":{"code","message","details"}}`) with 400 for malformed input and 404 for unknown ids;
//! only storage failures are 500.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use forge_http::ApiError;
use serde_json::json;

use crate::audit_log::AuditLog;
use crate::keyring::{KeyError, KeyPurpose, KeyRecord, KeyStatus, Keyring, is_key_id};

/// What the audit routes need: the data dir (for the audit keyring) and the running log.
#[derive(Debug, Clone)]
pub struct AuditHttpState {
    pub data_dir: PathBuf,
    pub log: Arc<AuditLog>,
}

/// The `/audit/...` routes, ready to be merged into the observer hub's router.
pub fn audit_router(state: AuditHttpState) -> Router {
    Router::new()
        .route("/audit/keys/current", get(current_key))
        .route("/audit/keys/{key_id}", get(key_by_id))
        .route("/audit/events/{event_id}/signature", get(event_signature))
        .with_state(Arc::new(state))
}

/// An unknown key is a 404; anything else is the keyring failing (a logged 500).
fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::UnknownKey(id) => {
            ApiError::not_found("unknown_key", format!("no audit key `{id}`"))
        }
        other => ApiError::internal(format!("audit keyring unreadable: {other}")),
    }
}

/// A path segment that is not valid percent-encoded UTF-8 is bad input: a JSON 400, not axum's
/// plain-text rejection.
fn path_param(
    param: Result<Path<String>, PathRejection>,
    code: &'static str,
) -> Result<String, ApiError> {
    param
        .map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(code, e.body_text()))
}

fn keyring(state: &AuditHttpState) -> Result<Keyring, ApiError> {
    Keyring::open(&state.data_dir, KeyPurpose::Audit).map_err(key_error)
}

async fn current_key(
    State(state): State<Arc<AuditHttpState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ring = keyring(&state)?;
    let record = ring
        .active()
        .ok_or_else(|| ApiError::not_found("no_active_key", "there is no active audit key"))?;
    Ok(Json(json!({
        "key_id": record.key_id,
        "algorithm": record.algorithm,
        "public_key_pem": ring.public_key_pem(&record.key_id).map_err(key_error)?,
        "created_at": record.created_at,
    })))
}

async fn key_by_id(
    State(state): State<Arc<AuditHttpState>>,
    key_id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let key_id = path_param(key_id, "invalid_key_id")?;
    if !is_key_id(&key_id) {
        return Err(ApiError::bad_request(
            "invalid_key_id",
            format!("`{key_id}` is not a key id (`ed25519-` followed by 16 lowercase hex digits)"),
        ));
    }
    let ring = keyring(&state)?;
    let record: KeyRecord = ring
        .get(&key_id)
        .cloned()
        .ok_or_else(|| key_error(KeyError::UnknownKey(key_id.clone())))?;
    let valid_until = match record.status {
        KeyStatus::Retired => record.retired_at.map(|t| t + ring.retention()),
        KeyStatus::Active | KeyStatus::Revoked => None,
    };
    Ok(Json(json!({
        "key_id": record.key_id,
        "algorithm": record.algorithm,
        "public_key_pem": ring.public_key_pem(&key_id).map_err(key_error)?,
        "created_at": record.created_at,
        "status": record.status,
        "retired_at": record.retired_at,
        "revoked_at": record.revoked_at,
        "valid_until": valid_until,
        "retention_days": ring.retention().num_days(),
    })))
}

async fn event_signature(
    State(state): State<Arc<AuditHttpState>>,
    event_id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let event_id = path_param(event_id, "invalid_event_id")?;
    if event_id.is_empty() || event_id.chars().count() > 256 {
        return Err(ApiError::bad_request(
            "invalid_event_id",
            "event id must be 1 to 256 characters",
        ));
    }
    let sig = state.log.signature_of(&event_id).ok_or_else(|| {
        ApiError::not_found("unknown_event", format!("no audit event `{event_id}`"))
    })?;
    Ok(Json(
        json!({"event_id": sig.event_id, "key_id": sig.key_id, "signature": sig.signature}),
    ))
}
