//! [`Store`] on SQLite: one file in the data dir, WAL journal, foreign keys on, embedded
//! migrations.
//!
//! Writes run on one connection owned by a writer thread (`writer`): each logical write is sent
//! there as one job, and the jobs queued together commit together (group commit: one
//! `BEGIN IMMEDIATE` transaction per batch, so it never has to upgrade a read lock; a savepoint
//! per multi-statement job keeps its failure its own). Reads go through a small pool of their
//! own and never wait for the writer (WAL).

mod hosts;
mod keys;
mod pools;
mod scenarios;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, ScenarioStatus};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::{
    Began, Billing, Charge, CheckSummary, IdempotencyBegin, Inserted, LabHost, LedgerQuery,
    NewScenario, OutboxItem, PoolClaims, Refunded, ScenarioRecord, Store, StoreError, WarmLab,
};
use scenarios::{scenario_cols, scenario_from_row, statuses_json};
use writer::Writer;

/// Name of the database file inside the data dir.
pub const FILE_NAME: &str = "forge.db";

/// The SQLite store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    path: PathBuf,
}

/// [`Billing`] with an owned charge, to send to the writer thread.
pub(crate) enum OwnedBilling {
    None,
    Ledger(Charge),
    LedgerAndOutbox(Charge),
}

impl From<Billing<'_>> for OwnedBilling {
    fn from(b: Billing<'_>) -> Self {
        match b {
            Billing::None => Self::None,
            Billing::Ledger(c) => Self::Ledger(c.clone()),
            Billing::LedgerAndOutbox(c) => Self::LedgerAndOutbox(c.clone()),
        }
    }
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(v)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {v} is out of range")))
}

fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) `<data_dir>/forge.db`.
    pub async fn open_in_dir(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            path: data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::open(&data_dir.join(FILE_NAME)).await
    }

    /// Opens (creating it if needed) the database file at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a commit survives a process crash; only an OS crash may lose the
            // last transactions, and never corrupts the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let open_err = |e: sqlx::Error| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        {
            let migrator = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts.clone())
                .await
                .map_err(open_err)?;
            sqlx::migrate!("./migrations")
                .run(&migrator)
                .await
                .map_err(|e| StoreError::Migrate(e.to_string()))?;
            migrator.close().await;
        }
        let writer = Writer::start(opts.clone()).await?;
        // No ping before each acquire (sqlx's default): a local file does not drop like a
        // network connection, and the ping is a full round trip to the connection's thread.
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(open_err)?;
        Ok(Self {
            writer,
            reader,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finishes queued writes and closes every connection.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn insert(
        &self,
        new: &NewScenario,
        billing: Billing<'_>,
        max_active: Option<u64>,
    ) -> Result<Inserted, StoreError> {
        let (new, billing) = (new.clone(), OwnedBilling::from(billing));
        self.writer
            .run(move |c| Box::pin(scenarios::insert(c, new, billing, max_active)))
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        // Reads the schema page from the file, through the pool every read uses.
        let read = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sqlite_master")
            .fetch_one(&self.reader);
        let file = self.path.display();
        match tokio::time::timeout(crate::PING_TIMEOUT, read).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Backend(format!("cannot read {file}: {e}"))),
            Err(_) => Err(StoreError::Backend(format!(
                "no read of {file} within {:?}",
                crate::PING_TIMEOUT
            ))),
        }
    }

    async fn insert_pending(
        &self,
        new: &NewScenario,
        billing: Billing<'_>,
    ) -> Result<Inserted, StoreError> {
        self.insert(new, billing, None).await
    }

    async fn insert_pending_limited(
        &self,
        new: &NewScenario,
        billing: Billing<'_>,
        max_active: u64,
    ) -> Result<Inserted, StoreError> {
        self.insert(new, billing, Some(max_active)).await
    }

    async fn get(
        &self,
        tenant_id: &str,
        id: &ScenarioId,
    ) -> Result<Option<ScenarioRecord>, StoreError> {
        let found = scenarios::fetch(&self.reader, id).await?;
        Ok(found.filter(|r| r.tenant_id == tenant_id))
    }

    async fn get_any(&self, id: &ScenarioId) -> Result<Option<ScenarioRecord>, StoreError> {
        scenarios::fetch(&self.reader, id).await
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
        let (id, error) = (id.clone(), error.map(str::to_owned));
        self.writer
            .run_atomic(move |c| Box::pin(scenarios::transition(c, id, allowed, to, error)))
            .await
    }

    async fn list_by_status(
        &self,
        statuses: &[ScenarioStatus],
    ) -> Result<Vec<ScenarioRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            scenario_cols!(),
            " FROM scenarios WHERE status IN (SELECT value FROM json_each(?)) \
             ORDER BY created_at, rowid"
        ))
        .bind(statuses_json(statuses))
        .fetch_all(&self.reader)
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
            " FROM scenarios WHERE tenant_id = ? AND status IN (SELECT value FROM json_each(?)) \
             ORDER BY created_at DESC, rowid DESC LIMIT ?"
        ))
        .bind(tenant_id)
        .bind(statuses_json(statuses))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(scenario_from_row).collect()
    }

    async fn extend(
        &self,
        id: &ScenarioId,
        by: Duration,
        cap: DateTime<Utc>,
    ) -> Result<ScenarioRecord, StoreError> {
        let (id, by, cap) = (id.clone(), dur_ms(by), ms(cap));
        self.writer
            .run_atomic(move |c| Box::pin(scenarios::extend(c, id, by, cap)))
            .await
    }

    async fn record_check(
        &self,
        id: &ScenarioId,
        check: &CheckSummary,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(check).map_err(|e| StoreError::Backend(e.to_string()))?;
        let changed = self
            .writer
            .execute(
                sqlx::query(
                    "UPDATE scenarios SET last_check = ? \
                     WHERE scenario_id = ? AND status = 'running'",
                )
                .bind(json)
                .bind(id.as_str()),
            )
            .await?;
        Ok(changed > 0)
    }

    async fn count_active(&self, tenant_id: &str) -> Result<u64, StoreError> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT active FROM tenant_usage WHERE tenant_id = ?")
                .bind(tenant_id)
                .fetch_optional(&self.reader)
                .await?;
        Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    }

    async fn claim(&self, id: &ScenarioId, host_id: &str) -> Result<ScenarioRecord, StoreError> {
        let (id, host_id) = (id.clone(), host_id.to_owned());
        self.writer
            .run_atomic(move |c| Box::pin(hosts::claim(c, id, host_id)))
            .await
    }

    async fn renew_lease(&self, host: &LabHost) -> Result<(), StoreError> {
        let host = host.clone();
        self.writer
            .run_atomic(move |c| Box::pin(hosts::renew(c, host)))
            .await
    }

    async fn lab_hosts(&self) -> Result<Vec<LabHost>, StoreError> {
        hosts::list(&self.reader).await
    }

    async fn set_runtime_info(
        &self,
        id: &ScenarioId,
        network_id: &str,
        containers: &[String],
    ) -> Result<(), StoreError> {
        let containers = serde_json::to_string(containers).expect("strings serialize");
        let changed = self
            .writer
            .execute(
                sqlx::query(
                    "UPDATE scenarios SET network_id = ?, containers = ?, updated_at = ? \
                     WHERE scenario_id = ?",
                )
                .bind(network_id)
                .bind(containers)
                .bind(ms(Utc::now()))
                .bind(id.as_str()),
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(())
    }

    async fn begin(&self, req: &IdempotencyBegin<'_>) -> Result<Began, StoreError> {
        let now = ms(req.now);
        // Replays and in-flight duplicates are answered by a reader, away from the writer.
        if let Some(b) =
            keys::peek(&self.reader, req.tenant_id, req.key, req.request_hash, now).await?
        {
            return Ok(b);
        }
        let (t, k, h) = (
            req.tenant_id.to_owned(),
            req.key.to_owned(),
            req.request_hash.to_owned(),
        );
        let lease = now.saturating_add(dur_ms(req.lease));
        let expires = now.saturating_add(dur_ms(req.retention));
        self.writer
            .run_atomic(move |c| Box::pin(keys::begin(c, t, k, h, now, lease, expires)))
            .await
    }

    async fn complete(
        &self,
        tenant_id: &str,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), StoreError> {
        self.writer
            .execute(
                sqlx::query(
                    "UPDATE idempotency_keys SET state = 'done', status_code = ?, \
                     response_body = ? WHERE tenant_id = ? AND key = ? AND state = 'in_flight'",
                )
                .bind(i64::from(status))
                .bind(body)
                .bind(tenant_id)
                .bind(key),
            )
            .await?;
        Ok(())
    }

    async fn abandon(&self, tenant_id: &str, key: &str) -> Result<(), StoreError> {
        self.writer
            .execute(
                sqlx::query(
                    "DELETE FROM idempotency_keys \
                     WHERE tenant_id = ? AND key = ? AND state = 'in_flight'",
                )
                .bind(tenant_id)
                .bind(key),
            )
            .await?;
        Ok(())
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let now = ms(now);
        self.writer
            .execute(
                sqlx::query(
                    "DELETE FROM idempotency_keys WHERE expires_at <= ? \
                     AND (state = 'done' OR locked_until <= ?)",
                )
                .bind(now)
                .bind(now),
            )
            .await
    }

    async fn refund(
        &self,
        id: &ScenarioId,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Refunded>, StoreError> {
        let (id, reason) = (id.clone(), reason.to_owned());
        self.writer
            .run(move |c| Box::pin(keys::refund(c, id, reason, now)))
            .await
    }

    async fn ledger(&self, query: &LedgerQuery) -> Result<Vec<Charge>, StoreError> {
        keys::ledger(&self.reader, query).await
    }

    async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        keys::due_outbox(&self.reader, now, limit).await
    }

    async fn mark_delivered(&self, event_id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.writer
            .execute(
                sqlx::query(
                    "UPDATE outbox SET delivered_at = ?, last_error = NULL \
                     WHERE event_id = ? AND delivered_at IS NULL",
                )
                .bind(ms(now))
                .bind(event_id),
            )
            .await?;
        Ok(())
    }

    async fn mark_attempt_failed(
        &self,
        event_id: &str,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.writer
            .execute(
                sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, \
                     last_error = ? WHERE event_id = ? AND delivered_at IS NULL",
                )
                .bind(ms(next_attempt_at))
                .bind(error)
                .bind(event_id),
            )
            .await?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn put_warm(&self, lab: &WarmLab) -> Result<(), StoreError> {
        let lab = lab.clone();
        self.writer.run(move |c| Box::pin(pools::put(c, lab))).await
    }

    async fn take_warm(&self, template: &str, digest: &str) -> Result<Option<WarmLab>, StoreError> {
        let (template, digest) = (template.to_owned(), digest.to_owned());
        self.writer
            .run_atomic(move |c| Box::pin(pools::take(c, template, digest)))
            .await
    }

    async fn remove_warm(&self, id: &ScenarioId) -> Result<bool, StoreError> {
        Ok(self.writer.execute(pools::remove_query(id)).await? > 0)
    }

    async fn list_warm(&self, host_id: Option<&str>) -> Result<Vec<WarmLab>, StoreError> {
        pools::list(&self.reader, host_id).await
    }

    async fn pool_claims(&self) -> Result<Vec<PoolClaims>, StoreError> {
        pools::claims(&self.reader).await
    }

    async fn start_warm(&self, lab: &WarmLab) -> Result<ScenarioRecord, StoreError> {
        let lab = lab.clone();
        self.writer
            .run_atomic(move |c| Box::pin(pools::start(c, lab)))
            .await
    }
}
