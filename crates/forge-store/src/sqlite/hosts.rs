//! Lab hosts on SQLite: the claim of a pending scenario and the hosts' leases.

use chrono::Utc;
use forge_core::{ScenarioId, ScenarioStatus};
use rusqlite::Connection;

use super::read::{all, exec, one};
use super::scenarios::{refusal, scenario_cols, scenario_from_row};
use super::{from_ms, ms};
use crate::{LabHost, ScenarioRecord, StoreError};

/// `pending → creating` on `host_id`, compare-and-set in one statement.
pub(super) fn claim(
    conn: &Connection,
    id: &ScenarioId,
    host_id: &str,
) -> Result<ScenarioRecord, StoreError> {
    let row = one(
        conn,
        concat!(
            "UPDATE scenarios SET status = 'creating', host_id = ?, updated_at = ? \
             WHERE scenario_id = ? AND status = 'pending' RETURNING ",
            scenario_cols!()
        ),
        (host_id, ms(Utc::now()), id.as_str()),
        scenario_from_row,
    )?;
    match row {
        Some(rec) => Ok(rec),
        None => Err(refusal(conn, id, ScenarioStatus::Creating)?),
    }
}

pub(super) fn renew(conn: &Connection, host: &LabHost) -> Result<(), StoreError> {
    exec(
        conn,
        "INSERT INTO lab_hosts (host_id, url, runner_url, capacity, started_at, heartbeat_at, \
         lease_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (host_id) DO UPDATE SET url = excluded.url, \
         runner_url = excluded.runner_url, capacity = excluded.capacity, \
         started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
         lease_expires_at = excluded.lease_expires_at",
        (
            &host.host_id,
            &host.url,
            &host.runner_url,
            i64::from(host.capacity),
            ms(host.started_at),
            ms(host.heartbeat_at),
            ms(host.lease_expires_at),
        ),
    )?;
    Ok(())
}

pub(super) fn list(conn: &Connection) -> Result<Vec<LabHost>, StoreError> {
    all(
        conn,
        "SELECT host_id, url, runner_url, capacity, started_at, heartbeat_at, lease_expires_at \
         FROM lab_hosts ORDER BY host_id",
        [],
        |r| {
            let capacity: i64 = r.get("capacity")?;
            Ok(LabHost {
                host_id: r.get("host_id")?,
                url: r.get("url")?,
                runner_url: r.get("runner_url")?,
                capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
                started_at: from_ms(r.get("started_at")?)?,
                heartbeat_at: from_ms(r.get("heartbeat_at")?)?,
                lease_expires_at: from_ms(r.get("lease_expires_at")?)?,
            })
        },
    )
}
