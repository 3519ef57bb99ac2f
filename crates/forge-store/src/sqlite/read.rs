//! The read connections, and the row helpers every SQLite query uses.
//!
//! Reads never wait for the writer (WAL), so they run on connections of their own: a few, each
//! behind a `std::sync::Mutex`, opened `query_only`. A point read (one row by key, a count)
//! runs inline in the calling task on whichever connection is free: it takes microseconds, far
//! less than handing it to another thread and waking the task again, which is what each
//! statement cost through sqlx's per-connection worker threads. Only when every connection is
//! busy does it move to `spawn_blocking`, so a task never blocks waiting for a lock. A read
//! that can return many rows (lists, the ledger, the outbox) always runs under
//! `spawn_blocking`, so a large result never stalls the request runtime's thread.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Params, Row};

use crate::StoreError;

/// Read connections kept open.
pub(super) const READERS: usize = 4;

/// The read connections; `None` once the store is closed.
pub(super) struct Readers {
    conns: Box<[Mutex<Option<Connection>>]>,
    /// Where the next read starts looking for a free connection (round robin).
    next: AtomicUsize,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Readers")
    }
}

fn closed() -> StoreError {
    StoreError::Backend("the database is closed".into())
}

/// A read connection: the file exists (migrations ran), so no create; `query_only`, so a bug
/// cannot write around the writer.
fn open_one(path: &Path) -> Result<Connection, rusqlite::Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "query_only", true)?;
    conn.set_prepared_statement_cache_capacity(super::writer::STATEMENT_CACHE);
    Ok(conn)
}

/// Runs `f` on the connection under `guard`, unless the store was closed.
fn with<T>(
    guard: MutexGuard<'_, Option<Connection>>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    guard.as_ref().map_or_else(|| Err(closed()), f)
}

impl Readers {
    pub fn open(path: &Path, n: usize) -> Result<Self, rusqlite::Error> {
        let conns = (0..n)
            .map(|_| open_one(path).map(|c| Mutex::new(Some(c))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            conns: conns.into(),
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `f` now on a free connection, or gives it back when every one is busy. A poisoned
    /// lock is taken anyway: rusqlite resets a statement when it is dropped, even by a panic.
    fn try_now<T, F>(&self, f: F) -> Result<Result<T, StoreError>, F>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError>,
    {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            match self.conns[(start + i) % n].try_lock() {
                Ok(guard) => return Ok(with(guard, f)),
                Err(TryLockError::Poisoned(p)) => return Ok(with(p.into_inner(), f)),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        Err(f)
    }

    /// Runs `f` on a free connection, waiting for one when all are busy (blocking the thread).
    fn run_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError>,
    {
        match self.try_now(f) {
            Ok(r) => r,
            Err(f) => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
                with(
                    self.conns[i].lock().unwrap_or_else(PoisonError::into_inner),
                    f,
                )
            }
        }
    }

    /// A point read: inline on a free connection, else on a blocking thread.
    pub async fn point<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        match self.try_now(f) {
            Ok(r) => r,
            Err(f) => self.scan(f).await,
        }
    }

    /// A read that may return many rows: always on a blocking thread.
    pub async fn scan<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.run_blocking(f))
            .await
            .map_err(|e| StoreError::Backend(format!("a database read did not finish: {e}")))?
    }

    /// Closes every connection once its current read is over; later reads fail.
    pub async fn close(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || {
            for c in me.conns.iter() {
                drop(c.lock().unwrap_or_else(PoisonError::into_inner).take());
            }
        })
        .await;
    }
}

/// The first row `sql` returns, decoded by `f` (a cached statement).
pub(super) fn one<T, P: Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    match rows.next()? {
        Some(r) => f(r).map(Some),
        None => Ok(None),
    }
}

/// Every row `sql` returns, decoded by `f` (a cached statement).
pub(super) fn all<T, P: Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    mut f: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(f(r)?);
    }
    Ok(out)
}

/// Runs a statement that changes rows; how many it changed.
pub(super) fn exec<P: Params>(conn: &Connection, sql: &str, params: P) -> Result<u64, StoreError> {
    let n = conn.prepare_cached(sql)?.execute(params)?;
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

/// The single value of the first row (`SELECT COUNT(*)`, a counter by key).
pub(super) fn scalar<P: Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> Result<Option<i64>, StoreError> {
    one(conn, sql, params, |r| Ok(r.get(0)?))
}
