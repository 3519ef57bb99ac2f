//! Idempotency keys, billing ledger and outbox on SQLite.

use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, Track};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{Connection, Row};

use super::{from_ms, ms};
use crate::idempotency::StoredKey;
use crate::model::not_refundable;
use crate::{Began, Charge, LedgerQuery, OutboxItem, REFUND_TOPIC, Refunded, StoreError};

/// The stored key in a row of [`SELECT_KEY`].
fn stored_key(r: &SqliteRow) -> Result<StoredKey, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(StoredKey {
        request_hash: r.try_get("request_hash")?,
        done: state == "done",
        status: r.try_get("status_code")?,
        body: r.try_get("response_body")?,
        locked_until: r.try_get("locked_until")?,
        expires_at: r.try_get("expires_at")?,
    })
}

const SELECT_KEY: &str = "SELECT request_hash, state, status_code, response_body, locked_until, \
                          expires_at FROM idempotency_keys WHERE tenant_id = ? AND key = ?";

/// Claims a key, all on the writer connection (one job, so no other write interleaves).
pub(super) async fn begin(
    conn: &mut SqliteConnection,
    tenant_id: String,
    key: String,
    hash: String,
    now: i64,
    lease_until: i64,
    expires_at: i64,
) -> Result<Began, StoreError> {
    // The claim itself, written in flight unless the key exists: the same statement for a new
    // key and for taking over a dead one.
    let insert_if_absent = || {
        sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, state, created_at, \
             locked_until, expires_at) VALUES (?, ?, ?, 'in_flight', ?, ?, ?) \
             ON CONFLICT (tenant_id, key) DO NOTHING",
        )
        .bind(&tenant_id)
        .bind(&key)
        .bind(&hash)
        .bind(now)
        .bind(lease_until)
        .bind(expires_at)
    };
    // Fast path for the common case, a new key: one statement; the primary key makes exactly
    // one of any number of concurrent claimers win.
    let inserted = insert_if_absent().execute(&mut *conn).await?;
    if inserted.rows_affected() == 1 {
        return Ok(Began::New);
    }
    let row = sqlx::query(SELECT_KEY)
        .bind(&tenant_id)
        .bind(&key)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = &row
        && let Some(b) = stored_key(row)?.classify(&hash, now)?
    {
        return Ok(b);
    }
    // Expired, or in flight past its lease (its owner died): claim it afresh, both statements
    // in a savepoint of their own (this job runs without one: its fast path is one statement).
    let mut tx = conn.begin().await?;
    sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = ? AND key = ?")
        .bind(&tenant_id)
        .bind(&key)
        .execute(&mut *tx)
        .await?;
    insert_if_absent().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Began::New)
}

/// Answers what `begin` would from a reader, without claiming: `None` means "claim it".
pub(super) async fn peek(
    reader: &SqlitePool,
    tenant_id: &str,
    key: &str,
    hash: &str,
    now: i64,
) -> Result<Option<Began>, StoreError> {
    let row = sqlx::query(SELECT_KEY)
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(reader)
        .await?;
    match row {
        Some(row) => stored_key(&row)?.classify(hash, now),
        None => Ok(None),
    }
}

pub(super) async fn insert_charge(tx: &mut SqliteConnection, c: &Charge) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO billing_ledger (event_id, tenant_id, request_id, scenario_id, track, \
         template, tier, plan, amount_cents, currency, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&c.event_id)
    .bind(&c.tenant_id)
    .bind(&c.request_id)
    .bind(c.scenario_id.as_str())
    .bind(c.track.as_str())
    .bind(&c.template)
    .bind(&c.tier)
    .bind(&c.plan)
    .bind(c.amount_cents)
    .bind(&c.currency)
    .bind(ms(c.created_at))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The gateway event carries the charge itself, so an event can always be traced to its row.
pub(super) async fn insert_outbox(
    tx: &mut SqliteConnection,
    c: &Charge,
    topic: &str,
) -> Result<(), StoreError> {
    let payload = serde_json::to_value(c).expect("charge serializes");
    enqueue(tx, &c.event_id, topic, &payload, c.created_at).await
}

async fn enqueue(
    tx: &mut SqliteConnection,
    event_id: &str,
    topic: &str,
    payload: &serde_json::Value,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, payload, attempts, next_attempt_at, created_at) \
         VALUES (?, ?, ?, 0, ?, ?)",
    )
    .bind(event_id)
    .bind(topic)
    .bind(payload.to_string())
    .bind(ms(at))
    .bind(ms(at))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The columns of a ledger row as [`charge_from_row`] reads it.
macro_rules! ledger_cols {
    () => {
        "event_id, tenant_id, request_id, scenario_id, track, template, tier, plan, \
         amount_cents, currency, created_at"
    };
}

/// Refunds the charge of a scenario that failed before it ran, all on the writer connection
/// (one job, so the checks and the writes see the same rows; its savepoint is the transaction).
pub(super) async fn refund(
    tx: &mut SqliteConnection,
    id: ScenarioId,
    reason: String,
    now: DateTime<Utc>,
) -> Result<Option<Refunded>, StoreError> {
    let Some(rec) = super::scenarios::fetch(&mut *tx, &id).await? else {
        return Err(StoreError::NotFound(id.to_string()));
    };
    if let Some(e) = not_refundable(&rec) {
        return Err(e);
    }
    let charge = sqlx::query(concat!(
        "SELECT ",
        ledger_cols!(),
        " FROM billing_ledger WHERE scenario_id = ? AND kind = 'charge'"
    ))
    .bind(id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(charge) = charge.as_ref().map(charge_from_row).transpose()? else {
        return Ok(None);
    };
    let refund_id = Charge::refund_event_id(&charge.event_id);
    let in_outbox = |event_id: String| {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE event_id = ?")
            .bind(event_id)
    };
    let existing = sqlx::query(concat!(
        "SELECT ",
        ledger_cols!(),
        " FROM billing_ledger WHERE event_id = ?"
    ))
    .bind(&refund_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = existing {
        let queued = in_outbox(refund_id).fetch_one(&mut *tx).await? > 0;
        return Ok(Some(Refunded {
            refund: charge_from_row(&row)?,
            created: false,
            queued,
        }));
    }
    // Stored at the ledger's precision, so the returned row equals a later read of it.
    let now = from_ms(ms(now))?;
    let r = charge.refund(now);
    sqlx::query(
        "INSERT INTO billing_ledger (event_id, tenant_id, request_id, scenario_id, track, \
         template, tier, plan, kind, amount_cents, currency, created_at, reason) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'refund', ?, ?, ?, ?)",
    )
    .bind(&r.event_id)
    .bind(&r.tenant_id)
    .bind(&r.request_id)
    .bind(r.scenario_id.as_str())
    .bind(r.track.as_str())
    .bind(&r.template)
    .bind(&r.tier)
    .bind(&r.plan)
    .bind(r.amount_cents)
    .bind(&r.currency)
    .bind(ms(r.created_at))
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    // The charge's own outbox item says it went to the gateway; its refund must follow it
    // there, and only there (a stub charge was never sent).
    let queued = in_outbox(charge.event_id.clone())
        .fetch_one(&mut *tx)
        .await?
        > 0;
    if queued {
        let payload = r.refund_payload(&charge.event_id, &reason);
        enqueue(tx, &r.event_id, REFUND_TOPIC, &payload, now).await?;
    }
    Ok(Some(Refunded {
        refund: r,
        created: true,
        queued,
    }))
}

fn charge_from_row(r: &SqliteRow) -> Result<Charge, StoreError> {
    let corrupt = |e: String| StoreError::Corrupt(e);
    let id: String = r.try_get("scenario_id")?;
    let track: String = r.try_get("track")?;
    Ok(Charge {
        event_id: r.try_get("event_id")?,
        tenant_id: r.try_get("tenant_id")?,
        request_id: r.try_get("request_id")?,
        scenario_id: id.parse().map_err(|e| corrupt(format!("{e}")))?,
        track: track.parse::<Track>().map_err(|e| corrupt(e.to_string()))?,
        template: r.try_get("template")?,
        tier: r.try_get("tier")?,
        plan: r.try_get("plan")?,
        amount_cents: r.try_get("amount_cents")?,
        currency: r.try_get("currency")?,
        created_at: from_ms(r.try_get("created_at")?)?,
    })
}

pub(super) async fn ledger(
    reader: &SqlitePool,
    q: &LedgerQuery,
) -> Result<Vec<Charge>, StoreError> {
    let from = q.from.map(ms);
    let to = q.to.map(ms);
    let rows = sqlx::query(concat!(
        "SELECT ",
        ledger_cols!(),
        " FROM billing_ledger \
         WHERE (? IS NULL OR tenant_id = ?) AND (? IS NULL OR created_at >= ?) \
         AND (? IS NULL OR created_at < ?) ORDER BY created_at, event_id"
    ))
    .bind(q.tenant_id.as_deref())
    .bind(q.tenant_id.as_deref())
    .bind(from)
    .bind(from)
    .bind(to)
    .bind(to)
    .fetch_all(reader)
    .await?;
    rows.iter().map(charge_from_row).collect()
}

pub(super) async fn due_outbox(
    reader: &SqlitePool,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<OutboxItem>, StoreError> {
    let rows = sqlx::query(
        "SELECT event_id, topic, payload, attempts, next_attempt_at, last_error, created_at, \
         delivered_at FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= ? \
         ORDER BY next_attempt_at, created_at LIMIT ?",
    )
    .bind(ms(now))
    .bind(i64::from(limit))
    .fetch_all(reader)
    .await?;
    rows.iter()
        .map(|r| {
            let payload: String = r.try_get("payload")?;
            let attempts: i64 = r.try_get("attempts")?;
            let delivered: Option<i64> = r.try_get("delivered_at")?;
            Ok(OutboxItem {
                event_id: r.try_get("event_id")?,
                topic: r.try_get("topic")?,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| StoreError::Corrupt(format!("outbox payload: {e}")))?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                next_attempt_at: from_ms(r.try_get("next_attempt_at")?)?,
                last_error: r.try_get("last_error")?,
                created_at: from_ms(r.try_get("created_at")?)?,
                delivered_at: delivered.map(from_ms).transpose()?,
            })
        })
        .collect()
}
