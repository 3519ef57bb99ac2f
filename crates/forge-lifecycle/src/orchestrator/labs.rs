//! The teacher's and the operator's routes on the orchestrator: a tenant's labs as a list
//! (`GET /v1/scenarios`), more time for one lab (`POST /v1/scenarios/{id}/extend`), and the lab
//! hosts with their capacity (`GET /v1/hosts`).
//!
//! The list is the tenant's only (the store query carries the tenant) and needs
//! `forge.instructor` or `forge.orchestrator`: it names learners, so the observer role, which
//! reads aggregates, does not get it. An extension needs the same roles ([`CanSupervise`]: a
//! learner may not extend their own lab), moves the expiry atomically in the store (concurrent
//! extensions add up, never past [`MAX_LAB_LIFETIME`] after the spawn) and is audited; the
//! owning host's timer reads the new expiry when the old one comes. The hosts are the
//! platform's, not a tenant's: they are shown to operators (`forge.orchestrator`,
//! `forge.observer`) as counts only, no scenario of any tenant named.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Query, State};
use chrono::{DateTime, SecondsFormat, Utc};
use forge_auth::{Caller, roles};
use forge_core::ScenarioStatus;
use forge_core::audit::{AuditEvent, Outcome};
use forge_http::{ApiError, ApiJson, ErrorEnvelope, Kind};
use forge_store::{CheckSummary, ScenarioRecord, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::Orchestrator;
use super::api::ScenarioView;
use crate::authz::{Authorized, CanSupervise, require_role};

/// The longest a lab may run, counted from its spawn, however often it is extended.
pub const MAX_LAB_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The most minutes one extension adds.
pub const MAX_EXTENSION_MINUTES: u32 = 240;
/// The most labs one list answers with.
pub const MAX_LIST: u32 = 500;

/// One lab in the tenant's list: the scenario as `GET /v1/scenarios/{id}` shows it, plus who
/// works in it, how long it has left and how far its last check got.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LabRow {
    #[serde(flatten)]
    pub scenario: ScenarioView,
    /// The learner: the `sub` of whoever spawned it.
    pub owner_sub: String,
    /// Seconds until it expires (0 once expired or ended).
    pub seconds_left: i64,
    /// The lab host that runs it, once claimed.
    pub host_id: Option<String>,
    /// The last check of the lab, when there was one.
    pub last_check: Option<CheckView>,
}

/// The last check of a lab.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckView {
    pub checked_at: String,
    pub passed: u32,
    pub total: u32,
    pub score: f64,
    /// Criterion id → whether it passed.
    pub criteria: BTreeMap<String, bool>,
}

impl CheckView {
    pub fn of(c: &CheckSummary) -> Self {
        Self {
            checked_at: c.checked_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            passed: c.passed,
            total: c.total,
            score: c.score,
            criteria: c.criteria.clone(),
        }
    }
}

/// `GET /v1/scenarios`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LabList {
    pub scenarios: Vec<LabRow>,
}

/// Query of `GET /v1/scenarios`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Comma-separated statuses, or `active` (pending, creating, running; the default) or
    /// `ended` (completed, failed, timeout).
    #[param(example = "running")]
    pub status: Option<String>,
    /// At most this many labs, newest first (1-500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// Body of `POST /v1/scenarios/{id}/extend`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// Minutes to add, 1-240.
    #[schema(minimum = 1, maximum = 240)]
    pub minutes: u32,
}

/// One lab host as operators see it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostView {
    pub host_id: String,
    /// Where its worker answers.
    pub url: String,
    /// Most labs it runs at once.
    pub capacity: u32,
    /// Labs it runs now (creating or running), of every tenant.
    pub active: u32,
    /// Whether its lease is current.
    pub live: bool,
    pub started_at: String,
    pub heartbeat_at: String,
    pub lease_expires_at: String,
}

/// `GET /v1/hosts`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostList {
    pub hosts: Vec<HostView>,
    /// Capacity of the live hosts together.
    pub capacity: u32,
    /// Labs running or being built on any host.
    pub active: u32,
    /// Spawns waiting for a free slot.
    pub pending: u32,
}

#[derive(OpenApi)]
#[openapi(
    paths(list_labs, extend, hosts),
    components(schemas(LabList, LabRow, CheckView, ExtendBody, HostList, HostView))
)]
pub(super) struct LabsDoc;

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl LabRow {
    pub fn of(r: &ScenarioRecord, now: DateTime<Utc>) -> Self {
        let left = if r.status.is_terminal() {
            0
        } else {
            (r.expires_at - now).num_seconds().max(0)
        };
        Self {
            scenario: ScenarioView::from_record(r),
            owner_sub: r.owner_sub.clone(),
            seconds_left: left,
            host_id: r.host_id.clone(),
            last_check: r.last_check.as_ref().map(CheckView::of),
        }
    }
}

/// The statuses a `status` query names.
fn statuses(q: Option<&str>) -> Result<Vec<ScenarioStatus>, ApiError> {
    use ScenarioStatus::*;
    let mut out = Vec::new();
    for part in q.unwrap_or("active").split(',').map(str::trim) {
        match part {
            "active" => out.extend([Pending, Creating, Running]),
            "ended" => out.extend([Completed, Failed, Timeout]),
            other => out.push(other.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_status",
                    format!(
                        "unknown status `{other}`; use pending, creating, running, completed, \
                         failed, timeout, active or ended (comma-separated)"
                    ),
                )
            })?),
        }
    }
    out.sort_by_key(|s| s.as_str());
    out.dedup();
    Ok(out)
}

#[utoipa::path(get, path = "/v1/scenarios", params(ListQuery),
    responses(
        (status = 200, description = "The caller's tenant's labs, newest first", body = LabList),
        (status = 400, description = "An unknown status (`invalid_status`) or a limit outside 1-500 (`invalid_limit`)", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorEnvelope),
        (status = 403, description = "Role forge.instructor or forge.orchestrator missing (`missing_role`)", body = ErrorEnvelope),
        (status = 429, description = "Tenant rate limit; see Retry-After", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub(super) async fn list_labs(
    State(o): State<Orchestrator>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<LabList>, ApiError> {
    require_role(&caller, &[roles::INSTRUCTOR, roles::ORCHESTRATOR])?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1-{MAX_LIST}"),
        ));
    }
    let wanted = statuses(q.status.as_deref())?;
    let recs = o
        .deps()
        .store
        .list_for_tenant(&caller.tenant_id, &wanted, limit)
        .await
        .map_err(ApiError::internal)?;
    let now = Utc::now();
    Ok(axum::Json(LabList {
        scenarios: recs.iter().map(|r| LabRow::of(r, now)).collect(),
    }))
}

#[utoipa::path(post, path = "/v1/scenarios/{id}/extend", request_body = ExtendBody,
    params(("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "Extended: the lab as it is now, with its new expiry", body = LabRow),
        (status = 400, description = "Minutes outside 1-240 (`invalid_minutes`) or a malformed body", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorEnvelope),
        (status = 403, description = "Role forge.instructor or forge.orchestrator missing (`missing_role`)", body = ErrorEnvelope),
        (status = 404, description = "No such scenario in the caller's tenant (`scenario_not_found`)", body = ErrorEnvelope),
        (status = 409, description = "The lab has ended, or already runs until 24 h after its spawn (`not_extendable`)", body = ErrorEnvelope),
        (status = 429, description = "Tenant rate limit; see Retry-After", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub(super) async fn extend(
    State(o): State<Orchestrator>,
    Authorized {
        caller,
        scenario: rec,
        ..
    }: Authorized<CanSupervise>,
    ApiJson(body): ApiJson<ExtendBody>,
) -> Result<axum::Json<LabRow>, ApiError> {
    if !(1..=MAX_EXTENSION_MINUTES).contains(&body.minutes) {
        return Err(ApiError::bad_request(
            "invalid_minutes",
            format!("minutes must be 1-{MAX_EXTENSION_MINUTES}"),
        ));
    }
    let d = o.deps();
    let by = Duration::from_secs(u64::from(body.minutes) * 60);
    let cap = rec.created_at
        + chrono::Duration::from_std(MAX_LAB_LIFETIME).unwrap_or(chrono::Duration::MAX);
    let extended = match d.store.extend(&rec.scenario_id, by, cap).await {
        Ok(r) => r,
        Err(StoreError::NotExtendable { why, .. }) => {
            return Err(ApiError::new(
                Kind::Conflict,
                "not_extendable",
                format!("scenario {} cannot be extended: {why}", rec.scenario_id),
            ));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    // This host's timer fires at the new expiry at once; another host's finds it when the old
    // expiry comes (the timer reads the store before it ends a lab).
    if o.owns(&extended) {
        o.arm_timer(&extended);
    }
    d.audit.record(
        AuditEvent::new(
            Utc::now(),
            "scenario.extend",
            caller.sub.clone(),
            rec.scenario_id.as_str(),
            "update",
            Outcome::Success,
        )
        .with_detail("tenant_id", rec.tenant_id.clone())
        .with_detail("owner", rec.owner_sub.clone())
        .with_detail("minutes", body.minutes)
        .with_detail("expires_at", ts(extended.expires_at)),
    );
    Ok(axum::Json(LabRow::of(&extended, Utc::now())))
}

#[utoipa::path(get, path = "/v1/hosts",
    responses(
        (status = 200, description = "Every registered lab host, its capacity and how many labs it runs", body = HostList),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorEnvelope),
        (status = 403, description = "Role forge.orchestrator or forge.observer missing (`missing_role`)", body = ErrorEnvelope),
        (status = 429, description = "Tenant rate limit; see Retry-After", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub(super) async fn hosts(
    State(o): State<Orchestrator>,
    caller: Caller,
) -> Result<axum::Json<HostList>, ApiError> {
    require_role(&caller, &[roles::ORCHESTRATOR, roles::OBSERVER])?;
    let store = &o.deps().store;
    let hosts = store.lab_hosts().await.map_err(ApiError::internal)?;
    use ScenarioStatus::*;
    let active = store
        .list_by_status(&[Pending, Creating, Running])
        .await
        .map_err(ApiError::internal)?;
    let mut per_host: BTreeMap<&str, u32> = BTreeMap::new();
    let mut pending = 0;
    for r in &active {
        match r.host_id.as_deref() {
            Some(h) if r.status != Pending => *per_host.entry(h).or_default() += 1,
            _ => pending += 1,
        }
    }
    let now = Utc::now();
    let views: Vec<HostView> = hosts
        .iter()
        .map(|h| HostView {
            host_id: h.host_id.clone(),
            url: h.url.clone(),
            capacity: h.capacity,
            active: per_host.get(h.host_id.as_str()).copied().unwrap_or(0),
            live: !h.expired(now),
            started_at: ts(h.started_at),
            heartbeat_at: ts(h.heartbeat_at),
            lease_expires_at: ts(h.lease_expires_at),
        })
        .collect();
    Ok(axum::Json(HostList {
        capacity: views.iter().filter(|h| h.live).map(|h| h.capacity).sum(),
        active: per_host.values().sum(),
        pending,
        hosts: views,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_queries_name_statuses_or_groups() {
        use ScenarioStatus::*;
        assert_eq!(
            statuses(None).unwrap(),
            statuses(Some("running,pending,creating")).unwrap()
        );
        assert_eq!(statuses(Some("ended")).unwrap().len(), 3);
        assert_eq!(statuses(Some("running")).unwrap(), [Running]);
        let e = statuses(Some("runnin")).unwrap_err();
        assert!(e.message().contains("unknown status `runnin`"), "{e}");
    }
}
