//! The proposal routes on the worker (the lab's host answers them; other hosts forward, see
//! `worker::forward`):
//!
//! - `POST /v1/scenarios/{id}/proposals`: ask for a proposal. Instructors and the orchestrator
//!   role (an agent runner) may ask for any kind; the lab's learner for a `hint` or an
//!   `explain` only, which are text and never run;
//! - `GET /v1/scenarios/{id}/proposals`: the lab's proposals, their status, the gate's reasons
//!   and output. Instructors and the orchestrator role see all; the learner the ones they asked;
//! - `POST /v1/scenarios/{id}/proposals/{pid}/approve` and `…/reject`: instructors only
//!   (`forge.instructor`; the orchestrator role asks, it does not approve its own proposals).
//!
//! Without a configured endpoint every route answers 409 `llm_disabled` after the usual access
//! check.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use forge_auth::roles;
use forge_core::ScenarioStatus;
use forge_http::{ApiError, ApiJson, ErrorEnvelope, Kind};
use forge_store::ScenarioRecord;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::{Ask, LabContext, Llm, LlmError, Proposal, ProposalKind, ProposalStatus, RunOutput};
use crate::authz::{Authorized, CanOperate, CanSupervise, CanView, require_role, supervises};
use crate::worker::Worker;

/// Longest question accepted.
const MAX_QUESTION: usize = 1000;

/// Body of `POST /v1/scenarios/{id}/proposals`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    /// What to propose; learners may ask for `hint` or `explain` only.
    pub kind: ProposalKind,
    /// What the asker wants to know: 1-1000 characters, not all white space.
    #[schema(
        max_length = 1000,
        pattern = "[^\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub question: Option<String>,
    /// Confine an `exec` to this container of the lab (1-64 characters).
    #[schema(min_length = 1, max_length = 64)]
    pub container: Option<String>,
    /// Ask for an instructor's approval even when the gate would allow it alone.
    #[serde(default)]
    pub require_approval: bool,
}

/// Query of `GET /v1/scenarios/{id}/proposals`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only proposals with this status (`denied`, `pending_approval`, `approved`, `rejected`,
    /// `ran`, `failed`, `answered`).
    #[param(pattern = "^(denied|pending_approval|approved|rejected|ran|failed|answered)$")]
    pub status: Option<String>,
}

/// Tokens spent and allowed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenUsage {
    pub lab_used: u64,
    pub lab_budget: u64,
    /// Today (UTC), on this lab host.
    pub tenant_used: u64,
    pub tenant_budget: u64,
}

/// Body of `GET /v1/scenarios/{id}/proposals`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProposalList {
    pub scenario_id: String,
    pub tokens: TokenUsage,
    /// Oldest first.
    pub proposals: Vec<Proposal>,
}

#[derive(OpenApi)]
#[openapi(
    paths(ask, list, approve, reject),
    components(schemas(
        AskBody,
        Proposal,
        ProposalKind,
        ProposalStatus,
        RunOutput,
        ProposalList,
        TokenUsage
    ))
)]
pub struct LlmDoc;

/// The routes, for the worker's router (before its forwarding layer).
pub fn routes() -> Router<Worker> {
    Router::new()
        .route("/v1/scenarios/{id}/proposals", post(ask).get(list))
        .route("/v1/scenarios/{id}/proposals/{pid}/approve", post(approve))
        .route("/v1/scenarios/{id}/proposals/{pid}/reject", post(reject))
}

fn enabled(w: &Worker) -> Result<&Llm, ApiError> {
    w.deps().llm.as_ref().ok_or_else(|| {
        ApiError::new(
            Kind::Conflict,
            "llm_disabled",
            "llm proposals are off: no endpoint is configured (FORGE_LLM_URL, FORGE_LLM_MODEL)",
        )
    })
}

fn ensure_running(rec: &ScenarioRecord) -> Result<(), ApiError> {
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

/// `pid` if it can be a proposal id (`prp-` and 12 lowercase hex digits), else the 404.
fn proposal_id(pid: &str) -> Result<&str, ApiError> {
    let hex = pid.strip_prefix("prp-").unwrap_or_default();
    if hex.len() == 12 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Ok(pid);
    }
    Err(llm_error(LlmError::UnknownProposal(pid.to_owned())))
}

fn llm_error(e: LlmError) -> ApiError {
    match e {
        LlmError::UnknownProposal(_) => ApiError::not_found("proposal_not_found", e.to_string()),
        LlmError::NotPending { .. } => {
            ApiError::new(Kind::Conflict, "proposal_not_pending", e.to_string())
        }
        LlmError::Unavailable(_) => {
            ApiError::new(Kind::BadGateway, "llm_unavailable", e.to_string())
        }
        LlmError::BadAnswer(_) => ApiError::new(Kind::BadGateway, "llm_bad_answer", e.to_string()),
        LlmError::Config(_) => ApiError::internal(e),
    }
}

#[utoipa::path(post, path = "/v1/scenarios/{id}/proposals", request_body = AskBody,
    params(("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$")),
    responses(
        (status = 201, description = "The proposal as decided: `denied` (budget, a malformed answer, Rust's checks or the LLM gate; nothing ran), `pending_approval`, `ran` (with its output), `failed` or `answered`", body = Proposal),
        (status = 400, description = "Malformed or invalid body; a container the lab does not have (`unknown_container`)", body = ErrorEnvelope),
        (status = 403, description = "A learner asked for `exec` (`instructor_only`)", body = ErrorEnvelope),
        (status = 404, description = "No such scenario the caller may work in (`scenario_not_found`)", body = ErrorEnvelope),
        (status = 409, description = "No LLM endpoint is configured (`llm_disabled`) or the lab is not running (`scenario_not_running`)", body = ErrorEnvelope),
        (status = 502, description = "The LLM endpoint cannot answer (`llm_unavailable`) or answers no chat completion (`llm_bad_answer`), or the lab host cannot be reached (`lab_host_unreachable`)", body = ErrorEnvelope),
        (status = 503, description = "The lab host that runs the lab is not answering (`lab_host_unavailable`); see Retry-After", body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn ask(
    State(w): State<Worker>,
    Authorized {
        caller,
        scenario: rec,
        ..
    }: Authorized<CanOperate>,
    ApiJson(body): ApiJson<AskBody>,
) -> Result<(StatusCode, axum::Json<Proposal>), ApiError> {
    if body.kind == ProposalKind::Exec && !supervises(&caller) {
        return Err(ApiError::forbidden(
            "instructor_only",
            "learners may ask for a hint or an explanation only",
        ));
    }
    if let Some(q) = &body.question
        && (q.trim().is_empty() || q.chars().count() > MAX_QUESTION)
    {
        return Err(ApiError::bad_request(
            "invalid_question",
            format!("question must be 1-{MAX_QUESTION} characters, not all white space"),
        ));
    }
    if let Some(c) = &body.container
        && (c.is_empty() || c.chars().count() > 64)
    {
        return Err(ApiError::bad_request(
            "invalid_container",
            "container must be 1-64 characters",
        ));
    }
    let llm = enabled(&w)?;
    ensure_running(&rec)?;
    let template = w
        .deps()
        .catalog
        .get(&rec.template)
        .map(|e| e.template.clone())
        .ok_or_else(|| {
            ApiError::internal(format!("template `{}` is not in the catalog", rec.template))
        })?;
    if let Some(c) = &body.container
        && template.container(c).is_none()
    {
        return Err(ApiError::bad_request(
            "unknown_container",
            format!("lab has no container `{c}`"),
        ));
    }
    let ask = Ask {
        scenario: rec.scenario_id.clone(),
        tenant: rec.tenant_id.clone(),
        asked_by: caller.sub.clone(),
        kind: body.kind,
        question: body.question,
        container: body.container,
        require_approval: body.require_approval,
        lab: LabContext::of(rec.scenario_id.as_str(), &template),
    };
    let p = llm.propose(ask).await.map_err(llm_error)?;
    Ok((StatusCode::CREATED, axum::Json(p)))
}

#[utoipa::path(get, path = "/v1/scenarios/{id}/proposals", params(
        ("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$"),
        ListQuery),
    responses(
        (status = 200, description = "The lab's proposals, oldest first (a learner sees the ones they asked for)", body = ProposalList),
        (status = 400, description = "An unknown status (`invalid_status`)", body = ErrorEnvelope),
        (status = 404, description = "No such scenario the caller may see (`scenario_not_found`)", body = ErrorEnvelope),
        (status = 409, description = "No LLM endpoint is configured (`llm_disabled`)", body = ErrorEnvelope),
        (status = 502, description = "The lab host that runs the lab cannot be reached (`lab_host_unreachable`)", body = ErrorEnvelope),
        (status = 503, description = "The lab host that runs the lab is not answering (`lab_host_unavailable`); see Retry-After", body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn list(
    State(w): State<Worker>,
    Authorized {
        caller,
        scenario: rec,
        ..
    }: Authorized<CanView>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<ProposalList>, ApiError> {
    let wanted = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<ProposalStatus>(serde_json::Value::String(s.to_owned()))
                .map_err(|_| {
                    ApiError::bad_request("invalid_status", format!("unknown status `{s}`"))
                })?,
        ),
    };
    let llm = enabled(&w)?;
    let all = supervises(&caller);
    let proposals = llm
        .list(&rec.scenario_id)
        .into_iter()
        .filter(|p| all || p.asked_by == caller.sub)
        .filter(|p| wanted.is_none_or(|s| p.status == s))
        .collect();
    let ((lab_used, tenant_used), (lab_budget, tenant_budget)) =
        llm.usage(&rec.scenario_id, &rec.tenant_id);
    Ok(axum::Json(ProposalList {
        scenario_id: rec.scenario_id.to_string(),
        tokens: TokenUsage {
            lab_used,
            lab_budget,
            tenant_used,
            tenant_budget,
        },
        proposals,
    }))
}

#[utoipa::path(post, path = "/v1/scenarios/{id}/proposals/{pid}/approve",
    params(
        ("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$"),
        ("pid" = String, Path, description = "Proposal id", pattern = "^prp-[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "Approved: its command ran (`ran`, `failed`) or the hint is delivered (`answered`)", body = Proposal),
        (status = 403, description = "Role forge.instructor missing (`missing_role`)", body = ErrorEnvelope),
        (status = 404, description = "No such scenario (`scenario_not_found`) or proposal (`proposal_not_found`)", body = ErrorEnvelope),
        (status = 409, description = "No LLM endpoint is configured (`llm_disabled`), the lab is not running (`scenario_not_running`) or the proposal is not pending (`proposal_not_pending`)", body = ErrorEnvelope),
        (status = 502, description = "The lab host that runs the lab cannot be reached (`lab_host_unreachable`)", body = ErrorEnvelope),
        (status = 503, description = "The lab host that runs the lab is not answering (`lab_host_unavailable`); see Retry-After", body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn approve(
    State(w): State<Worker>,
    Authorized {
        caller,
        scenario: rec,
        ..
    }: Authorized<CanSupervise>,
    Path(ids): Path<(String, String)>,
) -> Result<axum::Json<Proposal>, ApiError> {
    require_role(&caller, &[roles::INSTRUCTOR])?;
    let pid = proposal_id(&ids.1)?;
    let llm = enabled(&w)?;
    ensure_running(&rec)?;
    let p = llm
        .approve(&rec.scenario_id, pid, &caller.sub)
        .await
        .map_err(llm_error)?;
    Ok(axum::Json(p))
}

#[utoipa::path(post, path = "/v1/scenarios/{id}/proposals/{pid}/reject",
    params(
        ("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$"),
        ("pid" = String, Path, description = "Proposal id", pattern = "^prp-[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "Rejected: it never runs", body = Proposal),
        (status = 403, description = "Role forge.instructor missing (`missing_role`)", body = ErrorEnvelope),
        (status = 404, description = "No such scenario (`scenario_not_found`) or proposal (`proposal_not_found`)", body = ErrorEnvelope),
        (status = 409, description = "No LLM endpoint is configured (`llm_disabled`) or the proposal is not pending (`proposal_not_pending`)", body = ErrorEnvelope),
        (status = 502, description = "The lab host that runs the lab cannot be reached (`lab_host_unreachable`)", body = ErrorEnvelope),
        (status = 503, description = "The lab host that runs the lab is not answering (`lab_host_unavailable`); see Retry-After", body = ErrorEnvelope)),
    security(("bearer" = [])))]
async fn reject(
    State(w): State<Worker>,
    Authorized {
        caller,
        scenario: rec,
        ..
    }: Authorized<CanSupervise>,
    Path(ids): Path<(String, String)>,
) -> Result<axum::Json<Proposal>, ApiError> {
    require_role(&caller, &[roles::INSTRUCTOR])?;
    let pid = proposal_id(&ids.1)?;
    let llm = enabled(&w)?;
    let p = llm
        .reject(&rec.scenario_id, pid, &caller.sub)
        .map_err(llm_error)?;
    Ok(axum::Json(p))
}
