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
use forge_http::{ApiError, ApiJson, ErrorEnvelope, Kind, Service};
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
    /// What the lab's agents (a defender, say) raised for the learner, oldest first.
    #[serde(default)]
    pub alerts: Vec<crate::agents::AgentAlert>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Submitted {
    pub scenario_id: String,
    #[schema(pattern = "^evaluating$")]
    pub status: String,
}

/// Body of `POST /v1/scenarios/{id}/exec`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// Shell command (`sh -c`): 1-4096 characters, not all white space. Exactly one of
    /// `command` and `argv`.
    #[schema(
        max_length = 4096,
        pattern = "[^\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub command: Option<String>,
    /// The program and its arguments, run without a shell (quoting stays as given): 1-64
    /// items of at most 4096 characters together, the first not empty. Exactly one of
    /// `command` and `argv`.
    #[schema(min_items = 1, max_items = 64)]
    pub argv: Option<Vec<String>>,
    /// Instructors may name another container of the lab; learners run in the learner
    /// container (naming it is allowed).
    pub container: Option<String>,
    /// Seconds, 1-300 (default 30).
    #[schema(minimum = 1, maximum = 300)]
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
    components(schemas(
        CheckReport,
        CheckedCriterion,
        Submitted,
        ExecBody,
        ExecOutput,
        crate::agents::AgentAlert
    ))
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
        .route(
            "/v1/scenarios/{id}/terminal/ticket",
            post(super::terminal::ticket),
        )
        .merge(crate::llm::api::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::forward::to_owner,
        ))
        .with_state(state.clone());
    let mut doc = ApiDoc::openapi();
    doc.merge(super::terminal::TerminalDoc::openapi());
    doc.merge(crate::llm::api::LlmDoc::openapi());
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
    params(("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "What passes now; the lab keeps running", body = CheckReport),
        (status = 404, description = "No such scenario the caller may work in (`scenario_not_found`)", body = ErrorEnvelope),
        (status = 409, description = "The lab is not running (`scenario_not_running`) or a check of it is running (`check_in_progress`)", body = ErrorEnvelope),
        (status = 502, description = "The lab host that runs the lab cannot be reached (`lab_host_unreachable`)", body = ErrorEnvelope),
        (status = 503, description = "The lab host that runs the lab is not answering (`lab_host_unavailable`); see Retry-After", body = ErrorEnvelope)),
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
    let score = forge_core::scoring::weighted_value(&results);
    metrics::counter!("forge_checks_total", "track" => rec.track.as_str()).increment(1);
    // Kept for the instructor's list of live labs and the learner's page after a reload.
    let summary = forge_store::CheckSummary {
        checked_at: Utc::now(),
        passed,
        total: results.len() as u32,
        score,
        criteria: results
            .iter()
            .map(|r| (r.criterion_id.clone(), r.passed))
            .collect(),
    };
    if let Err(e) = w
        .deps()
        .store
        .record_check(&rec.scenario_id, &summary)
        .await
    {
        tracing::warn!(error = %e, "cannot record the check for the instructor's view");
    }
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
        score,
        passed,
        total: results.len() as u32,
        criteria,
        alerts: w.agent_alerts(&rec.scenario_id),
    }))
}

#[utoipa::path(post, path = "/v1/scenarios/{id}/submit",
    params(("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$")),
    responses(
        (status = 202, description = "Evaluation queued: the lab is scored, signed, published and torn down", body = Submitted),
        (status = 404, description = "No such scenario the caller may work in (`scenario_not_found`)", body = ErrorEnvelope),
        (status = 409, description = "The lab is not running (`scenario_not_running`)", body = ErrorEnvelope),
        (status = 502, description = "The lab host that runs the lab cannot be reached (`lab_host_unreachable`)", body = ErrorEnvelope),
        (status = 503, description = "The bus cannot queue the evaluation (`bus_unavailable`), or the lab host that runs the lab is not answering (`lab_host_unavailable`)", body = ErrorEnvelope)),
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
    params(("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "The command ran (a timeout is `timed_out`, not an error)", body = ExecOutput),
        (status = 400, description = "Malformed or invalid body; a container the lab does not have (`unknown_container`)", body = ErrorEnvelope),
        (status = 403, description = "A learner named another container than the learner's (`learner_container_only`)", body = ErrorEnvelope),
        (status = 404, description = "No such scenario the caller may work in (`scenario_not_found`)", body = ErrorEnvelope),
        (status = 409, description = "The lab is not running (`scenario_not_running`)", body = ErrorEnvelope),
        (status = 502, description = "The engine cannot run the command (`runtime_error`), or the lab host that runs the lab cannot be reached (`lab_host_unreachable`)", body = ErrorEnvelope),
        (status = 503, description = "The lab host that runs the lab is not answering (`lab_host_unavailable`); see Retry-After", body = ErrorEnvelope)),
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
    let (request, shown) = exec_command(body.command, body.argv)?;
    let timeout = body.timeout_seconds.unwrap_or(30);
    if !(1..=300).contains(&timeout) {
        return Err(ApiError::bad_request(
            "invalid_timeout",
            "timeout_seconds must be 1-300",
        ));
    }
    let req = request
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
        .with_detail("command", shown)
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

/// The request an exec body asks for, and how to show it (argv quoted as a shell would need
/// it, so the audit record reads back as what ran).
fn exec_command(
    command: Option<String>,
    argv: Option<Vec<String>>,
) -> Result<(ExecRequest, String), ApiError> {
    let invalid = |msg: &str| ApiError::bad_request("invalid_command", msg.to_owned());
    match (command, argv) {
        (Some(c), None) => {
            if c.trim().is_empty() || c.chars().count() > 4096 {
                return Err(invalid("command must be 1-4096 characters"));
            }
            Ok((ExecRequest::shell(c.clone()), c))
        }
        (None, Some(argv)) => {
            let total: usize = argv.iter().map(|a| a.chars().count()).sum();
            if argv.is_empty() || argv.len() > 64 || total > 4096 {
                return Err(invalid(
                    "argv must have 1-64 items of at most 4096 characters together",
                ));
            }
            if argv[0].is_empty() {
                return Err(invalid("argv[0], the program, must not be empty"));
            }
            let shown = shlex::try_join(argv.iter().map(String::as_str))
                .unwrap_or_else(|_| format!("{argv:?}"));
            Ok((ExecRequest::argv(argv), shown))
        }
        (Some(_), Some(_)) => Err(invalid("give either command or argv, not both")),
        (None, None) => Err(invalid("give command (a shell command) or argv")),
    }
}
