//! [`Store`] on PostgreSQL, for distributed mode: any number of replicas, in any number of
//! processes, share one database. Migrations are `migrations/postgres/`, embedded, and run by
//! [`PgStore::connect`] (sqlx holds an advisory lock meanwhile, so replicas starting together
//! apply them once).
//!
//! What differs from [`crate::SqliteStore`], and why:
//! - No single writer: SQLite has one writer at a time, so its store funnels writes through one
//!   connection; here every call runs on a pooled connection and concurrent callers are ordered
//!   by PostgreSQL itself. Each write is one statement or one read-committed transaction whose
//!   correctness rests on what PostgreSQL guarantees under concurrency: unique indexes (a
//!   second insert of a key waits for the first transaction, then sees its row), conditional
//!   `UPDATE ... WHERE status = ANY($n)` (a waiting updater re-checks the condition against the
//!   row the winner left), and `INSERT ... ON CONFLICT DO UPDATE ... WHERE` for the quota counter
//!   and idempotency claims (the conflicting row is locked and the guard evaluated on its latest
//!   version). No check is ever made on a value read earlier in another statement.
//! - Types: times are `timestamptz` (SQLite: integer milliseconds), written at millisecond
//!   precision so both backends return the same instants; JSON is `jsonb`, bodies `bytea`.
//! - Tenant scope is part of the query: [`Store::get`] asks for `scenario_id` and `tenant_id`
//!   together, so another tenant's row never leaves the database.
//! - Idempotency `begin` claims first and reads only when it lost (SQLite reads first, to keep
//!   replays away from its writer): a new key, the common case, is one round trip.

mod hosts;
mod keys;
mod pools;
mod scenarios;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, ScenarioStatus};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;

use crate::{
    Began, Billing, Charge, CheckSummary, IdempotencyBegin, Inserted, LabHost, LedgerQuery,
    NewScenario, OutboxItem, PoolClaims, Refunded, ScenarioRecord, Store, StoreError, WarmLab,
};
use scenarios::{scenario_cols, scenario_from_row, status_names};

/// Connections each store keeps at most. Replicas multiply it: the server's `max_connections`
/// must cover every replica's pool.
pub const MAX_CONNECTIONS: u32 = 10;

/// The PostgreSQL store. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// `t` at the precision both backends store: whole milliseconds.
pub(crate) fn at_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// Where `options` point, without the password, for error messages.
fn target(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
}

impl PgStore {
    /// Connects to `database_url` (`postgres://user:password@host:port/database`; the usual
    /// `PG*` environment variables fill what it leaves out) and applies pending migrations.
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        // The url may carry a password: no error repeats it.
        let options = PgConnectOptions::from_str(database_url).map_err(|e| StoreError::Open {
            path: "the database url".into(),
            reason: e.to_string(),
        })?;
        let open_err = |e: sqlx::Error| StoreError::Open {
            path: target(&options),
            reason: e.to_string(),
        };
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        Ok(Self { pool })
    }

    /// Closes every connection, waiting for calls in progress.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let query = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.pool);
        match tokio::time::timeout(crate::PING_TIMEOUT, query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Backend(format!("postgresql: {e}"))),
            Err(_) => Err(StoreError::Backend(format!(
                "postgresql did not answer within {:?}",
                crate::PING_TIMEOUT
            ))),
        }
    }

    async fn insert_pending(
        &self,
        new: &NewScenario,
        billing: Billing<'_>,
    ) -> Result<Inserted, StoreError> {
        scenarios::insert(&self.pool, new, billing, None).await
    }

    async fn insert_pending_limited(
        &self,
        new: &NewScenario,
        billing: Billing<'_>,
        max_active: u64,
    ) -> Result<Inserted, StoreError> {
        scenarios::insert(&self.pool, new, billing, Some(max_active)).await
    }

    async fn get(
        &self,
        tenant_id: &str,
        id: &ScenarioId,
    ) -> Result<Option<ScenarioRecord>, StoreError> {
        scenarios::fetch(&self.pool, Some(tenant_id), id).await
    }

    async fn get_any(&self, id: &ScenarioId) -> Result<Option<ScenarioRecord>, StoreError> {
        scenarios::fetch(&self.pool, None, id).await
    }

    async fn transition(
        &self,
        id: &ScenarioId,
        from: &[ScenarioStatus],
        to: ScenarioStatus,
        error: Option<&str>,
    ) -> Result<ScenarioRecord, StoreError> {
        let allowed: Vec<ScenarioStatus> =
            from.iter().copied().filter(|s| s.can_move_to(to)).collect();
        if allowed.is_empty() {
            return Err(StoreError::InvalidTransition {
                from: from.to_vec(),
                to,
            });
        }
        scenarios::transition(&self.pool, id, &allowed, to, error).await
    }

    async fn list_by_status(
        &self,
        statuses: &[ScenarioStatus],
    ) -> Result<Vec<ScenarioRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            scenario_cols!(),
            " FROM scenarios WHERE status = ANY($1) ORDER BY created_at, seq"
        ))
        .bind(status_names(statuses))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(scenario_from_row).collect()
    }

    async fn list_for_tenant(
        &self,
        tenant_id: &str,
        statuses: &[ScenarioStatus],
        limit: u32,
    ) -> Result<Vec<ScenarioRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            scenario_cols!(),
            " FROM scenarios WHERE tenant_id = $1 AND status = ANY($2) \
             ORDER BY created_at DESC, seq DESC LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(status_names(statuses))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(scenario_from_row).collect()
    }

    async fn extend(
        &self,
        id: &ScenarioId,
        by: Duration,
        cap: DateTime<Utc>,
    ) -> Result<ScenarioRecord, StoreError> {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        scenarios::extend(&self.pool, id, by, cap).await
    }

    async fn record_check(
        &self,
        id: &ScenarioId,
        check: &CheckSummary,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE scenarios SET last_check = $1 WHERE scenario_id = $2 AND status = 'running'",
        )
        .bind(Json(check))
        .bind(id.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    async fn count_active(&self, tenant_id: &str) -> Result<u64, StoreError> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT active FROM tenant_usage WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    }

    async fn claim(&self, id: &ScenarioId, host_id: &str) -> Result<ScenarioRecord, StoreError> {
        hosts::claim(&self.pool, id, host_id).await
    }

    async fn renew_lease(&self, host: &LabHost) -> Result<(), StoreError> {
        hosts::renew(&self.pool, host).await
    }

    async fn lab_hosts(&self) -> Result<Vec<LabHost>, StoreError> {
        hosts::list(&self.pool).await
    }

    async fn set_runtime_info(
        &self,
        id: &ScenarioId,
        network_id: &str,
        containers: &[String],
    ) -> Result<(), StoreError> {
        let changed = sqlx::query(
            "UPDATE scenarios SET network_id = $1, containers = $2, updated_at = $3 \
             WHERE scenario_id = $4",
        )
        .bind(network_id)
        .bind(Json(containers))
        .bind(at_ms(Utc::now()))
        .bind(id.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(())
    }

    async fn begin(&self, req: &IdempotencyBegin<'_>) -> Result<Began, StoreError> {
        keys::begin(&self.pool, req).await
    }

    async fn complete(
        &self,
        tenant_id: &str,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', status_code = $1, response_body = $2 \
             WHERE tenant_id = $3 AND key = $4 AND state = 'in_flight'",
        )
        .bind(i32::from(status))
        .bind(body)
        .bind(tenant_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn abandon(&self, tenant_id: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE tenant_id = $1 AND key = $2 AND state = 'in_flight'",
        )
        .bind(tenant_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query(
            "DELETE FROM idempotency_keys WHERE expires_at <= $1 \
             AND (state = 'done' OR locked_until <= $1)",
        )
        .bind(at_ms(now))
        .execute(&self.pool)
        .await?;
        Ok(purged.rows_affected())
    }

    async fn refund(
        &self,
        id: &ScenarioId,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Refunded>, StoreError> {
        keys::refund(&self.pool, id, reason, now).await
    }

    async fn ledger(&self, query: &LedgerQuery) -> Result<Vec<Charge>, StoreError> {
        keys::ledger(&self.pool, query).await
    }

    async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        keys::due_outbox(&self.pool, now, limit).await
    }

    async fn mark_delivered(&self, event_id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET delivered_at = $1, last_error = NULL \
             WHERE event_id = $2 AND delivered_at IS NULL",
        )
        .bind(at_ms(now))
        .bind(event_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_attempt_failed(
        &self,
        event_id: &str,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 \
             WHERE event_id = $3 AND delivered_at IS NULL",
        )
        .bind(at_ms(next_attempt_at))
        .bind(error)
        .bind(event_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn put_warm(&self, lab: &WarmLab) -> Result<(), StoreError> {
        pools::put(&self.pool, lab).await
    }

    async fn take_warm(&self, template: &str, digest: &str) -> Result<Option<WarmLab>, StoreError> {
        pools::take(&self.pool, template, digest).await
    }

    async fn remove_warm(&self, id: &ScenarioId) -> Result<bool, StoreError> {
        pools::remove(&self.pool, id).await
    }

    async fn list_warm(&self, host_id: Option<&str>) -> Result<Vec<WarmLab>, StoreError> {
        pools::list(&self.pool, host_id).await
    }

    async fn pool_claims(&self) -> Result<Vec<PoolClaims>, StoreError> {
        pools::claims(&self.pool).await
    }

    async fn start_warm(&self, lab: &WarmLab) -> Result<ScenarioRecord, StoreError> {
        pools::start(&self.pool, lab).await
    }
}
