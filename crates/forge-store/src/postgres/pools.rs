//! Warm pools on PostgreSQL: the pool's labs and the claims counted per template.
//!
//! Concurrent takers of one pool are ordered by `FOR UPDATE SKIP LOCKED`: each locks a
//! different row (or finds none) instead of waiting for another taker's row and then finding it
//! gone.

use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, ScenarioStatus};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::types::Json;

use super::at_ms;
use super::scenarios::{refusal, scenario_cols, scenario_from_row};
use crate::{PoolClaims, ScenarioRecord, StoreError, WarmLab};

/// The columns of a warm lab, in a macro so queries stay static strings (`concat!`).
macro_rules! warm_cols {
    () => {
        "scenario_id, template, template_digest, host_id, network_id, containers, ready_at"
    };
}

fn warm_from_row(r: &PgRow) -> Result<WarmLab, StoreError> {
    let id: String = r.try_get("scenario_id")?;
    let Json(containers): Json<Vec<String>> = r.try_get("containers")?;
    let ready_at: DateTime<Utc> = r.try_get("ready_at")?;
    Ok(WarmLab {
        scenario_id: id
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("warm lab id `{id}`: {e}")))?,
        template: r.try_get("template")?,
        template_digest: r.try_get("template_digest")?,
        host_id: r.try_get("host_id")?,
        network_id: r.try_get("network_id")?,
        containers,
        ready_at,
    })
}

pub(super) async fn put(pool: &PgPool, lab: &WarmLab) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO warm_labs (scenario_id, template, template_digest, host_id, network_id, \
         containers, ready_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(lab.scenario_id.as_str())
    .bind(&lab.template)
    .bind(&lab.template_digest)
    .bind(&lab.host_id)
    .bind(&lab.network_id)
    .bind(Json(&lab.containers))
    .bind(at_ms(lab.ready_at))
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn take(
    pool: &PgPool,
    template: &str,
    digest: &str,
) -> Result<Option<WarmLab>, StoreError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(concat!(
        "DELETE FROM warm_labs WHERE scenario_id = (SELECT scenario_id FROM warm_labs \
         WHERE template = $1 AND template_digest = $2 ORDER BY ready_at, scenario_id LIMIT 1 \
         FOR UPDATE SKIP LOCKED) RETURNING ",
        warm_cols!()
    ))
    .bind(template)
    .bind(digest)
    .fetch_optional(&mut *tx)
    .await?;
    let lab = row.as_ref().map(warm_from_row).transpose()?;
    let (hit, miss): (i64, i64) = if lab.is_some() { (1, 0) } else { (0, 1) };
    sqlx::query(
        "INSERT INTO pool_claims (template, hits, misses) VALUES ($1, $2, $3) \
         ON CONFLICT (template) DO UPDATE SET hits = pool_claims.hits + excluded.hits, \
         misses = pool_claims.misses + excluded.misses",
    )
    .bind(template)
    .bind(hit)
    .bind(miss)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(lab)
}

pub(super) async fn remove(pool: &PgPool, id: &ScenarioId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM warm_labs WHERE scenario_id = $1")
        .bind(id.as_str())
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn list(pool: &PgPool, host_id: Option<&str>) -> Result<Vec<WarmLab>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        warm_cols!(),
        " FROM warm_labs WHERE $1::text IS NULL OR host_id = $1 \
         ORDER BY ready_at, scenario_id"
    ))
    .bind(host_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(warm_from_row).collect()
}

pub(super) async fn claims(pool: &PgPool) -> Result<Vec<PoolClaims>, StoreError> {
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
pub(super) async fn start(pool: &PgPool, lab: &WarmLab) -> Result<ScenarioRecord, StoreError> {
    let now = at_ms(Utc::now());
    let row = sqlx::query(concat!(
        "UPDATE scenarios SET status = 'running', host_id = $1, network_id = $2, \
         containers = $3, started_at = $4, updated_at = $4 \
         WHERE scenario_id = $5 AND status = 'pending' RETURNING ",
        scenario_cols!()
    ))
    .bind(&lab.host_id)
    .bind(&lab.network_id)
    .bind(Json(&lab.containers))
    .bind(now)
    .bind(lab.scenario_id.as_str())
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => scenario_from_row(&row),
        None => Err(refusal(pool, &lab.scenario_id, ScenarioStatus::Running).await?),
    }
}
