//! forge_playbook_runner (:8087): the single deterministic evaluator of expectations, as a
//! service.
//!
//! `POST /v1/evaluate` judges one step against one observation (pure: no lab needed, the same
//! function the worker uses); `POST /v1/playbooks/run` performs a standalone playbook (the
//! spec's `playbook:` format) in a running lab and judges every step. Running commands in any
//! container of a lab is an instructor's or the orchestrator's right, within their tenant.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use chrono::Utc;
use forge_auth::Caller;
use forge_core::audit::{AuditEvent, AuditSink, Outcome};
use forge_core::playbook::{Observation, Playbook, PlaybookStep, StepOutcome, evaluate};
use forge_core::{ScenarioId, ScenarioStatus};
use forge_http::{ApiError, ApiJson, Kind, Service};
use forge_runtime::{Runtime, collect};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use crate::authz::{Action, ScenarioAccess};

/// The playbook runner; cheap to clone.
#[derive(Clone)]
pub struct Runner {
    runtime: Arc<dyn Runtime>,
    audit: Arc<dyn AuditSink>,
    access: ScenarioAccess,
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
        }
    }
}

/// One judged step.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepReport {
    #[schema(value_type = Object)]
    pub step: PlaybookStep,
    pub passed: bool,
    pub message: String,
    #[schema(value_type = Object)]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateBody {
    #[schema(value_type = Object)]
    pub step: PlaybookStep,
    #[schema(value_type = Object)]
    pub observation: Observation,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    #[schema(value_type = String)]
    pub scenario_id: ScenarioId,
    /// The spec's format: `{"playbook": [{"step": "execute_command", …}, …]}`.
    #[schema(value_type = Object)]
    pub playbook: Playbook,
}

#[derive(OpenApi)]
#[openapi(
    paths(evaluate_step, run),
    components(schemas(EvaluateBody, RunBody, PlaybookReport, StepReport))
)]
struct ApiDoc;

pub fn router(state: Runner) -> Router {
    let routes = Router::new()
        .route("/v1/evaluate", post(evaluate_step))
        .route("/v1/playbooks/run", post(run))
        .with_state(state.clone());
    // Playbooks are larger than the other services' bodies (up to 100 steps).
    let limit = 1024 * 1024;
    crate::service_router(
        Service::Runner,
        ApiDoc::openapi(),
        routes,
        &state.access,
        limit,
    )
}

#[utoipa::path(post, path = "/v1/evaluate", request_body = EvaluateBody,
    responses((status = 200, description = "`{passed, message}`"), (status = 400)),
    security(("bearer" = [])))]
async fn evaluate_step(
    _caller: Caller,
    ApiJson(body): ApiJson<EvaluateBody>,
) -> axum::Json<StepOutcome> {
    axum::Json(evaluate(&body.step, &body.observation))
}

#[utoipa::path(post, path = "/v1/playbooks/run", request_body = RunBody,
    responses((status = 200, body = PlaybookReport), (status = 403), (status = 404), (status = 409)),
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
    if body.playbook.playbook.is_empty() || body.playbook.playbook.len() > 100 {
        return Err(ApiError::bad_request(
            "invalid_playbook",
            "a playbook has 1-100 steps",
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
