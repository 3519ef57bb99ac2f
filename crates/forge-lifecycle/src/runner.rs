//! forge_playbook_runner (:8087): the single deterministic evaluator of expectations, as a
//! service.
//!
//! `POST /v1/evaluate` judges one step against one observation (pure: no lab needed, the same
//! function the worker uses); `POST /v1/playbooks/run` performs a standalone playbook (the
//! spec's `playbook:` format) in a running lab and judges every step. Running commands in any
//! container of a lab is an instructor's or the orchestrator's right, within their tenant.
//!
//! A runner is the runner of one lab host: a playbook for a lab on another host is forwarded to
//! that host's runner (one hop; it authorizes as usual).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use forge_auth::Caller;
use forge_core::audit::{AuditEvent, AuditSink, Outcome};
use forge_core::playbook::{Observation, Playbook, PlaybookStep, StepOutcome, evaluate};
use forge_core::{ScenarioId, ScenarioStatus};
use forge_http::{ApiError, ApiJson, ErrorEnvelope, Kind, Service};
use forge_runtime::{Runtime, collect};
use forge_store::Store;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use crate::authz::{Action, ScenarioAccess};
use crate::worker::forward::{Endpoint, FORWARDED_BY, owner_url, relay_http};

/// Playbooks are larger than the other services' bodies (up to 100 steps).
const RUN_BODY_LIMIT: usize = 1024 * 1024;

/// The playbook runner; cheap to clone.
#[derive(Clone)]
pub struct Runner {
    runtime: Arc<dyn Runtime>,
    audit: Arc<dyn AuditSink>,
    access: ScenarioAccess,
    /// The lab host this runner runs playbooks on, with the store that says where labs are.
    host: Option<(Arc<dyn Store>, String)>,
    http: reqwest::Client,
}

impl Runner {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        audit: Arc<dyn AuditSink>,
        access: ScenarioAccess,
    ) -> Self {
        Self {
            runtime,
            audit,
            access,
            host: None,
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(3))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client without custom TLS builds"),
        }
    }

    /// The runner of lab host `host_id`: playbooks for other hosts' labs are forwarded.
    pub fn on_host(mut self, store: Arc<dyn Store>, host_id: &str) -> Self {
        self.host = Some((store, host_id.to_owned()));
        self
    }
}

/// Middleware on `POST /v1/playbooks/run`: run here, or forward to the runner of the host that
/// owns the body's `scenario_id`. A body that is not JSON with a scenario id is left to the
/// handler, which names what is wrong.
async fn to_owner(State(r): State<Runner>, req: Request, next: Next) -> Response {
    let Some((store, host)) = r.host.clone() else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED_BY) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, RUN_BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(Kind::PayloadTooLarge, "body_too_large", e.to_string())
                .into_response();
        }
    };
    let id = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("scenario_id")?.as_str().map(str::to_owned));
    let base = match id {
        None => None,
        Some(id) => match owner_url(store.as_ref(), &host, &id, Endpoint::Runner).await {
            Ok(base) => base,
            Err(e) => return e.into_response(),
        },
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    match base {
        None => next.run(req).await,
        Some(base) => {
            metrics::counter!("forge_runner_forwarded_total").increment(1);
            let url = format!("{}/v1/playbooks/run", base.trim_end_matches('/'));
            relay_http(&r.http, &host, req, url).await
        }
    }
}

/// One judged step.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepReport {
    pub step: PlaybookStep,
    pub passed: bool,
    pub message: String,
    pub observation: Observation,
}

/// A playbook run: every step in order; passed when all passed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlaybookReport {
    pub scenario_id: String,
    pub passed: bool,
    pub steps: Vec<StepReport>,
}

/// Performs every step of `playbook` in the lab, in order, and judges it.
pub async fn run_playbook(
    rt: &dyn Runtime,
    scenario: &ScenarioId,
    playbook: &Playbook,
) -> PlaybookReport {
    let mut steps = Vec::with_capacity(playbook.playbook.len());
    for step in &playbook.playbook {
        let (observation, _artifact) = collect(rt, scenario, step).await;
        let StepOutcome { passed, message } = evaluate(step, &observation);
        steps.push(StepReport {
            step: step.clone(),
            passed,
            message,
            observation,
        });
    }
    PlaybookReport {
        scenario_id: scenario.to_string(),
        passed: steps.iter().all(|s| s.passed),
        steps,
    }
}

/// Body of `POST /v1/evaluate`: one step and what a collector observed when it performed it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateBody {
    #[serde(deserialize_with = "forge_core::playbook::object")]
    pub step: PlaybookStep,
    #[serde(deserialize_with = "forge_core::playbook::object")]
    pub observation: Observation,
}

/// Most steps a playbook run may have.
pub const MAX_PLAYBOOK_STEPS: usize = 100;

/// Body of `POST /v1/playbooks/run`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// A running scenario of the caller's tenant.
    #[schema(value_type = String, pattern = "^scn-[0-9a-f]{12}$", example = "scn-0123456789ab")]
    pub scenario_id: ScenarioId,
    /// The spec's format: `{"playbook": [{"step": "execute_command", …}, …]}`, 1 to
    /// [`MAX_PLAYBOOK_STEPS`] steps.
    #[serde(deserialize_with = "forge_core::playbook::object")]
    #[schema(schema_with = run_playbook_schema)]
    pub playbook: Playbook,
}

/// [`Playbook`] as a run takes it: 1 to [`MAX_PLAYBOOK_STEPS`] steps.
fn run_playbook_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, Type};
    use utoipa::openapi::{Ref, RefOr};
    let steps = ArrayBuilder::new()
        .items(RefOr::Ref(Ref::from_schema_name("PlaybookStep")))
        .min_items(Some(1))
        .max_items(Some(MAX_PLAYBOOK_STEPS));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("playbook", steps)
        .required("playbook")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .build()
}

#[derive(OpenApi)]
#[openapi(
    paths(evaluate_step, run),
    components(schemas(
        EvaluateBody,
        RunBody,
        PlaybookReport,
        StepReport,
        PlaybookStep,
        Observation,
        forge_core::template::Expect,
        StepOutcome
    ))
)]
struct ApiDoc;

/// The runner's OpenAPI document: steps refuse fields they do not have, as they are parsed.
fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    forge_http::openapi::deny_unknown_fields(&mut doc, "PlaybookStep");
    doc
}

pub fn router(state: Runner) -> Router {
    let routes = Router::new()
        .route("/v1/evaluate", post(evaluate_step))
        .route(
            "/v1/playbooks/run",
            post(run).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                to_owner,
            )),
        )
        .with_state(state.clone());
    let limit = RUN_BODY_LIMIT;
    crate::service_router(Service::Runner, openapi(), routes, &state.access, limit)
}

#[utoipa::path(post, path = "/v1/evaluate", request_body = EvaluateBody,
    responses(
        (status = 200, description = "The verdict on the step (an observation of another kind than the step's fails)", body = StepOutcome),
        (status = 400, description = "Malformed or invalid body; the message names the field", body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn evaluate_step(
    _caller: Caller,
    ApiJson(body): ApiJson<EvaluateBody>,
) -> axum::Json<StepOutcome> {
    axum::Json(evaluate(&body.step, &body.observation))
}

#[utoipa::path(post, path = "/v1/playbooks/run", request_body = RunBody,
    responses(
        (status = 200, description = "Every step performed and judged, in order", body = PlaybookReport),
        (status = 400, description = "Malformed or invalid body (`invalid_request`, `invalid_json`) or a playbook without 1-100 steps (`invalid_playbook`)", body = ErrorEnvelope),
        (status = 403, description = "Role forge.instructor or forge.orchestrator is required (`missing_role`)", body = ErrorEnvelope),
        (status = 404, description = "No such scenario in the caller's tenant (`scenario_not_found`)", body = ErrorEnvelope),
        (status = 409, description = "The scenario is not running (`scenario_not_running`)", body = ErrorEnvelope),
        (status = 502, description = "The lab host that runs the lab cannot be reached (`lab_host_unreachable`)", body = ErrorEnvelope),
        (status = 503, description = "The lab host that runs the lab is not answering (`lab_host_unavailable`); see Retry-After", body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn run(
    State(r): State<Runner>,
    caller: Caller,
    ApiJson(body): ApiJson<RunBody>,
) -> Result<axum::Json<PlaybookReport>, ApiError> {
    let id = body.scenario_id;
    let rec = r
        .access
        .authorize(&caller, id.as_str(), Action::RunPlaybook)
        .await?;
    if rec.status != ScenarioStatus::Running {
        return Err(ApiError::new(
            Kind::Conflict,
            "scenario_not_running",
            format!("scenario {id} is {}", rec.status),
        ));
    }
    if body.playbook.playbook.is_empty() || body.playbook.playbook.len() > MAX_PLAYBOOK_STEPS {
        return Err(ApiError::bad_request(
            "invalid_playbook",
            format!("a playbook has 1-{MAX_PLAYBOOK_STEPS} steps"),
        ));
    }
    let report = run_playbook(r.runtime.as_ref(), &id, &body.playbook).await;
    r.audit.record(
        AuditEvent::new(
            Utc::now(),
            "playbook.run",
            caller.sub.clone(),
            id.as_str(),
            "execute",
            Outcome::Success,
        )
        .with_detail("steps", report.steps.len())
        .with_detail("passed", report.passed),
    );
    Ok(axum::Json(report))
}
