//! Warm pools on SQLite: the pool's labs and the claims counted per template.

use chrono::Utc;
use forge_core::ScenarioStatus;
use rusqlite::{Connection, Row};

use super::read::{all, exec, one};
use super::scenarios::{refusal, scenario_cols, scenario_from_row};
use super::writer::savepoint;
use super::{from_ms, ms};
use crate::{PoolClaims, ScenarioRecord, StoreError, WarmLab};

/// The columns of a warm lab, in a macro so queries stay static strings (`concat!`).
macro_rules! warm_cols {
    () => {
        "scenario_id, template, template_digest, host_id, network_id, containers, ready_at"
    };
}

fn warm_from_row(r: &Row<'_>) -> Result<WarmLab, StoreError> {
    let id: String = r.get("scenario_id")?;
    let containers: String = r.get("containers")?;
    Ok(WarmLab {
        scenario_id: id
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("warm lab id `{id}`: {e}")))?,
        template: r.get("template")?,
        template_digest: r.get("template_digest")?,
        host_id: r.get("host_id")?,
        network_id: r.get("network_id")?,
        containers: serde_json::from_str(&containers)
            .map_err(|e| StoreError::Corrupt(format!("warm lab {id} containers: {e}")))?,
        ready_at: from_ms(r.get("ready_at")?)?,
    })
}

pub(super) fn put(conn: &Connection, lab: &WarmLab) -> Result<(), StoreError> {
    let containers = serde_json::to_string(&lab.containers).expect("strings serialize");
    exec(
        conn,
        "INSERT INTO warm_labs (scenario_id, template, template_digest, host_id, network_id, \
         containers, ready_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            lab.scenario_id.as_str(),
            &lab.template,
            &lab.template_digest,
            &lab.host_id,
            &lab.network_id,
            containers,
            ms(lab.ready_at),
        ),
    )?;
    Ok(())
}

/// The oldest matching lab leaves the pool and the claim is counted, in one savepoint (the
/// one writer connection orders takers anyway; the savepoint keeps lab and count together).
pub(super) fn take(
    conn: &Connection,
    template: &str,
    digest: &str,
) -> Result<Option<WarmLab>, StoreError> {
    savepoint(conn, |c| {
        let lab = one(
            c,
            concat!(
                "DELETE FROM warm_labs WHERE scenario_id = (SELECT scenario_id FROM warm_labs \
                 WHERE template = ? AND template_digest = ? ORDER BY ready_at, scenario_id \
                 LIMIT 1) RETURNING ",
                warm_cols!()
            ),
            (template, digest),
            warm_from_row,
        )?;
        let (hit, miss) = if lab.is_some() { (1, 0) } else { (0, 1) };
        exec(
            c,
            "INSERT INTO pool_claims (template, hits, misses) VALUES (?, ?, ?) \
             ON CONFLICT (template) DO UPDATE SET hits = hits + excluded.hits, \
             misses = misses + excluded.misses",
            (template, hit, miss),
        )?;
        Ok(lab)
    })
}

/// Removes a warm lab by id (a single statement: [`super::writer::Writer::execute`]).
pub(super) const REMOVE: &str = "DELETE FROM warm_labs WHERE scenario_id = ?";

pub(super) fn list(conn: &Connection, host_id: Option<&str>) -> Result<Vec<WarmLab>, StoreError> {
    all(
        conn,
        concat!(
            "SELECT ",
            warm_cols!(),
            " FROM warm_labs WHERE ? IS NULL OR host_id = ? \
             ORDER BY ready_at, scenario_id"
        ),
        (host_id, host_id),
        warm_from_row,
    )
}

pub(super) fn claims(conn: &Connection) -> Result<Vec<PoolClaims>, StoreError> {
    all(
        conn,
        "SELECT template, hits, misses FROM pool_claims ORDER BY template",
        [],
        |r| {
            let (hits, misses): (i64, i64) = (r.get("hits")?, r.get("misses")?);
            Ok(PoolClaims {
                template: r.get("template")?,
                hits: u64::try_from(hits).unwrap_or(0),
                misses: u64::try_from(misses).unwrap_or(0),
            })
        },
    )
}

/// `pending → running` with the warm lab's host and runtime, one conditional statement.
pub(super) fn start(conn: &Connection, lab: &WarmLab) -> Result<ScenarioRecord, StoreError> {
    let now = ms(Utc::now());
    let containers = serde_json::to_string(&lab.containers).expect("strings serialize");
    let row = one(
        conn,
        concat!(
            "UPDATE scenarios SET status = 'running', host_id = ?, network_id = ?, \
             containers = ?, started_at = ?, updated_at = ? \
             WHERE scenario_id = ? AND status = 'pending' RETURNING ",
            scenario_cols!()
        ),
        (
            &lab.host_id,
            &lab.network_id,
            containers,
            now,
            now,
            lab.scenario_id.as_str(),
        ),
        scenario_from_row,
    )?;
    match row {
        Some(rec) => Ok(rec),
        None => Err(refusal(conn, &lab.scenario_id, ScenarioStatus::Running)?),
    }
}
