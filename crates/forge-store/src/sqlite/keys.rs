//! Idempotency keys, billing ledger and outbox on SQLite.

use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, Track};
use rusqlite::{Connection, Row};

use super::read::{all, exec, one, scalar};
use super::writer::savepoint;
use super::{from_ms, ms};
use crate::idempotency::StoredKey;
use crate::model::not_refundable;
use crate::{Began, Charge, LedgerQuery, OutboxItem, REFUND_TOPIC, Refunded, StoreError};

/// The stored key in a row of [`SELECT_KEY`].
fn stored_key(r: &Row<'_>) -> Result<StoredKey, StoreError> {
    let state: String = r.get("state")?;
    Ok(StoredKey {
        request_hash: r.get("request_hash")?,
        done: state == "done",
        status: r.get("status_code")?,
        body: r.get("response_body")?,
        locked_until: r.get("locked_until")?,
        expires_at: r.get("expires_at")?,
    })
}

const SELECT_KEY: &str = "SELECT request_hash, state, status_code, response_body, locked_until, \
                          expires_at FROM idempotency_keys WHERE tenant_id = ? AND key = ?";

/// The claim itself, written in flight unless the key exists: the same statement for a new key
/// and for taking over a dead one.
const INSERT_IF_ABSENT: &str = "INSERT INTO idempotency_keys (tenant_id, key, request_hash, \
                                state, created_at, locked_until, expires_at) \
                                VALUES (?, ?, ?, 'in_flight', ?, ?, ?) \
                                ON CONFLICT (tenant_id, key) DO NOTHING";

/// Claims a key, all on the writer connection (one job, so no other write interleaves).
pub(super) fn begin(
    conn: &Connection,
    tenant_id: &str,
    key: &str,
    hash: &str,
    now: i64,
    lease_until: i64,
    expires_at: i64,
) -> Result<Began, StoreError> {
    let claim = (tenant_id, key, hash, now, lease_until, expires_at);
    // Fast path for the common case, a new key: one statement; the primary key makes exactly
    // one of any number of concurrent claimers win.
    if exec(conn, INSERT_IF_ABSENT, claim)? == 1 {
        return Ok(Began::New);
    }
    if let Some(b) = peek(conn, tenant_id, key, hash, now)? {
        return Ok(b);
    }
    // Expired, or in flight past its lease (its owner died): claim it afresh, both statements
    // in a savepoint of their own (this job runs without one: its fast path is one statement).
    savepoint(conn, |c| {
        exec(
            c,
            "DELETE FROM idempotency_keys WHERE tenant_id = ? AND key = ?",
            (tenant_id, key),
        )?;
        exec(c, INSERT_IF_ABSENT, claim)
    })?;
    Ok(Began::New)
}

/// Answers what `begin` would without claiming: `None` means "claim it".
fn peek(
    conn: &Connection,
    tenant_id: &str,
    key: &str,
    hash: &str,
    now: i64,
) -> Result<Option<Began>, StoreError> {
    match one(conn, SELECT_KEY, (tenant_id, key), stored_key)? {
        Some(k) => k.classify(hash, now),
        None => Ok(None),
    }
}

pub(super) fn insert_charge(conn: &Connection, c: &Charge) -> Result<(), StoreError> {
    exec(
        conn,
        "INSERT INTO billing_ledger (event_id, tenant_id, request_id, scenario_id, track, \
         template, tier, plan, amount_cents, currency, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            &c.event_id,
            &c.tenant_id,
            &c.request_id,
            c.scenario_id.as_str(),
            c.track.as_str(),
            &c.template,
            &c.tier,
            &c.plan,
            c.amount_cents,
            &c.currency,
            ms(c.created_at),
        ),
    )?;
    Ok(())
}

/// The gateway event carries the charge itself, so an event can always be traced to its row.
pub(super) fn insert_outbox(conn: &Connection, c: &Charge, topic: &str) -> Result<(), StoreError> {
    let payload = serde_json::to_value(c).expect("charge serializes");
    enqueue(conn, &c.event_id, topic, &payload, c.created_at)
}

fn enqueue(
    conn: &Connection,
    event_id: &str,
    topic: &str,
    payload: &serde_json::Value,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    exec(
        conn,
        "INSERT INTO outbox (event_id, topic, payload, attempts, next_attempt_at, created_at) \
         VALUES (?, ?, ?, 0, ?, ?)",
        (event_id, topic, payload.to_string(), ms(at), ms(at)),
    )?;
    Ok(())
}

/// The columns of a ledger row as [`charge_from_row`] reads it.
macro_rules! ledger_cols {
    () => {
        "event_id, tenant_id, request_id, scenario_id, track, template, tier, plan, \
         amount_cents, currency, created_at"
    };
}

/// Whether the outbox holds an item of `event_id`.
fn in_outbox(conn: &Connection, event_id: &str) -> Result<bool, StoreError> {
    let n = scalar(
        conn,
        "SELECT COUNT(*) FROM outbox WHERE event_id = ?",
        [event_id],
    )?;
    Ok(n.unwrap_or(0) > 0)
}

/// Refunds the charge of a scenario that failed before it ran, all on the writer connection
/// (one job, so the checks and the writes see the same rows; its savepoint is the transaction).
pub(super) fn refund(
    conn: &Connection,
    id: &ScenarioId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<Refunded>, StoreError> {
    let Some(rec) = super::scenarios::fetch(conn, id)? else {
        return Err(StoreError::NotFound(id.to_string()));
    };
    if let Some(e) = not_refundable(&rec) {
        return Err(e);
    }
    let charge = one(
        conn,
        concat!(
            "SELECT ",
            ledger_cols!(),
            " FROM billing_ledger WHERE scenario_id = ? AND kind = 'charge'"
        ),
        [id.as_str()],
        charge_from_row,
    )?;
    let Some(charge) = charge else {
        return Ok(None);
    };
    let refund_id = Charge::refund_event_id(&charge.event_id);
    let existing = one(
        conn,
        concat!(
            "SELECT ",
            ledger_cols!(),
            " FROM billing_ledger WHERE event_id = ?"
        ),
        [&refund_id],
        charge_from_row,
    )?;
    if let Some(refund) = existing {
        return Ok(Some(Refunded {
            refund,
            created: false,
            queued: in_outbox(conn, &refund_id)?,
        }));
    }
    // Stored at the ledger's precision, so the returned row equals a later read of it.
    let now = from_ms(ms(now))?;
    let r = charge.refund(now);
    exec(
        conn,
        "INSERT INTO billing_ledger (event_id, tenant_id, request_id, scenario_id, track, \
         template, tier, plan, kind, amount_cents, currency, created_at, reason) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'refund', ?, ?, ?, ?)",
        (
            &r.event_id,
            &r.tenant_id,
            &r.request_id,
            r.scenario_id.as_str(),
            r.track.as_str(),
            &r.template,
            &r.tier,
            &r.plan,
            r.amount_cents,
            &r.currency,
            ms(r.created_at),
            reason,
        ),
    )?;
    // The charge's own outbox item says it went to the gateway; its refund must follow it
    // there, and only there (a stub charge was never sent).
    let queued = in_outbox(conn, &charge.event_id)?;
    if queued {
        let payload = r.refund_payload(&charge.event_id, reason);
        enqueue(conn, &r.event_id, REFUND_TOPIC, &payload, now)?;
    }
    Ok(Some(Refunded {
        refund: r,
        created: true,
        queued,
    }))
}

fn charge_from_row(r: &Row<'_>) -> Result<Charge, StoreError> {
    let corrupt = |e: String| StoreError::Corrupt(e);
    let id: String = r.get("scenario_id")?;
    let track: String = r.get("track")?;
    Ok(Charge {
        event_id: r.get("event_id")?,
        tenant_id: r.get("tenant_id")?,
        request_id: r.get("request_id")?,
        scenario_id: id.parse().map_err(|e| corrupt(format!("{e}")))?,
        track: track.parse::<Track>().map_err(|e| corrupt(e.to_string()))?,
        template: r.get("template")?,
        tier: r.get("tier")?,
        plan: r.get("plan")?,
        amount_cents: r.get("amount_cents")?,
        currency: r.get("currency")?,
        created_at: from_ms(r.get("created_at")?)?,
    })
}

pub(super) fn ledger(conn: &Connection, q: &LedgerQuery) -> Result<Vec<Charge>, StoreError> {
    let tenant = q.tenant_id.as_deref();
    let from = q.from.map(ms);
    let to = q.to.map(ms);
    all(
        conn,
        concat!(
            "SELECT ",
            ledger_cols!(),
            " FROM billing_ledger \
             WHERE (? IS NULL OR tenant_id = ?) AND (? IS NULL OR created_at >= ?) \
             AND (? IS NULL OR created_at < ?) ORDER BY created_at, event_id"
        ),
        (tenant, tenant, from, from, to, to),
        charge_from_row,
    )
}

pub(super) fn due_outbox(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<OutboxItem>, StoreError> {
    all(
        conn,
        "SELECT event_id, topic, payload, attempts, next_attempt_at, last_error, created_at, \
         delivered_at FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= ? \
         ORDER BY next_attempt_at, created_at LIMIT ?",
        (ms(now), i64::from(limit)),
        |r| {
            let payload: String = r.get("payload")?;
            let attempts: i64 = r.get("attempts")?;
            let delivered: Option<i64> = r.get("delivered_at")?;
            Ok(OutboxItem {
                event_id: r.get("event_id")?,
                topic: r.get("topic")?,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| StoreError::Corrupt(format!("outbox payload: {e}")))?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                next_attempt_at: from_ms(r.get("next_attempt_at")?)?,
                last_error: r.get("last_error")?,
                created_at: from_ms(r.get("created_at")?)?,
                delivered_at: delivered.map(from_ms).transpose()?,
            })
        },
    )
}

/// Outbox items not yet delivered.
pub(super) fn outbox_backlog(conn: &Connection) -> Result<u64, StoreError> {
    let n = scalar(
        conn,
        "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL",
        [],
    )?;
    Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
}
