//! `POST /v1/spawn`.

use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use forge_auth::{AuthError, Caller, roles};
use forge_bus::BusExt;
use forge_bus::messages::SpawnRequested;
use forge_core::ScenarioId;
use forge_core::audit::{AuditEvent, Outcome};
use forge_core::template::policy_input;
use forge_http::{ApiError, ApiJson, Kind};
use forge_store::{Began, Billing, IdempotencyBegin, NewScenario, StoreError};
use serde_json::{Value, json};

use super::SpawnState;
use super::api::{SpawnResponse, expiry};
use super::gate::{GateError, gate_input};
use super::request::{ValidSpawn, validate};
use super::warm;
use crate::billing::{self, BillingMode};
use crate::ratelimit::retry_after_secs;
use crate::tenants::Tenant;

/// Header on a response replayed from the idempotency store.
pub const REPLAYED: &str = "idempotent-replayed";

pub(super) async fn spawn(
    State(state): State<SpawnState>,
    caller: Result<Caller, AuthError>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<ApiJson<Value>, ApiError>,
) -> Response {
    let started = Instant::now();
    // Only validated tracks become label values: a client cannot grow the metric's cardinality.
    let mut track = "unknown";
    let resp = handle(&state, caller, &headers, query.as_deref(), body, &mut track)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    let status = outcome_of(resp.status());
    metrics::counter!("forge_spawn_requests_total", "track" => track, "status" => status)
        .increment(1);
    metrics::histogram!("forge_spawn_duration_seconds", "track" => track)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// The `status` label of `forge_spawn_requests_total` (the spec's SpawnFailureRateHigh alert
/// watches `status="error"`): `success`, `denied` (not allowed: authentication, role, policy,
/// quota, rate limit), `invalid` (the request itself is wrong) or `error` (the platform failed).
pub fn outcome_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "success",
        401 | 403 | 429 => "denied",
        400..=499 => "invalid",
        _ => "error",
    }
}

async fn handle(
    state: &SpawnState,
    caller: Result<Caller, AuthError>,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Result<ApiJson<Value>, ApiError>,
    track_label: &mut &'static str,
) -> Result<Response, ApiError> {
    let deps = state.deps();
    let caller = caller?;
    let wait = warm::parse_wait(query)?;
    caller.require_role(roles::SPAWN)?;
    let tenant = deps.tenants.tenant(&caller.tenant_id).ok_or_else(|| {
        ApiError::forbidden(
            "unknown_tenant",
            format!(
                "tenant `{}` is not known to this platform",
                caller.tenant_id
            ),
        )
    })?;
    if let Err(wait) =
        state
            .inner
            .limiter
            .check(tenant.id, tenant.plan.rate, std::time::Instant::now())
    {
        let r = tenant.plan.rate;
        return Err(ApiError::too_many_requests(
            format!(
                "tenant `{}` exceeded its rate limit ({} requests/s, burst {}); retry after the \
                 Retry-After delay with backoff",
                tenant.id, r.requests_per_second, r.burst
            ),
            retry_after_secs(wait),
        ));
    }
    let ApiJson(body) = body?;
    let spawn = validate(body, headers, &deps.config.request_id_header, &deps.catalog)?;
    *track_label = spawn.track.as_str();

    if let Some((status, body)) = claim_key(state, tenant.id, &spawn).await? {
        return Ok(json_response(status, body, true));
    }
    match create(state, &caller, &tenant, &spawn, wait).await {
        Ok(body) => {
            if let Err(e) = deps
                .store
                .complete(tenant.id, &spawn.request_id, 201, &body)
                .await
            {
                // The scenario exists; a retry after the key's lease converges on it anyway.
                tracing::error!(error = %e, "could not store the idempotent response");
            }
            Ok(json_response(201, body, false))
        }
        Err(e) => {
            // Only successes are replayed: a denial, quota or outage may pass on a later retry.
            if let Err(abandon) = deps.store.abandon(tenant.id, &spawn.request_id).await {
                tracing::error!(error = %abandon, "could not release an idempotency key");
            }
            Err(e)
        }
    }
}

/// Claims the idempotency key: `None` → this request does the work; `Some` → replay that.
/// A duplicate of an in-flight request waits (bounded) for the first one and replays its
/// response, so concurrent retries all see the same body.
async fn claim_key(
    state: &SpawnState,
    tenant: &str,
    spawn: &ValidSpawn,
) -> Result<Option<(u16, Vec<u8>)>, ApiError> {
    let cfg = &state.deps().config;
    let deadline = Instant::now() + cfg.idempotency_wait;
    let mut pause = Duration::from_millis(5);
    loop {
        let began = state
            .deps()
            .store
            .begin(&IdempotencyBegin {
                tenant_id: tenant,
                key: &spawn.request_id,
                request_hash: &spawn.request_hash,
                now: Utc::now(),
                lease: cfg.idempotency_lease,
                retention: cfg.idempotency_retention,
            })
            .await
            .map_err(ApiError::internal)?;
        match began {
            Began::New => return Ok(None),
            Began::Done { status, body } => return Ok(Some((status, body))),
            Began::Mismatch => {
                return Err(ApiError::unprocessable(
                    "idempotency_key_reused",
                    format!(
                        "request_id `{}` was already used with a different request body; use a \
                         new request_id for a different spawn",
                        spawn.request_id
                    ),
                ));
            }
            Began::InFlight => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(ApiError::new(
                        Kind::Conflict,
                        "request_in_progress",
                        format!(
                            "a request with request_id `{}` is still being processed; retry later",
                            spawn.request_id
                        ),
                    )
                    .with_retry_after(1));
                }
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// Gate, persist, bill, publish, audit; returns the 201 body.
async fn create(
    state: &SpawnState,
    caller: &Caller,
    tenant: &Tenant<'_>,
    spawn: &ValidSpawn,
    wait: Option<Duration>,
) -> Result<Vec<u8>, ApiError> {
    let deps = state.deps();
    let active = deps
        .store
        .count_active(tenant.id)
        .await
        .map_err(ApiError::internal)?;
    let template = spawn.template_name();
    let input = gate_input(caller, Some(tenant), active, spawn.track.as_str(), template);
    let decision = deps
        .gate
        .decide(input)
        .await
        .map_err(|e| gate_error("spawn gate", e))?;
    if !decision.allow {
        deps.audit.record(
            audit_event(caller, &spawn.request_id, Outcome::Denied, spawn)
                .with_detail("gate", "spawn_gate")
                .with_detail("deny_reasons", json!(decision.deny_reasons)),
        );
        return Err(
            ApiError::forbidden("policy_denied", "the spawn gate denied this request")
                .with_details(json!({ "deny_reasons": decision.deny_reasons })),
        );
    }
    // The template must be allowed to run before the spawn is stored and charged: a deny here
    // is a 403 the client can act on, not a charged lab that fails in the orchestrator (which
    // still asks the same gate, in case the template or the policies change in between).
    let computed;
    let input = match state.inner.training_inputs.get(template) {
        Some(ready) => ready,
        None => {
            computed = policy_input(&spawn.template);
            &computed
        }
    };
    let decision = deps
        .gate
        .decide_training(input)
        .await
        .map_err(|e| gate_error("training gate", e))?;
    if !decision.allow {
        deps.audit.record(
            audit_event(caller, &spawn.request_id, Outcome::Denied, spawn)
                .with_detail("gate", "training_gate")
                .with_detail("deny_reasons", json!(decision.deny_reasons)),
        );
        return Err(ApiError::forbidden(
            "training_gate_denied",
            format!("the training gate does not allow template `{template}` to run"),
        )
        .with_details(json!({ "template": template, "deny_reasons": decision.deny_reasons })));
    }

    let now = Utc::now();
    // A warm lab's id becomes the scenario's: the lab needs no renaming to be this spawn's.
    let warm = warm::take(state, template).await;
    let scenario_id = warm
        .as_ref()
        .map_or_else(ScenarioId::generate, |w| w.scenario_id.clone());
    let new = NewScenario {
        access_url: format!("{}/access/{scenario_id}", deps.config.base_url),
        tenant_id: tenant.id.to_owned(),
        owner_sub: caller.sub.clone(),
        track: spawn.track,
        template: template.to_owned(),
        request_id: spawn.request_id.clone(),
        created_at: now,
        expires_at: expiry(now, spawn.template.spec.limits.timeout_minutes),
        scenario_id,
    };
    let tier = spawn.template.tier().unwrap_or("default");
    let charge = billing::charge(
        tenant,
        deps.tenants.currency(),
        &spawn.request_id,
        &new.scenario_id,
        spawn.track,
        template,
        tier,
        now,
    );
    let gateway = deps.config.billing.mode == BillingMode::Gateway;
    let billing = if gateway {
        Billing::LedgerAndOutbox(&charge)
    } else {
        Billing::Ledger(&charge)
    };
    // The gate saw `active` a moment ago; the store re-checks atomically so concurrent spawns
    // cannot overshoot the plan together.
    let max_active = u64::from(tenant.plan.max_active_scenarios);
    let inserted = deps
        .store
        .insert_pending_limited(&new, billing, max_active)
        .await;
    let warm = match (warm, &inserted) {
        (Some(w), Ok(i)) if i.created => Some(w),
        (Some(w), _) => {
            warm::give_back(state, w).await;
            None
        }
        (None, _) => None,
    };
    let inserted = inserted.map_err(|e| match e {
        StoreError::RequestIdReused { .. } => {
            ApiError::unprocessable("idempotency_key_reused", e.to_string())
        }
        StoreError::QuotaExceeded { .. } => {
            ApiError::forbidden("policy_denied", "the spawn gate denied this request")
                .with_details(json!({ "deny_reasons": [e.to_string()] }))
        }
        other => ApiError::internal(other),
    })?;
    if gateway && inserted.created {
        state.inner.billing_wake.notify_one();
    }
    // A warm lab is up and healthy already: the scenario runs as soon as the store says so,
    // in this answer's path; its host takes it over when `spawn.request` reaches it.
    let record = match &warm {
        Some(w) => warm::start(state, w, inserted.record).await,
        None => inserted.record,
    };
    // The spawn's request id names the scenario's work in every service's log lines.
    let span = tracing::Span::current();
    span.record("scenario_id", record.scenario_id.as_str());
    span.record("tenant_id", record.tenant_id.as_str());
    span.record("request_id", record.request_id.as_str());
    let msg = SpawnRequested {
        scenario_id: record.scenario_id.clone(),
        tenant_id: record.tenant_id.clone(),
        owner_sub: record.owner_sub.clone(),
        track: record.track,
        template: record.template.clone(),
        request_id: record.request_id.clone(),
        warm_host: warm.map(|w| w.host_id),
    };
    // Same message id on every retry: the bus drops duplicates within its window, and the
    // orchestrator's state machine ignores a scenario that already left `pending`.
    deps.bus
        .publish_msg(&msg)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, scenario_id = %record.scenario_id, "publishing spawn.request failed");
            ApiError::new(
                Kind::ServiceUnavailable,
                "bus_unavailable",
                "the spawn could not be handed to the orchestrator; retry with the same request_id",
            )
            .with_retry_after(1)
        })?;
    deps.audit.record(
        audit_event(caller, record.scenario_id.as_str(), Outcome::Success, spawn)
            .with_detail("request_id", spawn.request_id.as_str())
            .with_detail("amount_cents", charge.amount_cents)
            .with_detail("resumed", !inserted.created),
    );
    let record = match wait {
        Some(within) => warm::wait_started(state, tenant.id, &record.scenario_id, within)
            .await
            .unwrap_or(record),
        None => record,
    };
    Ok(serde_json::to_vec(&SpawnResponse::from_record(&record)).expect("response serializes"))
}

/// A gate that could not decide: 502 when the policy engine is unreachable (a retry may pass),
/// else a 500 whose cause stays in the log.
fn gate_error(gate: &str, e: GateError) -> ApiError {
    match e {
        GateError::Unavailable(why) => ApiError::new(
            Kind::BadGateway,
            "policy_unavailable",
            format!("the {gate} could not be evaluated: policy engine unavailable ({why})"),
        ),
        GateError::Other(why) => ApiError::internal(format!("{gate} failed: {why}")),
    }
}

fn audit_event(
    caller: &Caller,
    resource: &str,
    outcome: Outcome,
    spawn: &ValidSpawn,
) -> AuditEvent {
    AuditEvent::new(
        Utc::now(),
        "spawn.request",
        &caller.sub,
        resource,
        "create",
        outcome,
    )
    .with_detail("tenant_id", caller.tenant_id.as_str())
    .with_detail("track", spawn.track.as_str())
    .with_detail("template", spawn.template_name())
}

fn json_response(status: u16, body: Vec<u8>, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, [(CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        resp.headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_the_outcomes_the_alerts_use() {
        let of = |code: u16| outcome_of(StatusCode::from_u16(code).unwrap());
        assert_eq!(of(201), "success");
        assert_eq!(of(200), "success");
        assert_eq!((of(401), of(403), of(429)), ("denied", "denied", "denied"));
        assert_eq!(
            (of(400), of(409), of(413), of(422)),
            ("invalid", "invalid", "invalid", "invalid")
        );
        assert_eq!((of(500), of(502), of(503)), ("error", "error", "error"));
    }
}
