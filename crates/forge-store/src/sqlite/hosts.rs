//! Lab hosts on SQLite: the claim of a pending scenario and the hosts' leases.

use chrono::Utc;
use forge_core::{ScenarioId, ScenarioStatus};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use super::scenarios::{refusal, scenario_cols, scenario_from_row};
use super::{from_ms, ms};
use crate::{LabHost, ScenarioRecord, StoreError};

/// `pending → creating` on `host_id`, compare-and-set in one statement.
pub(super) async fn claim(
    conn: &mut SqliteConnection,
    id: ScenarioId,
    host_id: String,
) -> Result<ScenarioRecord, StoreError> {
    let row = sqlx::query(concat!(
        "UPDATE scenarios SET status = 'creating', host_id = ?, updated_at = ? \
         WHERE scenario_id = ? AND status = 'pending' RETURNING ",
        scenario_cols!()
    ))
    .bind(&host_id)
    .bind(ms(Utc::now()))
    .bind(id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => scenario_from_row(&row),
        None => Err(refusal(conn, &id, ScenarioStatus::Creating).await?),
    }
}

pub(super) async fn renew(conn: &mut SqliteConnection, host: LabHost) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO lab_hosts (host_id, url, runner_url, capacity, started_at, heartbeat_at, \
         lease_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (host_id) DO UPDATE SET url = excluded.url, \
         runner_url = excluded.runner_url, capacity = excluded.capacity, \
         started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
         lease_expires_at = excluded.lease_expires_at",
    )
    .bind(&host.host_id)
    .bind(&host.url)
    .bind(&host.runner_url)
    .bind(i64::from(host.capacity))
    .bind(ms(host.started_at))
    .bind(ms(host.heartbeat_at))
    .bind(ms(host.lease_expires_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<LabHost>, StoreError> {
    let rows = sqlx::query(
        "SELECT host_id, url, runner_url, capacity, started_at, heartbeat_at, lease_expires_at \
         FROM lab_hosts ORDER BY host_id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let capacity: i64 = r.try_get("capacity")?;
            Ok(LabHost {
                host_id: r.try_get("host_id")?,
                url: r.try_get("url")?,
                runner_url: r.try_get("runner_url")?,
                capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
                started_at: from_ms(r.try_get("started_at")?)?,
                heartbeat_at: from_ms(r.try_get("heartbeat_at")?)?,
                lease_expires_at: from_ms(r.try_get("lease_expires_at")?)?,
            })
        })
        .collect()
}
