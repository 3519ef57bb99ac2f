//! Warm pools on SQLite: the pool's labs and the claims counted per template.

use chrono::Utc;
use forge_core::{ScenarioId, ScenarioStatus};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};

use super::scenarios::{refusal, scenario_cols, scenario_from_row};
use super::{from_ms, ms};
use crate::{PoolClaims, ScenarioRecord, StoreError, WarmLab};

/// The columns of a warm lab, in a macro so queries stay static strings (`concat!`).
macro_rules! warm_cols {
    () => {
        "scenario_id, template, template_digest, host_id, network_id, containers, ready_at"
    };
}

fn warm_from_row(r: &SqliteRow) -> Result<WarmLab, StoreError> {
    let id: String = r.try_get("scenario_id")?;
    let containers: String = r.try_get("containers")?;
    Ok(WarmLab {
        scenario_id: id
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("warm lab id `{id}`: {e}")))?,
        template: r.try_get("template")?,
        template_digest: r.try_get("template_digest")?,
        host_id: r.try_get("host_id")?,
        network_id: r.try_get("network_id")?,
        containers: serde_json::from_str(&containers)
            .map_err(|e| StoreError::Corrupt(format!("warm lab {id} containers: {e}")))?,
        ready_at: from_ms(r.try_get("ready_at")?)?,
    })
}

pub(super) async fn put(conn: &mut SqliteConnection, lab: WarmLab) -> Result<(), StoreError> {
    let containers = serde_json::to_string(&lab.containers).expect("strings serialize");
    sqlx::query(
        "INSERT INTO warm_labs (scenario_id, template, template_digest, host_id, network_id, \
         containers, ready_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(lab.scenario_id.as_str())
    .bind(&lab.template)
    .bind(&lab.template_digest)
    .bind(&lab.host_id)
    .bind(&lab.network_id)
    .bind(containers)
    .bind(ms(lab.ready_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The oldest matching lab leaves the pool and the claim is counted, in one transaction (the
/// one writer connection orders takers anyway; the transaction keeps lab and count together).
pub(super) async fn take(
    conn: &mut SqliteConnection,
    template: String,
    digest: String,
) -> Result<Option<WarmLab>, StoreError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let row = sqlx::query(concat!(
        "DELETE FROM warm_labs WHERE scenario_id = (SELECT scenario_id FROM warm_labs \
         WHERE template = ? AND template_digest = ? ORDER BY ready_at, scenario_id LIMIT 1) \
         RETURNING ",
        warm_cols!()
    ))
    .bind(&template)
    .bind(&digest)
    .fetch_optional(&mut *tx)
    .await?;
    let lab = row.as_ref().map(warm_from_row).transpose()?;
    let (hit, miss) = if lab.is_some() { (1, 0) } else { (0, 1) };
    sqlx::query(
        "INSERT INTO pool_claims (template, hits, misses) VALUES (?, ?, ?) \
         ON CONFLICT (template) DO UPDATE SET hits = hits + excluded.hits, \
         misses = misses + excluded.misses",
    )
    .bind(&template)
    .bind(hit)
    .bind(miss)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(lab)
}

pub(super) fn remove_query(id: &ScenarioId) -> super::writer::SqliteQuery {
    sqlx::query("DELETE FROM warm_labs WHERE scenario_id = ?").bind(id.as_str().to_owned())
}

pub(super) async fn list(
    pool: &SqlitePool,
    host_id: Option<&str>,
) -> Result<Vec<WarmLab>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        warm_cols!(),
        " FROM warm_labs WHERE ? IS NULL OR host_id = ? \
         ORDER BY ready_at, scenario_id"
    ))
    .bind(host_id)
    .bind(host_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(warm_from_row).collect()
}

pub(super) async fn claims(pool: &SqlitePool) -> Result<Vec<PoolClaims>, StoreError> {
    let rows = sqlx::query("SELECT template, hits, misses FROM pool_claims ORDER BY template")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let (hits, misses): (i64, i64) = (r.try_get("hits")?, r.try_get("misses")?);
            Ok(PoolClaims {
                template: r.try_get("template")?,
                hits: u64::try_from(hits).unwrap_or(0),
                misses: u64::try_from(misses).unwrap_or(0),
            })
        })
        .collect()
}

/// `pending → running` with the warm lab's host and runtime, one conditional statement.
pub(super) async fn start(
    conn: &mut SqliteConnection,
    lab: WarmLab,
) -> Result<ScenarioRecord, StoreError> {
    let now = ms(Utc::now());
    let containers = serde_json::to_string(&lab.containers).expect("strings serialize");
    let row = sqlx::query(concat!(
        "UPDATE scenarios SET status = 'running', host_id = ?, network_id = ?, containers = ?, \
         started_at = ?, updated_at = ? WHERE scenario_id = ? AND status = 'pending' RETURNING ",
        scenario_cols!()
    ))
    .bind(&lab.host_id)
    .bind(&lab.network_id)
    .bind(containers)
    .bind(now)
    .bind(now)
    .bind(lab.scenario_id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => scenario_from_row(&row),
        None => Err(refusal(conn, &lab.scenario_id, ScenarioStatus::Running).await?),
    }
}
