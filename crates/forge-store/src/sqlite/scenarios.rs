//! Scenario rows: mapping and the write transactions (run on the writer connection).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, ScenarioStatus, Track};
use rusqlite::{Connection, Row};

use super::read::{all, exec, one, scalar};
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

pub(super) fn scenario_from_row(r: &Row<'_>) -> Result<ScenarioRecord, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(what);
    let id: String = r.get("scenario_id")?;
    let track: String = r.get("track")?;
    let status: String = r.get("status")?;
    let containers: String = r.get("containers")?;
    let last_check: Option<String> = r.get("last_check")?;
    let opt = |v: Option<i64>| v.map(from_ms).transpose();
    Ok(ScenarioRecord {
        scenario_id: id.parse().map_err(|e| corrupt(format!("{e}")))?,
        tenant_id: r.get("tenant_id")?,
        owner_sub: r.get("owner_sub")?,
        track: Track::from_str(&track).map_err(|e| corrupt(e.to_string()))?,
        template: r.get("template")?,
        request_id: r.get("request_id")?,
        status: ScenarioStatus::from_str(&status).map_err(corrupt)?,
        error: r.get("error")?,
        network_id: r.get("network_id")?,
        containers: serde_json::from_str(&containers)
            .map_err(|e| corrupt(format!("containers of {id}: {e}")))?,
        access_url: r.get("access_url")?,
        created_at: from_ms(r.get("created_at")?)?,
        updated_at: from_ms(r.get("updated_at")?)?,
        started_at: opt(r.get("started_at")?)?,
        ended_at: opt(r.get("ended_at")?)?,
        expires_at: from_ms(r.get("expires_at")?)?,
        host_id: r.get("host_id")?,
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

/// The scenario `id`, on a read connection or the writer connection alike.
pub(super) fn fetch(
    conn: &Connection,
    id: &ScenarioId,
) -> Result<Option<ScenarioRecord>, StoreError> {
    one(
        conn,
        concat!(
            "SELECT ",
            scenario_cols!(),
            " FROM scenarios WHERE scenario_id = ?"
        ),
        [id.as_str()],
        scenario_from_row,
    )
}

/// Inserts a pending scenario with its billing rows, counting it as active unless that would
/// pass `max_active`; a tenant's existing scenario for the request_id is returned instead.
///
/// Runs as a [`super::writer::Writer::run`] job: its savepoint is the transaction, so an error
/// (quota, constraint) rolls back whatever it wrote, and no `BEGIN`/`COMMIT` of its own is spent.
pub(super) fn insert(
    conn: &Connection,
    new: &NewScenario,
    billing: &OwnedBilling,
    max_active: Option<u64>,
) -> Result<Inserted, StoreError> {
    let max = max_active.map_or(i64::MAX, |m| i64::try_from(m).unwrap_or(i64::MAX));
    let inserted = exec(
        conn,
        "INSERT INTO scenarios (scenario_id, tenant_id, owner_sub, track, template, \
         request_id, status, access_url, created_at, updated_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?) \
         ON CONFLICT (tenant_id, request_id) DO NOTHING",
        (
            new.scenario_id.as_str(),
            &new.tenant_id,
            &new.owner_sub,
            new.track.as_str(),
            &new.template,
            &new.request_id,
            &new.access_url,
            ms(new.created_at),
            ms(new.created_at),
            ms(new.expires_at),
        ),
    )?;
    if inserted == 0 {
        // The tenant's request_id already has its scenario (a retry after a crash or an
        // outage): return it, unless it was for something else.
        let existing = one(
            conn,
            concat!(
                "SELECT ",
                scenario_cols!(),
                " FROM scenarios WHERE tenant_id = ? AND request_id = ?"
            ),
            (&new.tenant_id, &new.request_id),
            scenario_from_row,
        )?
        .ok_or_else(|| {
            StoreError::Backend(
                "no rows returned by a query that expected to return at least one row".into(),
            )
        })?;
        return Inserted::existing(existing, new);
    }
    // Count it as active unless that passes the quota: one guarded upsert, atomic with the
    // insert above. (A quota of 0 refuses even the tenant's first scenario.)
    let counted = if max <= 0 {
        0
    } else {
        exec(
            conn,
            "INSERT INTO tenant_usage (tenant_id, active) VALUES (?, 1) \
             ON CONFLICT (tenant_id) DO UPDATE SET active = active + 1 WHERE active < ?",
            (&new.tenant_id, max),
        )?
    };
    if counted == 0 {
        let active = scalar(
            conn,
            "SELECT active FROM tenant_usage WHERE tenant_id = ?",
            [&new.tenant_id],
        )?;
        // The error rolls the insert above back with the job's savepoint.
        return Err(StoreError::QuotaExceeded {
            tenant_id: new.tenant_id.clone(),
            active: u64::try_from(active.unwrap_or(0)).unwrap_or(0),
            max: u64::try_from(max).unwrap_or(0),
        });
    }
    match billing {
        OwnedBilling::None => {}
        OwnedBilling::Ledger(c) => keys::insert_charge(conn, c)?,
        OwnedBilling::LedgerAndOutbox(c) => {
            keys::insert_charge(conn, c)?;
            keys::insert_outbox(conn, c, BILLING_TOPIC)?;
        }
    }
    Ok(Inserted {
        record: record_of(new),
        created: true,
    })
}

/// Compare-and-set of the status in one statement; the `scenarios_activity_end` trigger ends
/// the scenario's activity on a final status, atomically with it.
pub(super) fn transition(
    conn: &Connection,
    id: &ScenarioId,
    allowed: &[ScenarioStatus],
    to: ScenarioStatus,
    error: Option<&str>,
) -> Result<ScenarioRecord, StoreError> {
    let now = ms(Utc::now());
    let row = one(
        conn,
        concat!(
            "UPDATE scenarios SET status = ?, error = COALESCE(?, error), updated_at = ?, \
             started_at = CASE WHEN ? THEN ? ELSE started_at END, \
             ended_at = CASE WHEN ? THEN ? ELSE ended_at END \
             WHERE scenario_id = ? AND status IN (SELECT value FROM json_each(?)) RETURNING ",
            scenario_cols!()
        ),
        (
            to.as_str(),
            error,
            now,
            to == ScenarioStatus::Running,
            now,
            to.is_terminal(),
            now,
            id.as_str(),
            statuses_json(allowed),
        ),
        scenario_from_row,
    )?;
    match row {
        Some(rec) => Ok(rec),
        None => Err(refusal(conn, id, to)?),
    }
}

/// Why a compare-and-set moving `id` to `to` changed nothing: gone, or in another status.
pub(super) fn refusal(
    conn: &Connection,
    id: &ScenarioId,
    to: ScenarioStatus,
) -> Result<StoreError, StoreError> {
    Ok(match fetch(conn, id)? {
        None => StoreError::NotFound(id.to_string()),
        Some(cur) => StoreError::Conflict {
            id: id.to_string(),
            current: cur.status,
            to,
        },
    })
}

/// Adds `by_ms` to an active scenario's expiry, capped at `cap_ms`, in one statement.
pub(super) fn extend(
    conn: &Connection,
    id: &ScenarioId,
    by_ms: i64,
    cap_ms: i64,
) -> Result<ScenarioRecord, StoreError> {
    let row = one(
        conn,
        concat!(
            "UPDATE scenarios SET expires_at = MIN(expires_at + ?, ?), updated_at = ? \
             WHERE scenario_id = ? AND status IN ('pending', 'creating', 'running') \
             AND expires_at < ? RETURNING ",
            scenario_cols!()
        ),
        (by_ms, cap_ms, ms(Utc::now()), id.as_str(), cap_ms),
        scenario_from_row,
    )?;
    match row {
        Some(rec) => Ok(rec),
        None => Err(crate::model::not_extendable(id, fetch(conn, id)?)),
    }
}

/// Scenarios in any of `statuses` (a JSON array), oldest first.
pub(super) fn list_by_status(
    conn: &Connection,
    statuses: &str,
) -> Result<Vec<ScenarioRecord>, StoreError> {
    all(
        conn,
        concat!(
            "SELECT ",
            scenario_cols!(),
            " FROM scenarios WHERE status IN (SELECT value FROM json_each(?)) \
             ORDER BY created_at, rowid"
        ),
        [statuses],
        scenario_from_row,
    )
}

/// A tenant's scenarios in any of `statuses` (a JSON array), newest first, at most `limit`.
pub(super) fn list_for_tenant(
    conn: &Connection,
    tenant_id: &str,
    statuses: &str,
    limit: u32,
) -> Result<Vec<ScenarioRecord>, StoreError> {
    all(
        conn,
        concat!(
            "SELECT ",
            scenario_cols!(),
            " FROM scenarios WHERE tenant_id = ? \
             AND status IN (SELECT value FROM json_each(?)) \
             ORDER BY created_at DESC, rowid DESC LIMIT ?"
        ),
        (tenant_id, statuses, i64::from(limit)),
        scenario_from_row,
    )
}

/// The tenant's active scenarios: the counter `insert` and the `scenarios_activity_end`
/// trigger keep.
pub(super) fn count_active(conn: &Connection, tenant_id: &str) -> Result<u64, StoreError> {
    let n = scalar(
        conn,
        "SELECT active FROM tenant_usage WHERE tenant_id = ?",
        [tenant_id],
    )?;
    Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
}
