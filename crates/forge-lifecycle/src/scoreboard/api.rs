//! The scoreboard's HTTP API (spec: Scoreboard API): `GET /v1/scores/{id}` (role
//! `forge.score.read`, or the scenario's owner) and downloads of the bundle's four files under
//! `GET /v1/scores/{id}/{file}`. Tenant-scoped: another tenant's scenario is a 404, and the
//! attempt is audited. `GET /v1/keys/verdict` is the public verdict keyset, open to anyone,
//! for offline verification of a bundle.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::SecondsFormat;
use forge_core::{CriterionResult, ScenarioId, ScoreResult};
use forge_evidence::{ObjectKey, StoreError};
use forge_http::{ApiError, ErrorEnvelope, Service};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::Scoreboard;
use crate::authz::{Authorized, CanReadScore};

const FILES: [&str; 4] = [
    "score.json",
    "evidence.tar.zst",
    "manifest.json",
    "verdict.sig",
];

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
    pub criteria: Vec<CriterionResult>,
    /// HTTP paths of the four bundle files on this service.
    pub files: std::collections::BTreeMap<String, String>,
}

#[derive(OpenApi)]
#[openapi(
    paths(get_score, get_file, verdict_keys),
    components(schemas(ScoreView, ScoreSummary, CriterionResult))
)]
struct ApiDoc;

pub fn router(state: Scoreboard) -> Router {
    let routes = Router::new()
        .route("/v1/scores/{id}", get(get_score))
        .route("/v1/scores/{id}/{file}", get(get_file))
        .route("/v1/keys/verdict", get(verdict_keys))
        .with_state(state.clone());
    let doc = ApiDoc::openapi();
    let limit = forge_http::DEFAULT_BODY_LIMIT;
    crate::service_router(Service::Scoreboard, doc, routes, state.access(), limit)
        .layer(tower_http::cors::CorsLayer::permissive())
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
    params(("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "The signed score and where its bundle is", body = ScoreView),
        (status = 404, description = "No such scenario whose score the caller may read (`scenario_not_found`), or no score published yet (`score_not_ready`)", body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn get_score(
    State(s): State<Scoreboard>,
    Authorized { scenario: rec, .. }: Authorized<CanReadScore>,
) -> Result<axum::Json<ScoreView>, ApiError> {
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
    params(
        ("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$"),
        ("file" = String, Path, description = "A file of the bundle", pattern = "^(score\\.json|evidence\\.tar\\.zst|manifest\\.json|verdict\\.sig)$")),
    responses(
        (status = 200, description = "The file's bytes, as an attachment: `evidence.tar.zst` is application/zstd, the others JSON",
         content(("application/json"), ("application/zstd"))),
        (status = 404, description = "No such scenario whose score the caller may read (`scenario_not_found`), no score published yet (`score_not_ready`), or no such file (`unknown_file`)", body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn get_file(
    State(s): State<Scoreboard>,
    Authorized { scenario: rec, .. }: Authorized<CanReadScore>,
    Path(params): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let file = params.1;
    if !FILES.contains(&file.as_str()) {
        return Err(ApiError::not_found(
            "unknown_file",
            format!(
                "bundles have no file `{file}`; files are {}",
                FILES.join(", ")
            ),
        ));
    }
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

#[utoipa::path(get, path = "/v1/keys/verdict",
    responses(
        (status = 200, description = "The public verdict keys (the format of `forge keys export`): what `forge bundle verify --public-key` checks bundles against, offline", content_type = "application/json")))]
async fn verdict_keys(State(s): State<Scoreboard>) -> Result<impl IntoResponse, ApiError> {
    // Public halves only: anyone may verify a bundle they were given.
    let set = s
        .deps()
        .keyring
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .export_public()
        .map_err(ApiError::internal)?;
    let disposition = "attachment; filename=\"forge-verdict-keys.json\"";
    Ok(([(CONTENT_DISPOSITION, disposition)], axum::Json(set)))
}
