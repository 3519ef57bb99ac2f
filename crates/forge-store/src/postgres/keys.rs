//! Idempotency keys, billing ledger and outbox on PostgreSQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, Track};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};

use super::at_ms;
use crate::idempotency::StoredKey;
use crate::model::not_refundable;
use crate::{
    Began, Charge, IdempotencyBegin, LedgerQuery, OutboxItem, REFUND_TOPIC, Refunded, StoreError,
};

/// Claims a key in one statement: inserts it in flight, or takes over the stored one when
/// [`StoredKey::classify`] would let the caller claim it (expired; or in flight past its lease,
/// for the same request). The primary key and the row lock of `ON CONFLICT DO UPDATE` make
/// exactly one of any number of concurrent claimers, in any number of processes, get a row
/// back; the others wait for it and re-check the `WHERE` against the row it left.
const CLAIM: &str = "INSERT INTO idempotency_keys AS k (tenant_id, key, request_hash, state, \
     created_at, locked_until, expires_at) VALUES ($1, $2, $3, 'in_flight', $4, $5, $6) \
     ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = excluded.request_hash, \
     state = 'in_flight', status_code = NULL, response_body = NULL, \
     created_at = excluded.created_at, locked_until = excluded.locked_until, \
     expires_at = excluded.expires_at \
     WHERE k.expires_at <= $4 \
     OR (k.state = 'in_flight' AND k.locked_until <= $4 AND k.request_hash = $3) \
     RETURNING 1";

const SELECT_KEY: &str = "SELECT request_hash, state, status_code, response_body, locked_until, \
     expires_at FROM idempotency_keys WHERE tenant_id = $1 AND key = $2";

/// How often `begin` claims again when the key it could not claim vanished before it read it
/// (abandoned or purged in between); each round trip is a fresh chance, so a few suffice.
const CLAIM_ROUNDS: usize = 8;

fn stored_key(r: &PgRow) -> Result<StoredKey, StoreError> {
    let state: String = r.try_get("state")?;
    let status: Option<i32> = r.try_get("status_code")?;
    let locked_until: DateTime<Utc> = r.try_get("locked_until")?;
    let expires_at: DateTime<Utc> = r.try_get("expires_at")?;
    Ok(StoredKey {
        request_hash: r.try_get("request_hash")?,
        done: state == "done",
        status: status.map(i64::from),
        body: r.try_get("response_body")?,
        locked_until: locked_until.timestamp_millis(),
        expires_at: expires_at.timestamp_millis(),
    })
}

/// `now + d` at millisecond precision, saturating as SQLite's millisecond arithmetic does.
fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let later = chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    at_ms(later)
}

pub(super) async fn begin(pool: &PgPool, req: &IdempotencyBegin<'_>) -> Result<Began, StoreError> {
    let now = at_ms(req.now);
    let (lease_until, expires_at) = (after(now, req.lease), after(now, req.retention));
    for _ in 0..CLAIM_ROUNDS {
        let claimed = sqlx::query(CLAIM)
            .bind(req.tenant_id)
            .bind(req.key)
            .bind(req.request_hash)
            .bind(now)
            .bind(lease_until)
            .bind(expires_at)
            .fetch_optional(pool)
            .await?;
        if claimed.is_some() {
            return Ok(Began::New);
        }
        // Someone else holds the key: say what it is. A read in a later snapshot than the
        // claim's may find the key gone (abandoned, purged), or, in theory, claimable again;
        // then claim anew.
        let row = sqlx::query(SELECT_KEY)
            .bind(req.tenant_id)
            .bind(req.key)
            .fetch_optional(pool)
            .await?;
        if let Some(row) = row
            && let Some(b) = stored_key(&row)?.classify(req.request_hash, now.timestamp_millis())?
        {
            return Ok(b);
        }
    }
    Err(StoreError::Backend(format!(
        "idempotency key `{}` of tenant {} kept changing while it was claimed",
        req.key, req.tenant_id
    )))
}

pub(super) async fn insert_charge(
    tx: &mut Transaction<'_, Postgres>,
    c: &Charge,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO billing_ledger (event_id, tenant_id, request_id, scenario_id, track, \
         template, tier, plan, amount_cents, currency, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
    .bind(at_ms(c.created_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The gateway event carries the charge itself, so an event can always be traced to its row.
pub(super) async fn insert_outbox(
    tx: &mut Transaction<'_, Postgres>,
    c: &Charge,
    topic: &str,
) -> Result<(), StoreError> {
    let payload = serde_json::to_value(c).expect("charge serializes");
    enqueue(tx, &c.event_id, topic, &payload, c.created_at).await
}

async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    event_id: &str,
    topic: &str,
    payload: &serde_json::Value,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, payload, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, 0, $4, $4)",
    )
    .bind(event_id)
    .bind(topic)
    .bind(Json(payload))
    .bind(at_ms(at))
    .execute(&mut **tx)
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

/// Refunds the charge of a scenario that failed before it ran, in one read-committed
/// transaction. Replicas may race: the refund's event id is the ledger's primary key, so of
/// concurrent inserts exactly one writes (the others wait for it, then conflict and read its
/// row), and only the winner enqueues the outbox item, in its own transaction. The checks need
/// no lock: `failed` is final, and `started_at` and the charge never change once it is.
pub(super) async fn refund(
    pool: &PgPool,
    id: &ScenarioId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<Refunded>, StoreError> {
    let mut tx = pool.begin().await?;
    let Some(rec) = super::scenarios::fetch(&mut *tx, None, id).await? else {
        return Err(StoreError::NotFound(id.to_string()));
    };
    if let Some(e) = not_refundable(&rec) {
        return Err(e);
    }
    let charge = sqlx::query(concat!(
        "SELECT ",
        ledger_cols!(),
        " FROM billing_ledger WHERE scenario_id = $1 AND kind = 'charge'"
    ))
    .bind(id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(charge) = charge.as_ref().map(charge_from_row).transpose()? else {
        return Ok(None);
    };
    let r = charge.refund(at_ms(now));
    let inserted = sqlx::query(
        "INSERT INTO billing_ledger (event_id, tenant_id, request_id, scenario_id, track, \
         template, tier, plan, kind, amount_cents, currency, created_at, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'refund', $9, $10, $11, $12) \
         ON CONFLICT DO NOTHING",
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
    .bind(r.created_at)
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let in_outbox = |event_id: String| {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE event_id = $1")
            .bind(event_id)
    };
    if !inserted {
        let row = sqlx::query(concat!(
            "SELECT ",
            ledger_cols!(),
            " FROM billing_ledger WHERE event_id = $1"
        ))
        .bind(&r.event_id)
        .fetch_one(&mut *tx)
        .await?;
        let queued = in_outbox(r.event_id.clone()).fetch_one(&mut *tx).await? > 0;
        tx.rollback().await?;
        return Ok(Some(Refunded {
            refund: charge_from_row(&row)?,
            created: false,
            queued,
        }));
    }
    // The charge's own outbox item says it went to the gateway; its refund must follow it
    // there, and only there (a stub charge was never sent).
    let queued = in_outbox(charge.event_id.clone())
        .fetch_one(&mut *tx)
        .await?
        > 0;
    if queued {
        let payload = r.refund_payload(&charge.event_id, reason);
        enqueue(&mut tx, &r.event_id, REFUND_TOPIC, &payload, r.created_at).await?;
    }
    tx.commit().await?;
    Ok(Some(Refunded {
        refund: r,
        created: true,
        queued,
    }))
}

fn charge_from_row(r: &PgRow) -> Result<Charge, StoreError> {
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
        created_at: r.try_get("created_at")?,
    })
}

/// Absent filters are `NULL` parameters, so one statement serves every query shape.
pub(super) async fn ledger(pool: &PgPool, q: &LedgerQuery) -> Result<Vec<Charge>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        ledger_cols!(),
        " FROM billing_ledger \
         WHERE ($1::text IS NULL OR tenant_id = $1) \
         AND ($2::timestamptz IS NULL OR created_at >= $2) \
         AND ($3::timestamptz IS NULL OR created_at < $3) ORDER BY created_at, event_id"
    ))
    .bind(q.tenant_id.as_deref())
    .bind(q.from.map(at_ms))
    .bind(q.to.map(at_ms))
    .fetch_all(pool)
    .await?;
    rows.iter().map(charge_from_row).collect()
}

pub(super) async fn due_outbox(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<OutboxItem>, StoreError> {
    let rows = sqlx::query(
        "SELECT event_id, topic, payload, attempts, next_attempt_at, last_error, created_at, \
         delivered_at FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $1 \
         ORDER BY next_attempt_at, created_at LIMIT $2",
    )
    .bind(at_ms(now))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let Json(payload): Json<serde_json::Value> = r
                .try_get("payload")
                .map_err(|e| StoreError::Corrupt(format!("outbox payload: {e}")))?;
            let attempts: i32 = r.try_get("attempts")?;
            Ok(OutboxItem {
                event_id: r.try_get("event_id")?,
                topic: r.try_get("topic")?,
                payload,
                attempts: u32::try_from(attempts).unwrap_or(0),
                next_attempt_at: r.try_get("next_attempt_at")?,
                last_error: r.try_get("last_error")?,
                created_at: r.try_get("created_at")?,
                delivered_at: r.try_get("delivered_at")?,
            })
        })
        .collect()
}
