//! Scenario rows on PostgreSQL: mapping, the insert transaction and the conditional transition.

use std::str::FromStr;

use chrono::Utc;
use forge_core::{ScenarioId, ScenarioStatus, Track};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::types::Json;
use sqlx::{Executor, Postgres, Row};

use super::{at_ms, keys};
use crate::model::BILLING_TOPIC;
use crate::{Billing, Inserted, NewScenario, ScenarioRecord, StoreError};

macro_rules! scenario_cols {
    () => {
        "scenario_id, tenant_id, owner_sub, track, template, request_id, status, error, \
         network_id, containers, access_url, created_at, updated_at, started_at, ended_at, \
         expires_at, host_id, last_check"
    };
}
pub(super) use scenario_cols;

/// The names of `statuses`, bound as one `text[]` for `status = ANY($n)`.
pub(super) fn status_names(statuses: &[ScenarioStatus]) -> Vec<&'static str> {
    statuses.iter().map(|s| s.as_str()).collect()
}

pub(super) fn scenario_from_row(r: &PgRow) -> Result<ScenarioRecord, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(what);
    let id: String = r.try_get("scenario_id")?;
    let track: String = r.try_get("track")?;
    let status: String = r.try_get("status")?;
    let Json(containers): Json<Vec<String>> = r
        .try_get("containers")
        .map_err(|e| corrupt(format!("containers of {id}: {e}")))?;
    let last_check: Option<Json<crate::CheckSummary>> = r
        .try_get("last_check")
        .map_err(|e| corrupt(format!("last_check of {id}: {e}")))?;
    Ok(ScenarioRecord {
        scenario_id: id.parse().map_err(|e| corrupt(format!("{e}")))?,
        tenant_id: r.try_get("tenant_id")?,
        owner_sub: r.try_get("owner_sub")?,
        track: Track::from_str(&track).map_err(|e| corrupt(e.to_string()))?,
        template: r.try_get("template")?,
        request_id: r.try_get("request_id")?,
        status: ScenarioStatus::from_str(&status).map_err(corrupt)?,
        error: r.try_get("error")?,
        network_id: r.try_get("network_id")?,
        containers,
        access_url: r.try_get("access_url")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        expires_at: r.try_get("expires_at")?,
        host_id: r.try_get("host_id")?,
        last_check: last_check.map(|Json(c)| c),
    })
}

/// What a read returns for a freshly inserted scenario: times at the stored precision.
fn record_of(new: &NewScenario) -> ScenarioRecord {
    ScenarioRecord {
        scenario_id: new.scenario_id.clone(),
        tenant_id: new.tenant_id.clone(),
        owner_sub: new.owner_sub.clone(),
        track: new.track,
        template: new.template.clone(),
        request_id: new.request_id.clone(),
        status: ScenarioStatus::Pending,
        error: None,
        network_id: None,
        containers: Vec::new(),
        access_url: new.access_url.clone(),
        created_at: at_ms(new.created_at),
        updated_at: at_ms(new.created_at),
        started_at: None,
        ended_at: None,
        expires_at: at_ms(new.expires_at),
        host_id: None,
        last_check: None,
    }
}

/// The scenario `id`, of `tenant_id` when given: the tenant scope is part of the query, so
/// another tenant's row never leaves the database.
pub(super) async fn fetch<'e>(
    executor: impl Executor<'e, Database = Postgres>,
    tenant_id: Option<&str>,
    id: &ScenarioId,
) -> Result<Option<ScenarioRecord>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        scenario_cols!(),
        " FROM scenarios WHERE scenario_id = $1 AND ($2::text IS NULL OR tenant_id = $2)"
    ))
    .bind(id.as_str())
    .bind(tenant_id)
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(scenario_from_row).transpose()
}

/// Inserts a pending scenario with its billing rows in one transaction, counting it as active
/// unless that would pass `max_active`; a tenant's existing scenario for the request_id is
/// returned instead.
///
/// Read committed is enough: a concurrent insert of the same `(tenant_id, request_id)` waits on
/// the unique index until the first transaction ends, then either finds its committed row or
/// (the first rolled back) inserts; concurrent spawns of one tenant take turns on its
/// `tenant_usage` row, whose guard is evaluated against the latest committed count.
pub(super) async fn insert(
    pool: &PgPool,
    new: &NewScenario,
    billing: Billing<'_>,
    max_active: Option<u64>,
) -> Result<Inserted, StoreError> {
    let max = max_active.map_or(i64::MAX, |m| i64::try_from(m).unwrap_or(i64::MAX));
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO scenarios (scenario_id, tenant_id, owner_sub, track, template, \
         request_id, status, access_url, created_at, updated_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $8, $9) \
         ON CONFLICT (tenant_id, request_id) DO NOTHING",
    )
    .bind(new.scenario_id.as_str())
    .bind(&new.tenant_id)
    .bind(&new.owner_sub)
    .bind(new.track.as_str())
    .bind(&new.template)
    .bind(&new.request_id)
    .bind(&new.access_url)
    .bind(at_ms(new.created_at))
    .bind(at_ms(new.expires_at))
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        // The tenant's request_id already has its scenario (a retry after a crash or an
        // outage, or a concurrent twin that committed first): return it, unless it was for
        // something else. This statement's snapshot is newer than that commit.
        let row = sqlx::query(concat!(
            "SELECT ",
            scenario_cols!(),
            " FROM scenarios WHERE tenant_id = $1 AND request_id = $2"
        ))
        .bind(&new.tenant_id)
        .bind(&new.request_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.rollback().await?;
        return Inserted::existing(scenario_from_row(&row)?, new);
    }
    // Count it as active unless that passes the quota: one guarded upsert, atomic with the
    // insert above. (A quota of 0 refuses even the tenant's first scenario.)
    let counted = if max <= 0 {
        0
    } else {
        sqlx::query(
            "INSERT INTO tenant_usage AS u (tenant_id, active) VALUES ($1, 1) \
             ON CONFLICT (tenant_id) DO UPDATE SET active = u.active + 1 WHERE u.active < $2",
        )
        .bind(&new.tenant_id)
        .bind(max)
        .execute(&mut *tx)
        .await?
        .rows_affected()
    };
    if counted == 0 {
        let active: Option<i64> =
            sqlx::query_scalar("SELECT active FROM tenant_usage WHERE tenant_id = $1")
                .bind(&new.tenant_id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.rollback().await?;
        return Err(StoreError::QuotaExceeded {
            tenant_id: new.tenant_id.clone(),
            active: u64::try_from(active.unwrap_or(0)).unwrap_or(0),
            max: u64::try_from(max).unwrap_or(0),
        });
    }
    match billing {
        Billing::None => {}
        Billing::Ledger(c) => keys::insert_charge(&mut tx, c).await?,
        Billing::LedgerAndOutbox(c) => {
            keys::insert_charge(&mut tx, c).await?;
            keys::insert_outbox(&mut tx, c, BILLING_TOPIC).await?;
        }
    }
    tx.commit().await?;
    Ok(Inserted {
        record: record_of(new),
        created: true,
    })
}

/// Compare-and-set of the status in one statement. A concurrent transition of the same row
/// makes this one wait and then re-check `status = ANY($7)` against the row it left, so of any
/// number of racers exactly one moves it. The `scenarios_activity_end` trigger ends the
/// scenario's activity on a final status, in the same transaction.
pub(super) async fn transition(
    pool: &PgPool,
    id: &ScenarioId,
    allowed: &[ScenarioStatus],
    to: ScenarioStatus,
    error: Option<&str>,
) -> Result<ScenarioRecord, StoreError> {
    let now = at_ms(Utc::now());
    let row = sqlx::query(concat!(
        "UPDATE scenarios SET status = $1, error = COALESCE($2, error), updated_at = $3, \
         started_at = CASE WHEN $4 THEN $3 ELSE started_at END, \
         ended_at = CASE WHEN $5 THEN $3 ELSE ended_at END \
         WHERE scenario_id = $6 AND status = ANY($7) RETURNING ",
        scenario_cols!()
    ))
    .bind(to.as_str())
    .bind(error)
    .bind(now)
    .bind(to == ScenarioStatus::Running)
    .bind(to.is_terminal())
    .bind(id.as_str())
    .bind(status_names(allowed))
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => scenario_from_row(&row),
        None => Err(refusal(pool, id, to).await?),
    }
}

/// Why a compare-and-set moving `id` to `to` changed nothing: gone, or in another status.
pub(super) async fn refusal(
    pool: &PgPool,
    id: &ScenarioId,
    to: ScenarioStatus,
) -> Result<StoreError, StoreError> {
    Ok(match fetch(pool, None, id).await? {
        None => StoreError::NotFound(id.to_string()),
        Some(cur) => StoreError::Conflict {
            id: id.to_string(),
            current: cur.status,
            to,
        },
    })
}

/// Adds `by_ms` milliseconds to an active scenario's expiry, capped at `cap`, in one statement
/// (the row lock orders concurrent extensions, so they add up).
pub(super) async fn extend(
    pool: &PgPool,
    id: &ScenarioId,
    by_ms: i64,
    cap: chrono::DateTime<Utc>,
) -> Result<ScenarioRecord, StoreError> {
    let cap = super::at_ms(cap);
    let row = sqlx::query(concat!(
        "UPDATE scenarios SET expires_at = LEAST(expires_at + $1::bigint * interval '1 millisecond', $2), \
         updated_at = $3 \
         WHERE scenario_id = $4 AND status IN ('pending', 'creating', 'running') \
         AND expires_at < $2 RETURNING ",
        scenario_cols!()
    ))
    .bind(by_ms)
    .bind(cap)
    .bind(super::at_ms(Utc::now()))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => scenario_from_row(&row),
        None => Err(crate::model::not_extendable(
            id,
            fetch(pool, None, id).await?,
        )),
    }
}
