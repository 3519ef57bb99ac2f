//! The orchestrator's HTTP API (spec: Orchestrator API): `POST /v1/scenarios` (role
//! `forge.orchestrator`), `GET /v1/scenarios/{id}` and `DELETE /v1/scenarios/{id}` (the
//! scenario's owner, or an instructor/orchestrator of its tenant). Every lookup is scoped to the
//! token's tenant: another tenant's scenario is a 404.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use forge_auth::{Caller, roles};
use forge_core::{ScenarioId, ScenarioStatus, Track};
use forge_http::{ApiError, ApiJson, Kind, Service};
use forge_store::{Billing, NewScenario, ScenarioRecord};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::{Admission, Orchestrator};
use crate::authz::{Authorized, CanOperate, CanView};

/// Body of `POST /v1/scenarios`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScenario {
    /// Optional: a fresh id is generated when absent.
    #[schema(value_type = Option<String>)]
    pub scenario_id: Option<ScenarioId>,
    /// A catalog template name, or a track name for the track's default template.
    pub template: String,
    pub request_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Created {
    #[schema(value_type = String)]
    pub scenario_id: ScenarioId,
    pub status: String,
    pub network_id: String,
}

/// `GET /v1/scenarios/{id}`: the spec's fields plus what a client needs to follow a lab.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScenarioView {
    #[schema(value_type = String)]
    pub scenario_id: ScenarioId,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub containers: Vec<String>,
    pub network_id: String,
    pub error: Option<String>,
    pub track: String,
    pub template: String,
    pub request_id: String,
    pub access_url: String,
    pub expires_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl ScenarioView {
    pub fn from_record(r: &ScenarioRecord) -> Self {
        Self {
            scenario_id: r.scenario_id.clone(),
            status: r.status.as_str().to_owned(),
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
            containers: r.containers.clone(),
            network_id: r
                .network_id
                .clone()
                .unwrap_or_else(|| r.scenario_id.network_id()),
            error: r.error.clone(),
            track: r.track.as_str().to_owned(),
            template: r.template.clone(),
            request_id: r.request_id.clone(),
            access_url: r.access_url.clone(),
            expires_at: ts(r.expires_at),
            started_at: r.started_at.map(ts),
            ended_at: r.ended_at.map(ts),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(create_scenario, get_scenario, end_scenario),
    components(schemas(CreateScenario, Created, ScenarioView))
)]
struct ApiDoc;

pub fn router(state: Orchestrator) -> Router {
    let routes = Router::new()
        .route("/v1/scenarios", post(create_scenario))
        .route("/v1/scenarios/{id}", get(get_scenario).delete(end_scenario))
        .with_state(state.clone());
    let doc = ApiDoc::openapi();
    let limit = forge_http::DEFAULT_BODY_LIMIT;
    crate::service_router(Service::Orchestrator, doc, routes, state.access(), limit)
}

#[utoipa::path(post, path = "/v1/scenarios", request_body = CreateScenario,
    responses((status = 202, body = Created), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
async fn create_scenario(
    State(o): State<Orchestrator>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateScenario>,
) -> Result<impl IntoResponse, ApiError> {
    if !caller.has_role(roles::ORCHESTRATOR) {
        return Err(ApiError::forbidden(
            "missing_role",
            "role forge.orchestrator is required",
        ));
    }
    if body.request_id.trim().is_empty() || body.request_id.len() > 255 {
        return Err(ApiError::bad_request(
            "invalid_request_id",
            "request_id must be 1-255 characters",
        ));
    }
    let catalog = &o.deps().catalog;
    let entry = match body.template.parse::<Track>() {
        Ok(track) => catalog.default_for(track),
        Err(_) => catalog.get(&body.template),
    }
    .ok_or_else(|| {
        ApiError::bad_request(
            "unknown_template",
            format!("template `{}` is not in the catalog", body.template),
        )
    })?;
    let id = body.scenario_id.unwrap_or_else(ScenarioId::generate);
    let now = Utc::now();
    let minutes = entry.template.spec.limits.timeout_minutes as i64;
    let new = NewScenario {
        scenario_id: id.clone(),
        tenant_id: caller.tenant_id.clone(),
        owner_sub: caller.sub.clone(),
        track: entry.track,
        template: entry.template.metadata.name.clone(),
        request_id: body.request_id.clone(),
        access_url: String::new(),
        created_at: now,
        expires_at: now + ChronoDuration::minutes(minutes),
    };
    let inserted = o
        .deps()
        .store
        .insert_pending(&new, Billing::None)
        .await
        .map_err(|e| match e {
            forge_store::StoreError::RequestIdReused { .. } => {
                ApiError::unprocessable("request_id_reused", e.to_string())
            }
            other => ApiError::internal(other),
        })?;
    let rec = inserted.record;
    if inserted.created {
        match o
            .admit(&rec.scenario_id)
            .await
            .map_err(ApiError::internal)?
        {
            Admission::Admitted(r, t) => {
                let o2 = o.clone();
                tokio::spawn(async move {
                    let id = r.scenario_id.clone();
                    if let Err(e) = o2.build(*r, t).await {
                        tracing::warn!(error = %e, scenario_id = %id, "building a lab");
                    }
                });
            }
            Admission::Denied(reasons) => {
                return Err(ApiError::forbidden(
                    "policy_denied",
                    "training gate denied the template",
                )
                .with_details(serde_json::json!({ "deny_reasons": reasons })));
            }
            Admission::Skipped => {}
        }
    }
    let current = o
        .deps()
        .store
        .get_any(&rec.scenario_id)
        .await
        .map_err(ApiError::internal)?
        .unwrap_or(rec);
    let body = Created {
        network_id: current
            .network_id
            .clone()
            .unwrap_or_else(|| current.scenario_id.network_id()),
        status: current.status.as_str().to_owned(),
        scenario_id: current.scenario_id,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(body)))
}

#[utoipa::path(get, path = "/v1/scenarios/{id}",
    responses((status = 200, body = ScenarioView), (status = 401), (status = 404)),
    security(("bearer" = [])))]
async fn get_scenario(
    Authorized { scenario, .. }: Authorized<CanView>,
) -> axum::Json<ScenarioView> {
    axum::Json(ScenarioView::from_record(&scenario))
}

#[utoipa::path(delete, path = "/v1/scenarios/{id}",
    responses((status = 200, body = ScenarioView), (status = 401), (status = 404), (status = 409)),
    security(("bearer" = [])))]
async fn end_scenario(
    State(o): State<Orchestrator>,
    Authorized {
        caller,
        scenario: rec,
        ..
    }: Authorized<CanOperate>,
) -> Result<axum::Json<ScenarioView>, ApiError> {
    let id = &rec.scenario_id;
    if rec.status.is_terminal() {
        return Err(ApiError::new(
            Kind::Conflict,
            "scenario_ended",
            format!("scenario {id} has already ended ({})", rec.status),
        ));
    }
    let rec = o
        .end_early(&rec, &caller.sub)
        .await
        .map_err(ApiError::internal)?;
    debug_assert!(rec.status == ScenarioStatus::Failed || rec.status.is_terminal());
    Ok(axum::Json(ScenarioView::from_record(&rec)))
}
