//! Lab hosts on PostgreSQL: the claim of a pending scenario and the hosts' leases.

use chrono::Utc;
use forge_core::{ScenarioId, ScenarioStatus};
use sqlx::Row;
use sqlx::postgres::PgPool;

use super::at_ms;
use super::scenarios::{refusal, scenario_cols, scenario_from_row};
use crate::{LabHost, ScenarioRecord, StoreError};

/// `pending → creating` on `host_id`, compare-and-set in one statement: a concurrent claim
/// waits on the row lock and then finds it no longer pending.
pub(super) async fn claim(
    pool: &PgPool,
    id: &ScenarioId,
    host_id: &str,
) -> Result<ScenarioRecord, StoreError> {
    let row = sqlx::query(concat!(
        "UPDATE scenarios SET status = 'creating', host_id = $1, updated_at = $2 \
         WHERE scenario_id = $3 AND status = 'pending' RETURNING ",
        scenario_cols!()
    ))
    .bind(host_id)
    .bind(at_ms(Utc::now()))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => scenario_from_row(&row),
        None => Err(refusal(pool, id, ScenarioStatus::Creating).await?),
    }
}

pub(super) async fn renew(pool: &PgPool, host: &LabHost) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO lab_hosts (host_id, url, runner_url, capacity, started_at, heartbeat_at, \
         lease_expires_at) VALUES ($1, $2, $7, $3, $4, $5, $6) \
         ON CONFLICT (host_id) DO UPDATE SET url = excluded.url, \
         runner_url = excluded.runner_url, capacity = excluded.capacity, \
         started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
         lease_expires_at = excluded.lease_expires_at",
    )
    .bind(&host.host_id)
    .bind(&host.url)
    .bind(i32::try_from(host.capacity).unwrap_or(i32::MAX))
    .bind(at_ms(host.started_at))
    .bind(at_ms(host.heartbeat_at))
    .bind(at_ms(host.lease_expires_at))
    .bind(&host.runner_url)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn list(pool: &PgPool) -> Result<Vec<LabHost>, StoreError> {
    let rows = sqlx::query(
        "SELECT host_id, url, runner_url, capacity, started_at, heartbeat_at, lease_expires_at \
         FROM lab_hosts ORDER BY host_id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let capacity: i32 = r.try_get("capacity")?;
            Ok(LabHost {
                host_id: r.try_get("host_id")?,
                url: r.try_get("url")?,
                runner_url: r.try_get("runner_url")?,
                capacity: u32::try_from(capacity).unwrap_or(0),
                started_at: r.try_get("started_at")?,
                heartbeat_at: r.try_get("heartbeat_at")?,
                lease_expires_at: r.try_get("lease_expires_at")?,
            })
        })
        .collect()
}
