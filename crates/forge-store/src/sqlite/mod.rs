//! [`Store`] on SQLite: one file in the data dir, WAL journal, foreign keys on, embedded
//! migrations.
//!
//! Statements run through `rusqlite`, in place on the thread that owns the connection: sqlx's
//! SQLite driver ran each connection on a worker thread of its own, so every statement was a
//! round trip between threads, the main cost of a spawn. sqlx still runs the migrations at open
//! (existing databases record them in its `_sqlx_migrations` table), through a short-lived
//! connection closed before the store is used; nothing else here touches sqlx.
//!
//! Writes run on one connection owned by a writer thread (`writer`): each logical write is sent
//! there as one job, and the jobs queued together commit together (group commit: one
//! `BEGIN IMMEDIATE` transaction per batch, so it never has to upgrade a read lock; a savepoint
//! per multi-statement job keeps its failure its own). Reads run on a few read connections of
//! their own (`read`) and never wait for the writer (WAL): point reads inline in the calling
//! task, reads of many rows on a blocking thread. WAL checkpoints run on a thread of their own
//! (`checkpoint`), so no commit ever waits for an `fsync`.

mod checkpoint;
mod hosts;
mod keys;
mod pools;
mod read;
mod scenarios;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, ScenarioStatus};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::{
    Began, Billing, Charge, CheckSummary, IdempotencyBegin, Inserted, LabHost, LedgerQuery,
    NewScenario, OutboxItem, PoolClaims, Refunded, ScenarioRecord, Store, StoreError, WarmLab,
};
use checkpoint::Checkpointer;
use read::{READERS, Readers};
use scenarios::statuses_json;
use writer::Writer;

/// Name of the database file inside the data dir.
pub const FILE_NAME: &str = "forge.db";

/// The SQLite store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Readers>,
    checkpointer: Arc<std::sync::Mutex<Checkpointer>>,
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
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        {
            // The migrations stay sqlx's: databases made before the move to rusqlite record
            // theirs in `_sqlx_migrations`, and must go on where they left off.
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let migrator = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await
                .map_err(|e| open_err(e.to_string()))?;
            let migrated = sqlx::migrate!("./migrations")
                .run(&migrator)
                .await
                .map_err(|e| StoreError::Migrate(e.to_string()));
            migrator.close().await;
            migrated?;
        }
        let writer = Writer::start(path).await?;
        let readers = match Readers::open(path, READERS) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                writer.close().await;
                return Err(open_err(e.to_string()));
            }
        };
        let checkpointer = match Checkpointer::start(path) {
            Ok(c) => Arc::new(std::sync::Mutex::new(c)),
            Err(e) => {
                writer.close().await;
                readers.close().await;
                return Err(open_err(e));
            }
        };
        Ok(Self {
            writer,
            readers,
            checkpointer,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finishes queued writes and closes every connection.
    pub async fn close(&self) {
        let checkpointer = Arc::clone(&self.checkpointer);
        let _ = tokio::task::spawn_blocking(move || {
            checkpointer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .stop();
        })
        .await;
        self.writer.close().await;
        self.readers.close().await;
    }

    async fn insert(
        &self,
        new: &NewScenario,
        billing: Billing<'_>,
        max_active: Option<u64>,
    ) -> Result<Inserted, StoreError> {
        let (new, billing) = (new.clone(), OwnedBilling::from(billing));
        self.writer
            .run(move |c| scenarios::insert(c, &new, &billing, max_active))
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        // Reads the schema page from the file, on the connections every read uses.
        let read = self.readers.point(|c| {
            read::scalar(c, "SELECT count(*) FROM sqlite_master", [])?;
            Ok(())
        });
        let file = self.path.display();
        match tokio::time::timeout(crate::PING_TIMEOUT, read).await {
            Ok(Ok(())) => Ok(()),
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
        let found = self.get_any(id).await?;
        Ok(found.filter(|r| r.tenant_id == tenant_id))
    }

    async fn get_any(&self, id: &ScenarioId) -> Result<Option<ScenarioRecord>, StoreError> {
        let id = id.clone();
        self.readers.point(move |c| scenarios::fetch(c, &id)).await
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
            .run_atomic(move |c| scenarios::transition(c, &id, &allowed, to, error.as_deref()))
            .await
    }

    async fn list_by_status(
        &self,
        statuses: &[ScenarioStatus],
    ) -> Result<Vec<ScenarioRecord>, StoreError> {
        let statuses = statuses_json(statuses);
        self.readers
            .scan(move |c| scenarios::list_by_status(c, &statuses))
            .await
    }

    async fn list_for_tenant(
        &self,
        tenant_id: &str,
        statuses: &[ScenarioStatus],
        limit: u32,
    ) -> Result<Vec<ScenarioRecord>, StoreError> {
        let (tenant_id, statuses) = (tenant_id.to_owned(), statuses_json(statuses));
        self.readers
            .scan(move |c| scenarios::list_for_tenant(c, &tenant_id, &statuses, limit))
            .await
    }

    async fn extend(
        &self,
        id: &ScenarioId,
        by: Duration,
        cap: DateTime<Utc>,
    ) -> Result<ScenarioRecord, StoreError> {
        let (id, by, cap) = (id.clone(), dur_ms(by), ms(cap));
        self.writer
            .run_atomic(move |c| scenarios::extend(c, &id, by, cap))
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
                "UPDATE scenarios SET last_check = ? WHERE scenario_id = ? AND status = 'running'",
                (json, id.as_str().to_owned()),
            )
            .await?;
        Ok(changed > 0)
    }

    async fn count_active(&self, tenant_id: &str) -> Result<u64, StoreError> {
        let tenant_id = tenant_id.to_owned();
        self.readers
            .point(move |c| scenarios::count_active(c, &tenant_id))
            .await
    }

    async fn claim(&self, id: &ScenarioId, host_id: &str) -> Result<ScenarioRecord, StoreError> {
        let (id, host_id) = (id.clone(), host_id.to_owned());
        self.writer
            .run_atomic(move |c| hosts::claim(c, &id, &host_id))
            .await
    }

    async fn renew_lease(&self, host: &LabHost) -> Result<(), StoreError> {
        let host = host.clone();
        self.writer
            .run_atomic(move |c| hosts::renew(c, &host))
            .await
    }

    async fn lab_hosts(&self) -> Result<Vec<LabHost>, StoreError> {
        self.readers.scan(hosts::list).await
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
                "UPDATE scenarios SET network_id = ?, containers = ?, updated_at = ? \
                 WHERE scenario_id = ?",
                (
                    network_id.to_owned(),
                    containers,
                    ms(Utc::now()),
                    id.as_str().to_owned(),
                ),
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(())
    }

    async fn begin(&self, req: &IdempotencyBegin<'_>) -> Result<Began, StoreError> {
        let now = ms(req.now);
        let (t, k, h) = (
            req.tenant_id.to_owned(),
            req.key.to_owned(),
            req.request_hash.to_owned(),
        );
        // Straight to the writer, whose one statement claims a new key (the common case); a
        // read first to spare the writer replays and in-flight duplicates cost every new key a
        // read transaction, which showed in the front door's profile.
        let lease = now.saturating_add(dur_ms(req.lease));
        let expires = now.saturating_add(dur_ms(req.retention));
        self.writer
            .run_atomic(move |c| keys::begin(c, &t, &k, &h, now, lease, expires))
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
                "UPDATE idempotency_keys SET state = 'done', status_code = ?, \
                 response_body = ? WHERE tenant_id = ? AND key = ? AND state = 'in_flight'",
                (
                    i64::from(status),
                    body.to_vec(),
                    tenant_id.to_owned(),
                    key.to_owned(),
                ),
            )
            .await?;
        Ok(())
    }

    async fn abandon(&self, tenant_id: &str, key: &str) -> Result<(), StoreError> {
        self.writer
            .execute(
                "DELETE FROM idempotency_keys \
                 WHERE tenant_id = ? AND key = ? AND state = 'in_flight'",
                (tenant_id.to_owned(), key.to_owned()),
            )
            .await?;
        Ok(())
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let now = ms(now);
        self.writer
            .execute(
                "DELETE FROM idempotency_keys WHERE expires_at <= ? \
                 AND (state = 'done' OR locked_until <= ?)",
                (now, now),
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
            .run(move |c| keys::refund(c, &id, &reason, now))
            .await
    }

    async fn ledger(&self, query: &LedgerQuery) -> Result<Vec<Charge>, StoreError> {
        let query = query.clone();
        self.readers.scan(move |c| keys::ledger(c, &query)).await
    }

    async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.readers
            .scan(move |c| keys::due_outbox(c, now, limit))
            .await
    }

    async fn mark_delivered(&self, event_id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.writer
            .execute(
                "UPDATE outbox SET delivered_at = ?, last_error = NULL \
                 WHERE event_id = ? AND delivered_at IS NULL",
                (ms(now), event_id.to_owned()),
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
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, \
                 last_error = ? WHERE event_id = ? AND delivered_at IS NULL",
                (ms(next_attempt_at), error.to_owned(), event_id.to_owned()),
            )
            .await?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> Result<u64, StoreError> {
        self.readers.point(keys::outbox_backlog).await
    }

    async fn put_warm(&self, lab: &WarmLab) -> Result<(), StoreError> {
        let lab = lab.clone();
        self.writer.run(move |c| pools::put(c, &lab)).await
    }

    async fn take_warm(&self, template: &str, digest: &str) -> Result<Option<WarmLab>, StoreError> {
        let (template, digest) = (template.to_owned(), digest.to_owned());
        self.writer
            .run_atomic(move |c| pools::take(c, &template, &digest))
            .await
    }

    async fn remove_warm(&self, id: &ScenarioId) -> Result<bool, StoreError> {
        let changed = self
            .writer
            .execute(pools::REMOVE, (id.as_str().to_owned(),))
            .await?;
        Ok(changed > 0)
    }

    async fn list_warm(&self, host_id: Option<&str>) -> Result<Vec<WarmLab>, StoreError> {
        let host_id = host_id.map(str::to_owned);
        self.readers
            .scan(move |c| pools::list(c, host_id.as_deref()))
            .await
    }

    async fn pool_claims(&self) -> Result<Vec<PoolClaims>, StoreError> {
        self.readers.scan(pools::claims).await
    }

    async fn start_warm(&self, lab: &WarmLab) -> Result<ScenarioRecord, StoreError> {
        let lab = lab.clone();
        self.writer.run_atomic(move |c| pools::start(c, &lab)).await
    }
}
