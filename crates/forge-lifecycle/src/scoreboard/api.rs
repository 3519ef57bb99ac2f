//! The scoreboard's HTTP API (spec: Scoreboard API): `GET /v1/scores/{id}` (role
//! `forge.score.read`, or the scenario's owner) and downloads of the bundle's four files under
//! `GET /v1/scores/{id}/{file}`. Tenant-scoped: another tenant's scenario is a 404, and the
//! attempt is audited.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{SecondsFormat, Utc};
use forge_auth::{Caller, Verifier, roles};
use forge_core::audit::{AuditEvent, Outcome};
use forge_core::{CriterionResult, ScenarioId, ScoreResult};
use forge_evidence::{ObjectKey, StoreError};
use forge_store::ScenarioRecord;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use utoipa::OpenApi;

use super::{SERVICE_NAME, Scoreboard};
use crate::messages::may_operate;
use forge_services::http::{self, ApiError};

const FILES: [&str; 4] = [
    "score.json",
    "evidence.tar.zst",
    "manifest.json",
    "verdict.sig",
];

impl FromRef<Scoreboard> for Arc<Verifier> {
    fn from_ref(s: &Scoreboard) -> Self {
        s.deps().verifier.clone()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoreSummary {
    pub value: f64,
    pub passed: u32,
    pub total: u32,
}

/// `GET /v1/scores/{id}`: the spec's fields plus the criteria and where to download the bundle.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoreView {
    pub scenario_id: String,
    pub score: ScoreSummary,
    pub evidence_url: String,
    pub verdict_url: String,
    pub computed_at: String,
    #[schema(value_type = Vec<Object>)]
    pub criteria: Vec<CriterionResult>,
    /// HTTP paths of the four bundle files on this service.
    pub files: std::collections::BTreeMap<String, String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "forge_scoreboard",
        description = "Signed scores and evidence bundles"
    ),
    paths(get_score, get_file),
    components(schemas(ScoreView, ScoreSummary))
)]
struct ApiDoc;

pub fn router(state: Scoreboard) -> Router {
    let routes = Router::new()
        .route("/v1/scores/{id}", get(get_score))
        .route("/v1/scores/{id}/{file}", get(get_file))
        .merge(http::common_routes(SERVICE_NAME, ApiDoc::openapi()))
        .with_state(state);
    http::finish(routes, http::DEFAULT_BODY_LIMIT).layer(tower_http::cors::CorsLayer::permissive())
}

pub async fn serve(
    listener: TcpListener,
    state: Scoreboard,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readable(s: &Scoreboard, caller: &Caller, id: &str) -> Result<ScenarioRecord, ApiError> {
    let not_found =
        || ApiError::not_found("score_not_found", format!("no score for scenario `{id}`"));
    let sid: ScenarioId = id.parse().map_err(|_| not_found())?;
    let d = s.deps();
    match d
        .store
        .get(&caller.tenant_id, &sid)
        .await
        .map_err(ApiError::internal)?
    {
        Some(r) if caller.has_role(roles::SCORE_READ) || may_operate(caller, &r) => Ok(r),
        other => {
            // Someone probing another tenant's (or another learner's) scenario: answer as if it
            // did not exist, and leave a trace.
            let foreign = other.is_some() || d.store.get_any(&sid).await.ok().flatten().is_some();
            if foreign {
                d.audit.record(
                    AuditEvent::new(
                        Utc::now(),
                        "access.denied",
                        caller.sub.clone(),
                        sid.as_str(),
                        "read",
                        Outcome::Denied,
                    )
                    .with_detail("tenant_id", caller.tenant_id.clone())
                    .with_detail("resource", "score"),
                );
            }
            Err(not_found())
        }
    }
}

async fn read(s: &Scoreboard, id: &ScenarioId, file: &str) -> Result<Vec<u8>, ApiError> {
    let key = ObjectKey::bundle_file(id, file).map_err(ApiError::internal)?;
    match s.deps().evidence.get(&key).await {
        Ok(b) => Ok(b),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(
            "score_not_ready",
            format!("scenario {id} has no published score yet"),
        )),
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[utoipa::path(get, path = "/v1/scores/{id}",
    responses((status = 200, body = ScoreView), (status = 401), (status = 404)),
    security(("bearer" = [])))]
async fn get_score(
    State(s): State<Scoreboard>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<ScoreView>, ApiError> {
    let rec = readable(&s, &caller, &id).await?;
    let bytes = read(&s, &rec.scenario_id, "score.json").await?;
    let score: ScoreResult = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    let d = s.deps();
    let url = |f: &str| {
        ObjectKey::bundle_file(&rec.scenario_id, f)
            .map(|k| d.evidence.url_for(&k))
            .unwrap_or_default()
    };
    let files = FILES
        .iter()
        .map(|f| (f.to_string(), format!("/v1/scores/{}/{f}", rec.scenario_id)))
        .collect();
    Ok(axum::Json(ScoreView {
        scenario_id: rec.scenario_id.to_string(),
        score: ScoreSummary {
            value: score.score,
            passed: score.passed,
            total: score.total,
        },
        evidence_url: url("evidence.tar.zst"),
        verdict_url: url("verdict.sig"),
        computed_at: score.computed_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        criteria: score.criteria,
        files,
    }))
}

#[utoipa::path(get, path = "/v1/scores/{id}/{file}",
    responses((status = 200, description = "the file's bytes"), (status = 401), (status = 404)),
    security(("bearer" = [])))]
async fn get_file(
    State(s): State<Scoreboard>,
    caller: Caller,
    Path((id, file)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    if !FILES.contains(&file.as_str()) {
        return Err(ApiError::not_found(
            "unknown_file",
            format!(
                "bundles have no file `{file}`; files are {}",
                FILES.join(", ")
            ),
        ));
    }
    let rec = readable(&s, &caller, &id).await?;
    let bytes = read(&s, &rec.scenario_id, &file).await?;
    let ctype = match file.as_str() {
        "evidence.tar.zst" => "application/zstd",
        "verdict.sig" | "score.json" | "manifest.json" => "application/json",
        _ => "application/octet-stream",
    };
    let disposition = format!("attachment; filename=\"{file}\"");
    Ok((
        [
            (CONTENT_TYPE, ctype.to_owned()),
            (CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    ))
}
