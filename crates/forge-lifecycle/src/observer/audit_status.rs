//! `GET /v1/audit/status`: whether the hub's process's signed audit log verifies now — its
//! signatures, hash chain and head checkpoint, as `forge audit verify` checks them — for the
//! operator's page. A check reads the whole log on the blocking pool, so an answer is reused
//! for [`FRESH_FOR`]; a record being appended while it is read can look cut off, and such a
//! check is tried again a moment later instead of reporting a broken chain.

use std::time::{Duration, Instant};

use axum::extract::State;
use chrono::{SecondsFormat, Utc};
use forge_auth::Caller;
use forge_evidence::{AuditVerifyError, KeyPurpose, KeySource, Keyring, verify_log};
use forge_http::ApiError;
use serde::Serialize;

use super::{Observer, require_observer};

/// How long one check's answer is served again.
pub const FRESH_FOR: Duration = Duration::from_secs(5);

/// The answer of `GET /v1/audit/status`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditStatus {
    /// Whether the whole log verified.
    pub verified: bool,
    pub checked_at: String,
    /// The log file checked (this process's).
    pub log: String,
    pub events: u64,
    pub checkpoints: u64,
    pub last_seq: u64,
    pub head_hash: String,
    pub key_ids: Vec<String>,
    /// What does not verify, when something does not.
    pub error: Option<String>,
}

/// The last answer and when it was made.
pub(super) type Cached = std::sync::Mutex<Option<(Instant, AuditStatus)>>;

#[utoipa::path(get, path = "/v1/audit/status", tag = "observer",
    responses(
        (status = 200, description = "Whether this process's signed audit log verifies now (signatures, hash chain, head), as `forge audit verify` checks it", body = AuditStatus),
        (status = 401, description = "Missing or invalid bearer token", body = forge_http::ErrorEnvelope),
        (status = 403, description = "Role forge.observer, forge.instructor or forge.orchestrator missing (`missing_role`)", body = forge_http::ErrorEnvelope),
        (status = 429, description = "Tenant rate limit; see Retry-After", body = forge_http::ErrorEnvelope)),
    security(("bearer" = [])))]
pub(super) async fn audit_status(
    State(o): State<Observer>,
    caller: Caller,
) -> Result<axum::Json<AuditStatus>, ApiError> {
    require_observer(&caller)?;
    let cached = o
        .inner
        .audit_status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .filter(|(at, _)| at.elapsed() < FRESH_FOR);
    if let Some((_, status)) = cached {
        return Ok(axum::Json(status));
    }
    let log = o.inner.deps.audit_log.clone();
    let data_dir = o.inner.deps.data_dir.clone();
    let status = tokio::task::spawn_blocking(move || {
        // What was appended so far is on disk before it is read back.
        let _ = log.flush();
        check(log.path(), &data_dir)
    })
    .await
    .map_err(ApiError::internal)?;
    *o.inner
        .audit_status
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), status.clone()));
    Ok(axum::Json(status))
}

fn check(log: &std::path::Path, data_dir: &std::path::Path) -> AuditStatus {
    let mut status = AuditStatus {
        verified: false,
        checked_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        log: log.display().to_string(),
        events: 0,
        checkpoints: 0,
        last_seq: 0,
        head_hash: String::new(),
        key_ids: Vec::new(),
        error: None,
    };
    let keys = match Keyring::open(data_dir, KeyPurpose::Audit)
        .map_err(|e| e.to_string())
        .and_then(|ring| KeySource::from_keyring(&ring).map_err(|e| e.to_string()))
    {
        Ok(k) => k,
        Err(e) => {
            status.error = Some(format!("cannot read the audit keys: {e}"));
            return status;
        }
    };
    let mut outcome = verify_log(log, &keys);
    for _ in 0..2 {
        if !matches!(outcome, Err(AuditVerifyError::PartialRecord { .. })) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        outcome = verify_log(log, &keys);
    }
    match outcome {
        Ok(r) => {
            status.verified = true;
            status.events = r.events;
            status.checkpoints = r.checkpoints;
            status.last_seq = r.last_seq;
            status.head_hash = r.head_hash;
            status.key_ids = r.key_ids.into_iter().collect();
        }
        Err(e) => status.error = Some(e.to_string()),
    }
    status
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(audit_status), components(schemas(AuditStatus)))]
pub(super) struct AuditStatusDoc;
