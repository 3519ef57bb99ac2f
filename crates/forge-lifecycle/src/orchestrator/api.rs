//! The orchestrator's HTTP API (spec: Orchestrator API): `POST /v1/scenarios` (roles
//! `forge.orchestrator` and `forge.spawn`), `GET /v1/scenarios/{id}` and
//! `DELETE /v1/scenarios/{id}` (the scenario's owner, or an instructor/orchestrator of its
//! tenant). Every lookup is scoped to the token's tenant: another tenant's scenario is a 404.
//!
//! `POST /v1/scenarios` is a spawn under the spec's orchestrator path, and a spawn has one way
//! in: the front door's (`forge_services::spawn`). A second way that wrote scenarios itself
//! would have to repeat, and keep repeating, the tenant check, the entitlement and quota gate,
//! billing, rate limits and idempotency; the one it used to have repeated none of them and let
//! the client pick the scenario id. So the route checks what is the orchestrator's own (its
//! role, its body) and hands the request to the front door's [`SpawnState`], which the platform
//! passes in: the same state in one process (`forge up`), so the same rate-limit buckets and
//! billing wake-up; an equivalent one in a `forge serve orchestrator` process, whose billing
//! rows the front door's outbox dispatcher delivers like its own. Scenario ids are the
//! platform's: a body naming one is refused (400), never looked up, so no id of another tenant
//! can tell the caller anything.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use forge_auth::{Caller, roles};
use forge_core::{ScenarioId, ScenarioStatus, Track};
use forge_http::{ApiError, ApiJson, ErrorEnvelope, Kind, Service};
use forge_services::spawn::{SpawnResponse, SpawnState};
use forge_store::ScenarioRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tower::ServiceExt;
use utoipa::OpenApi;

use super::Orchestrator;
use crate::authz::{Authorized, CanOperate, CanView};

/// Largest spawn answer the route reads back from the front door (a few hundred bytes).
const SPAWN_ANSWER_LIMIT: usize = 64 * 1024;
/// The front door's header on an answer replayed from its idempotency store.
const REPLAYED: &str = "idempotent-replayed";

/// Body of `POST /v1/scenarios`. Scenario ids are chosen by the platform: a `scenario_id` field
/// is refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScenario {
    /// A catalog template name, or a track name for the track's default template (the served
    /// document lists them).
    #[schema(example = "netplus-routing-lab")]
    pub template: String,
    /// Idempotency key, as in `POST /v1/spawn`: here or in the `x-request-id` header (both:
    /// must be equal); 1-255 characters without control characters once white space at either
    /// end is trimmed.
    #[schema(
        example = "req-abc123",
        pattern = "^[\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000](?:[^\\u0000-\\u001f\\u007f-\\u009f]{0,253}[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000])?[\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub request_id: Option<String>,
}

impl CreateScenario {
    /// The body, or a 400 naming the field at fault.
    fn parse(body: Value) -> Result<Self, ApiError> {
        // Never trusted, so refused rather than ignored: a client sending them believes they
        // matter. (code, field, why)
        const REFUSED: [(&str, &str, &str); 3] = [
            (
                "scenario_id_in_body",
                "scenario_id",
                "the platform chooses scenario ids and the response carries the new one",
            ),
            (
                "tenant_in_body",
                "tenant_id",
                "the tenant comes from the bearer token",
            ),
            (
                "tenant_in_body",
                "tenant",
                "the tenant comes from the bearer token",
            ),
        ];
        if let Value::Object(obj) = &body
            && let Some((code, field, why)) = REFUSED.iter().find(|(_, f, _)| obj.contains_key(*f))
        {
            return Err(ApiError::bad_request(
                code,
                format!("`{field}` is not accepted in the body; {why}"),
            ));
        }
        serde_json::from_value(body)
            .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid request: {e}")))
    }

    /// The equivalent `POST /v1/spawn` body: a track name asks for its default template.
    fn spawn_body(&self, catalog: &forge_catalog::Catalog) -> Result<Value, ApiError> {
        let mut body = Map::new();
        match self.template.parse::<Track>() {
            Ok(track) => {
                body.insert("track".into(), json!(track.as_str()));
            }
            Err(_) => {
                let entry = catalog.get(&self.template).ok_or_else(|| {
                    ApiError::bad_request(
                        "unknown_template",
                        format!("template `{}` is not in the catalog", self.template),
                    )
                })?;
                body.insert("track".into(), json!(entry.track.as_str()));
                body.insert("template".into(), json!(self.template));
            }
        }
        if let Some(id) = &self.request_id {
            body.insert("request_id".into(), json!(id));
        }
        Ok(Value::Object(body))
    }
}

/// 202 body of `POST /v1/scenarios`: the spec's fields plus the spawn answer's.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Created {
    #[schema(value_type = String, pattern = "^scn-[0-9a-f]{12}$")]
    pub scenario_id: ScenarioId,
    #[schema(pattern = "^(pending|creating|running|completed|failed|timeout)$")]
    pub status: String,
    pub network_id: String,
    pub request_id: String,
    pub access_url: String,
    pub expires_at: String,
}

/// `GET /v1/scenarios/{id}`: the spec's fields plus what a client needs to follow a lab.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScenarioView {
    #[schema(value_type = String, pattern = "^scn-[0-9a-f]{12}$")]
    pub scenario_id: ScenarioId,
    #[schema(pattern = "^(pending|creating|running|completed|failed|timeout)$")]
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

/// The front door `POST /v1/scenarios` hands its spawns to.
#[derive(Clone)]
struct SpawnFront {
    router: Router,
    request_id_header: axum::http::HeaderName,
}

/// The orchestrator's routes; `spawn` is the front door its `POST /v1/scenarios` spawns
/// through (see the module documentation).
pub fn router(state: Orchestrator, spawn: SpawnState) -> Router {
    let mut doc = openapi(&state.deps().catalog);
    doc.merge(super::labs::LabsDoc::openapi());
    doc.merge(super::pools_api::PoolsDoc::openapi());
    let front = SpawnFront {
        request_id_header: spawn.config().request_id_header.clone(),
        router: forge_services::spawn::router(spawn),
    };
    let routes = Router::new()
        .route(
            "/v1/scenarios",
            post(create_scenario)
                .layer(Extension(front))
                .get(super::labs::list_labs),
        )
        .route("/v1/scenarios/{id}", get(get_scenario).delete(end_scenario))
        .route("/v1/scenarios/{id}/extend", post(super::labs::extend))
        .route("/v1/hosts", get(super::labs::hosts))
        .route("/v1/pools", get(super::pools_api::pools))
        .with_state(state.clone());
    let limit = forge_http::DEFAULT_BODY_LIMIT;
    // The instructor's and operator's pages (served by the spawn service) call these routes
    // from another origin, with a bearer token and no cookies.
    crate::service_router(Service::Orchestrator, doc, routes, state.access(), limit)
        .layer(tower_http::cors::CorsLayer::permissive())
}

/// The orchestrator's OpenAPI document for `catalog`: a body names one of its templates or a
/// track.
fn openapi(catalog: &forge_catalog::Catalog) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let mut names: Vec<&str> = catalog
        .entries()
        .map(|e| e.template.metadata.name.as_str())
        .chain(Track::ALL.iter().map(|t| t.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let names = names.into_iter().map(|n| json!(n)).collect();
    forge_http::openapi::set_enum(&mut doc, "CreateScenario", "template", names);
    doc
}

#[utoipa::path(post, path = "/v1/scenarios", request_body = CreateScenario,
    params(
        ("x-request-id" = Option<String>, Header,
         description = "Idempotency key (alternative to the body's request_id; header name set by REQUEST_ID_HEADER): visible ASCII, 1-255 characters once spaces and tabs at either end are trimmed",
         pattern = "^[\\t ]*[!-~](?:[ -~]{0,253}[!-~])?[\\t ]*$"),
    ),
    responses(
        (status = 202, description = "Spawned (pending), as `POST /v1/spawn` would; replays carry `Idempotent-Replayed: true`", body = Created),
        (status = 400, description = "Invalid body (`invalid_request`, `invalid_json`, `unknown_template`), a `scenario_id` or tenant in it (`scenario_id_in_body`, `tenant_in_body`), or what `POST /v1/spawn` refuses: no request_id, a body request_id that differs from the header's (`request_id_conflict`)", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorEnvelope),
        (status = 403, description = "Missing role (forge.orchestrator, forge.spawn), unknown tenant, or the spawn or training gate denied", body = ErrorEnvelope),
        (status = 409, description = "Same request_id still in flight after the wait (`request_in_progress`); see Retry-After", body = ErrorEnvelope),
        (status = 422, description = "request_id already used with a different body (`idempotency_key_reused`)", body = ErrorEnvelope),
        (status = 429, description = "Tenant rate limit; see Retry-After", body = ErrorEnvelope),
        (status = 502, description = "Policy engine unavailable", body = ErrorEnvelope),
        (status = 503, description = "Bus unavailable; retry with the same request_id", body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn create_scenario(
    State(o): State<Orchestrator>,
    Extension(front): Extension<SpawnFront>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    if !caller.has_role(roles::ORCHESTRATOR) {
        return Err(ApiError::forbidden(
            "missing_role",
            "role forge.orchestrator is required",
        ));
    }
    let body = CreateScenario::parse(body)?.spawn_body(&o.deps().catalog)?;
    let mut spawn = Request::post("/v1/spawn").header(CONTENT_TYPE, "application/json");
    // The front door authenticates the caller itself and reads the idempotency key from the
    // body or its header; nothing else of the client's request is its business.
    for name in [&AUTHORIZATION, &front.request_id_header] {
        if let Some(v) = headers.get(name) {
            spawn = spawn.header(name, v);
        }
    }
    let spawn = spawn
        .body(Body::from(body.to_string()))
        .map_err(ApiError::internal)?;
    let answer = match front.router.oneshot(spawn).await {
        Ok(answer) => answer,
        Err(never) => match never {},
    };
    if answer.status() != StatusCode::CREATED {
        // Refusals (401, 403, 409, 422, 429, …) leave exactly as the front door wrote them.
        return Ok(answer);
    }
    let (parts, answer) = answer.into_parts();
    let bytes = to_bytes(answer, SPAWN_ANSWER_LIMIT)
        .await
        .map_err(ApiError::internal)?;
    let spawned: SpawnResponse = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    // The status right now (a replay may find the lab running already); the spawn answer is
    // enough when the store cannot say.
    let current = match o
        .deps()
        .store
        .get(&caller.tenant_id, &spawned.scenario_id)
        .await
    {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, scenario_id = %spawned.scenario_id, "reading a new scenario");
            None
        }
    };
    let created = Created {
        network_id: current
            .as_ref()
            .and_then(|r| r.network_id.clone())
            .unwrap_or_else(|| spawned.scenario_id.network_id()),
        status: current.map_or_else(
            || ScenarioStatus::Pending.as_str().to_owned(),
            |r| r.status.as_str().to_owned(),
        ),
        scenario_id: spawned.scenario_id,
        request_id: spawned.request_id,
        access_url: spawned.access_url,
        expires_at: spawned.expires_at,
    };
    let mut resp = (StatusCode::ACCEPTED, axum::Json(created)).into_response();
    if let Some(replayed) = parts.headers.get(REPLAYED) {
        resp.headers_mut().insert(REPLAYED, replayed.clone());
    }
    Ok(resp)
}

#[utoipa::path(get, path = "/v1/scenarios/{id}",
    params(("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "The scenario (ended ones too)", body = ScenarioView),
        (status = 404, description = "No such scenario the caller may view (`scenario_not_found`)", body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn get_scenario(
    Authorized { scenario, .. }: Authorized<CanView>,
) -> axum::Json<ScenarioView> {
    axum::Json(ScenarioView::from_record(&scenario))
}

#[utoipa::path(delete, path = "/v1/scenarios/{id}",
    params(("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "Ended early: the lab is torn down; the scenario stays readable, `failed`", body = ScenarioView),
        (status = 404, description = "No such scenario the caller may end (`scenario_not_found`)", body = ErrorEnvelope),
        (status = 409, description = "The scenario has already ended (`scenario_ended`)", body = ErrorEnvelope)),
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
    // Who ended it, in their name (the transition's own record is the orchestrator's).
    o.deps().audit.record(
        forge_core::audit::AuditEvent::new(
            Utc::now(),
            "scenario.end",
            caller.sub.clone(),
            id.as_str(),
            "delete",
            forge_core::audit::Outcome::Success,
        )
        .with_detail("tenant_id", rec.tenant_id.clone())
        .with_detail("owner", rec.owner_sub.clone()),
    );
    debug_assert!(rec.status == ScenarioStatus::Failed || rec.status.is_terminal());
    Ok(axum::Json(ScenarioView::from_record(&rec)))
}
