//! The worker agent's HTTP API: check, submit, exec (the learner's commands, for clients that
//! have no terminal) and the terminal WebSocket. Only the scenario's owner, or an instructor of
//! its tenant, may use them; another tenant's scenario is a 404.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use chrono::{SecondsFormat, Utc};
use forge_auth::roles;
use forge_bus::BusExt;
use forge_bus::messages::{EndReason, ExecuteRequested};
use forge_core::ScenarioStatus;
use forge_core::audit::{AuditEvent, Outcome};
use forge_http::{ApiError, ApiJson, Kind, Service};
use forge_runtime::ExecRequest;
use forge_store::ScenarioRecord;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::{Worker, feedback};
use crate::authz::{Authorized, CanOperate};

/// One criterion in a check report.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckedCriterion {
    pub criterion_id: String,
    pub description: String,
    pub passed: bool,
    /// Why it did not pass. Instructors (and the platform) get the evaluator's message; a
    /// learner gets only the kind of thing that is not right yet, never the expected value.
    pub message: Option<String>,
    /// The template's hint, only for criteria that did not pass.
    pub hint: Option<String>,
    pub weight: f64,
}

/// Body of a check: what passes now, without ending the lab.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckReport {
    pub scenario_id: String,
    pub checked_at: String,
    /// Weighted score the lab would get if submitted now.
    pub score: f64,
    pub passed: u32,
    pub total: u32,
    pub criteria: Vec<CheckedCriterion>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Submitted {
    pub scenario_id: String,
    pub status: String,
}

/// Body of `POST /v1/scenarios/{id}/exec`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// Shell command (`sh -c`).
    pub command: String,
    /// Instructors may name another container; learners run in the learner container.
    pub container: Option<String>,
    /// Seconds, 1-300 (default 30).
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub duration_ms: u64,
}

#[derive(OpenApi)]
#[openapi(
    paths(check, submit, exec),
    components(schemas(CheckReport, CheckedCriterion, Submitted, ExecBody, ExecOutput))
)]
struct ApiDoc;

pub fn router(state: Worker) -> Router {
    let routes = Router::new()
        .route("/v1/scenarios/{id}/check", post(check))
        .route("/v1/scenarios/{id}/submit", post(submit))
        .route("/v1/scenarios/{id}/exec", post(exec))
        .route(
            "/v1/scenarios/{id}/terminal",
            get(super::terminal::terminal),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::forward::to_owner,
        ))
        .with_state(state.clone());
    let doc = ApiDoc::openapi();
    let limit = forge_http::DEFAULT_BODY_LIMIT;
    crate::service_router(Service::Worker, doc, routes, state.access(), limit)
        .layer(tower_http::cors::CorsLayer::permissive())
}

/// 409 unless the lab is running: checks, submissions, commands and terminals need a lab.
pub(crate) fn ensure_running(rec: &ScenarioRecord) -> Result<(), ApiError> {
    if rec.status == ScenarioStatus::Running {
        return Ok(());
    }
    Err(ApiError::new(
        Kind::Conflict,
        "scenario_not_running",
        format!(
            "scenario {} is {}, not running",
            rec.scenario_id, rec.status
        ),
    ))
}

#[utoipa::path(post, path = "/v1/scenarios/{id}/check",
    responses((status = 200, body = CheckReport), (status = 404), (status = 409)),
    security(("bearer" = [])))]
async fn check(
    State(w): State<Worker>,
    Authorized {
        caller,
        scenario: rec,
        ..
    }: Authorized<CanOperate>,
) -> Result<axum::Json<CheckReport>, ApiError> {
    ensure_running(&rec)?;
    let Some(_guard) = w.begin_check(&rec.scenario_id) else {
        return Err(ApiError::new(
            Kind::Conflict,
            "check_in_progress",
            "a check of this lab is already running",
        ));
    };
    let evaluated = w.evaluate(&rec).await.map_err(ApiError::internal)?;
    let template = w.template(&rec).map_err(ApiError::internal)?;
    let details = feedback::sees_details(&caller);
    let results: Vec<_> = evaluated.iter().map(|e| e.result.clone()).collect();
    let criteria = evaluated
        .iter()
        .map(|e| {
            let r = &e.result;
            let c = template
                .spec
                .success_criteria
                .iter()
                .find(|c| c.id == r.criterion_id);
            CheckedCriterion {
                criterion_id: r.criterion_id.clone(),
                description: c.map(|c| c.description.clone()).unwrap_or_default(),
                passed: r.passed,
                message: feedback::message_for(e, details),
                hint: if r.passed {
                    None
                } else {
                    c.and_then(|c| c.hint.clone())
                },
                weight: r.weight,
            }
        })
        .collect();
    let passed = results.iter().filter(|r| r.passed).count() as u32;
    metrics::counter!("forge_checks_total", "track" => rec.track.as_str()).increment(1);
    w.deps().audit.record(
        AuditEvent::new(
            Utc::now(),
            "scenario.check",
            caller.sub.clone(),
            rec.scenario_id.as_str(),
            "execute",
            Outcome::Success,
        )
        .with_detail("passed", passed)
        .with_detail("total", results.len()),
    );
    Ok(axum::Json(CheckReport {
        scenario_id: rec.scenario_id.to_string(),
        checked_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        score: forge_core::scoring::weighted_value(&results),
        passed,
        total: results.len() as u32,
        criteria,
    }))
}

#[utoipa::path(post, path = "/v1/scenarios/{id}/submit",
    responses((status = 202, body = Submitted), (status = 404), (status = 409)),
    security(("bearer" = [])))]
async fn submit(
    State(w): State<Worker>,
    Authorized {
        caller,
        scenario: rec,
        ..
    }: Authorized<CanOperate>,
) -> Result<impl IntoResponse, ApiError> {
    ensure_running(&rec)?;
    let req = ExecuteRequested {
        scenario_id: rec.scenario_id.clone(),
        reason: EndReason::Submit,
        requested_by: caller.sub.clone(),
        requested_at: Utc::now(),
    };
    let ack = w.deps().bus.publish_msg(&req).await.map_err(|e| {
        ApiError::new(
            Kind::ServiceUnavailable,
            "bus_unavailable",
            format!("cannot queue the evaluation: {e}"),
        )
    })?;
    if !ack.duplicate {
        w.deps().audit.record(AuditEvent::new(
            Utc::now(),
            "scenario.submit",
            caller.sub.clone(),
            rec.scenario_id.as_str(),
            "execute",
            Outcome::Success,
        ));
    }
    let body = Submitted {
        scenario_id: rec.scenario_id.to_string(),
        status: "evaluating".into(),
    };
    Ok((StatusCode::ACCEPTED, axum::Json(body)))
}

#[utoipa::path(post, path = "/v1/scenarios/{id}/exec", request_body = ExecBody,
    responses((status = 200, body = ExecOutput), (status = 400), (status = 404), (status = 409)),
    security(("bearer" = [])))]
async fn exec(
    State(w): State<Worker>,
    Authorized {
        caller,
        scenario: rec,
        ..
    }: Authorized<CanOperate>,
    ApiJson(body): ApiJson<ExecBody>,
) -> Result<axum::Json<ExecOutput>, ApiError> {
    ensure_running(&rec)?;
    let template = w.template(&rec).map_err(ApiError::internal)?;
    let learner = template.learner_container().name.clone();
    let container = match body.container {
        Some(c) if c != learner => {
            if !caller.has_role(roles::INSTRUCTOR) {
                return Err(ApiError::forbidden(
                    "learner_container_only",
                    format!("learners run commands in `{learner}` only"),
                ));
            }
            if template.container(&c).is_none() {
                return Err(ApiError::bad_request(
                    "unknown_container",
                    format!("lab has no container `{c}`"),
                ));
            }
            c
        }
        _ => learner,
    };
    if body.command.trim().is_empty() || body.command.len() > 4096 {
        return Err(ApiError::bad_request(
            "invalid_command",
            "command must be 1-4096 characters",
        ));
    }
    let timeout = body.timeout_seconds.unwrap_or(30);
    if !(1..=300).contains(&timeout) {
        return Err(ApiError::bad_request(
            "invalid_timeout",
            "timeout_seconds must be 1-300",
        ));
    }
    let req = ExecRequest::shell(body.command.clone())
        .timeout(Duration::from_secs(timeout))
        .max_output(256 * 1024);
    let out = w
        .deps()
        .runtime
        .exec(&rec.scenario_id, &container, req)
        .await
        .map_err(|e| {
            ApiError::new(
                Kind::BadGateway,
                "runtime_error",
                format!("cannot run the command: {e}"),
            )
        })?;
    w.deps().audit.record(
        AuditEvent::new(
            Utc::now(),
            "scenario.exec",
            caller.sub.clone(),
            rec.scenario_id.as_str(),
            "execute",
            Outcome::Success,
        )
        .with_detail("container", container)
        .with_detail("command", body.command)
        .with_detail("exit_code", out.exit_code),
    );
    Ok(axum::Json(ExecOutput {
        exit_code: out.exit_code,
        stdout: out.stdout,
        stderr: out.stderr,
        timed_out: out.timed_out,
        duration_ms: out.duration.as_millis() as u64,
    }))
}
