//! Scenario rows: mapping and the write transactions (run on the writer connection).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, ScenarioStatus, Track};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Executor, Row, Sqlite};

use super::{OwnedBilling, from_ms, keys, ms};
use crate::model::BILLING_TOPIC;
use crate::{Inserted, NewScenario, ScenarioRecord, StoreError};

macro_rules! scenario_cols {
    () => {
        "scenario_id, tenant_id, owner_sub, track, template, request_id, status, error, \
         network_id, containers, access_url, created_at, updated_at, started_at, ended_at, \
         expires_at, host_id, last_check"
    };
}
pub(crate) use scenario_cols;

pub(super) fn statuses_json(statuses: &[ScenarioStatus]) -> String {
    serde_json::to_string(&statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        .expect("strings serialize")
}

pub(super) fn scenario_from_row(r: &SqliteRow) -> Result<ScenarioRecord, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(what);
    let id: String = r.try_get("scenario_id")?;
    let track: String = r.try_get("track")?;
    let status: String = r.try_get("status")?;
    let containers: String = r.try_get("containers")?;
    let last_check: Option<String> = r.try_get("last_check")?;
    let opt = |v: Option<i64>| v.map(from_ms).transpose();
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
        containers: serde_json::from_str(&containers)
            .map_err(|e| corrupt(format!("containers of {id}: {e}")))?,
        access_url: r.try_get("access_url")?,
        created_at: from_ms(r.try_get("created_at")?)?,
        updated_at: from_ms(r.try_get("updated_at")?)?,
        started_at: opt(r.try_get("started_at")?)?,
        ended_at: opt(r.try_get("ended_at")?)?,
        expires_at: from_ms(r.try_get("expires_at")?)?,
        host_id: r.try_get("host_id")?,
        last_check: last_check
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| corrupt(format!("last_check of {id}: {e}")))?,
    })
}

/// What a read returns for a freshly inserted scenario: times at the stored (ms) precision.
fn record_of(new: &NewScenario) -> ScenarioRecord {
    let trunc = |t: DateTime<Utc>| DateTime::from_timestamp_millis(ms(t)).unwrap_or(t);
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
        created_at: trunc(new.created_at),
        updated_at: trunc(new.created_at),
        started_at: None,
        ended_at: None,
        expires_at: trunc(new.expires_at),
        host_id: None,
        last_check: None,
    }
}

/// The scenario `id`, through the reader pool or the writer connection alike.
pub(super) async fn fetch<'e>(
    executor: impl Executor<'e, Database = Sqlite>,
    id: &ScenarioId,
) -> Result<Option<ScenarioRecord>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        scenario_cols!(),
        " FROM scenarios WHERE scenario_id = ?"
    ))
    .bind(id.as_str())
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(scenario_from_row).transpose()
}

/// Inserts a pending scenario with its billing rows, counting it as active unless that would
/// pass `max_active`; a tenant's existing scenario for the request_id is returned instead.
///
/// Runs as a [`super::writer::Writer::run`] job: its savepoint is the transaction, so an error
/// (quota, constraint) rolls back whatever it wrote, and no `BEGIN`/`COMMIT` of its own is spent.
pub(super) async fn insert(
    conn: &mut SqliteConnection,
    new: NewScenario,
    billing: OwnedBilling,
    max_active: Option<u64>,
) -> Result<Inserted, StoreError> {
    let max = max_active.map_or(i64::MAX, |m| i64::try_from(m).unwrap_or(i64::MAX));
    let inserted = sqlx::query(
        "INSERT INTO scenarios (scenario_id, tenant_id, owner_sub, track, template, \
         request_id, status, access_url, created_at, updated_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?) \
         ON CONFLICT (tenant_id, request_id) DO NOTHING",
    )
    .bind(new.scenario_id.as_str())
    .bind(&new.tenant_id)
    .bind(&new.owner_sub)
    .bind(new.track.as_str())
    .bind(&new.template)
    .bind(&new.request_id)
    .bind(&new.access_url)
    .bind(ms(new.created_at))
    .bind(ms(new.created_at))
    .bind(ms(new.expires_at))
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        // The tenant's request_id already has its scenario (a retry after a crash or an
        // outage): return it, unless it was for something else.
        let row = sqlx::query(concat!(
            "SELECT ",
            scenario_cols!(),
            " FROM scenarios WHERE tenant_id = ? AND request_id = ?"
        ))
        .bind(&new.tenant_id)
        .bind(&new.request_id)
        .fetch_one(&mut *conn)
        .await?;
        return Inserted::existing(scenario_from_row(&row)?, &new);
    }
    // Count it as active unless that passes the quota: one guarded upsert, atomic with the
    // insert above. (A quota of 0 refuses even the tenant's first scenario.)
    let counted = if max <= 0 {
        0
    } else {
        sqlx::query(
            "INSERT INTO tenant_usage (tenant_id, active) VALUES (?, 1) \
             ON CONFLICT (tenant_id) DO UPDATE SET active = active + 1 WHERE active < ?",
        )
        .bind(&new.tenant_id)
        .bind(max)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    };
    if counted == 0 {
        let active: Option<i64> =
            sqlx::query_scalar("SELECT active FROM tenant_usage WHERE tenant_id = ?")
                .bind(&new.tenant_id)
                .fetch_optional(&mut *conn)
                .await?;
        // The error rolls the insert above back with the job's savepoint.
        return Err(StoreError::QuotaExceeded {
            tenant_id: new.tenant_id,
            active: u64::try_from(active.unwrap_or(0)).unwrap_or(0),
            max: u64::try_from(max).unwrap_or(0),
        });
    }
    match &billing {
        OwnedBilling::None => {}
        OwnedBilling::Ledger(c) => keys::insert_charge(conn, c).await?,
        OwnedBilling::LedgerAndOutbox(c) => {
            keys::insert_charge(conn, c).await?;
            keys::insert_outbox(conn, c, BILLING_TOPIC).await?;
        }
    }
    Ok(Inserted {
        record: record_of(&new),
        created: true,
    })
}

/// Compare-and-set of the status in one statement; the `scenarios_activity_end` trigger ends
/// the scenario's activity on a final status, atomically with it.
pub(super) async fn transition(
    conn: &mut SqliteConnection,
    id: ScenarioId,
    allowed: Vec<ScenarioStatus>,
    to: ScenarioStatus,
    error: Option<String>,
) -> Result<ScenarioRecord, StoreError> {
    let now = ms(Utc::now());
    let row = sqlx::query(concat!(
        "UPDATE scenarios SET status = ?, error = COALESCE(?, error), updated_at = ?, \
         started_at = CASE WHEN ? THEN ? ELSE started_at END, \
         ended_at = CASE WHEN ? THEN ? ELSE ended_at END \
         WHERE scenario_id = ? AND status IN (SELECT value FROM json_each(?)) RETURNING ",
        scenario_cols!()
    ))
    .bind(to.as_str())
    .bind(error)
    .bind(now)
    .bind(to == ScenarioStatus::Running)
    .bind(now)
    .bind(to.is_terminal())
    .bind(now)
    .bind(id.as_str())
    .bind(statuses_json(&allowed))
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => scenario_from_row(&row),
        None => Err(refusal(conn, &id, to).await?),
    }
}

/// Why a compare-and-set moving `id` to `to` changed nothing: gone, or in another status.
pub(super) async fn refusal(
    conn: &mut SqliteConnection,
    id: &ScenarioId,
    to: ScenarioStatus,
) -> Result<StoreError, StoreError> {
    Ok(match fetch(&mut *conn, id).await? {
        None => StoreError::NotFound(id.to_string()),
        Some(cur) => StoreError::Conflict {
            id: id.to_string(),
            current: cur.status,
            to,
        },
    })
}

/// Adds `by_ms` to an active scenario's expiry, capped at `cap_ms`, in one statement.
pub(super) async fn extend(
    conn: &mut SqliteConnection,
    id: ScenarioId,
    by_ms: i64,
    cap_ms: i64,
) -> Result<ScenarioRecord, StoreError> {
    let row = sqlx::query(concat!(
        "UPDATE scenarios SET expires_at = MIN(expires_at + ?, ?), updated_at = ? \
         WHERE scenario_id = ? AND status IN ('pending', 'creating', 'running') \
         AND expires_at < ? RETURNING ",
        scenario_cols!()
    ))
    .bind(by_ms)
    .bind(cap_ms)
    .bind(ms(Utc::now()))
    .bind(id.as_str())
    .bind(cap_ms)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => scenario_from_row(&row),
        None => Err(crate::model::not_extendable(
            &id,
            fetch(&mut *conn, &id).await?,
        )),
    }
}
