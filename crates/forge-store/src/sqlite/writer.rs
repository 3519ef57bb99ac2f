//! The single writer connection, owned by a thread of its own, with group commit.
//!
//! SQLite has one writer at a time. Each logical write is sent here as a job (a synchronous
//! closure over the connection) and runs start to finish on this thread, which does nothing
//! else: no async runtime, a blocking `recv` for the next job, and the statements run in place
//! through `rusqlite` (no connection worker thread to hop to, unlike sqlx's driver, where each
//! statement cost two thread wake-ups). Were the connection instead borrowed by request tasks,
//! every statement of a transaction would wait its turn in the busy request runtime while
//! holding the write lock, leaving the writer idle in between.
//!
//! Group commit: the thread takes every job queued when it wakes (up to [`MAX_BATCH`]) and runs
//! them in one `BEGIN IMMEDIATE` transaction, so a burst of writes pays for one commit (one WAL
//! append of the pages they share) instead of one each. Each caller still gets its own result,
//! and only once the batch's `COMMIT` succeeded (a read after the answer sees the write). Errors
//! stay per job: a [`Writer::run`] job runs inside a savepoint of its own, rolled back when the
//! job fails, so its partial writes vanish and the other jobs of the batch are untouched; a
//! [`Writer::run_atomic`] job is atomic by itself (one statement that writes, which SQLite undoes
//! alone when it fails, or its own nested [`savepoint`]). A database-level failure
//! (`StoreError::Backend`) may have ended the whole transaction, so it closes the batch early:
//! what ran before it commits (or every one of them gets the commit's error), and the jobs still
//! queued go to the next batch. When the transaction itself fails (`BEGIN`, a savepoint, or
//! `COMMIT`), the connection is replaced by a fresh one rather than trusted in an unknown state.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::StoreError;

/// Most jobs one transaction takes: bounds how long the first caller of a batch waits.
const MAX_BATCH: usize = 256;

/// Prepared statements kept per connection: every query of the store fits, so none is ever
/// parsed twice.
pub(super) const STATEMENT_CACHE: usize = 64;

/// Hands a job's result to its caller once the batch is over: `None` when the batch committed,
/// else the error that lost the batch's writes.
type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// What a job reports back to the batch: whether it failed (its savepoint is rolled back),
/// whether that was at the database level (the batch must end), and how to deliver its result.
struct Ran {
    failed: bool,
    backend_error: bool,
    deliver: Deliver,
}

/// A job: given the connection, runs and reports; given an error, reports that, unrun.
type JobFn = Box<dyn FnOnce(Result<&Connection, StoreError>) -> Ran + Send>;

struct Job {
    /// Run inside a savepoint of its own (a multi-statement job), or as is (atomic by itself).
    savepoint: bool,
    f: JobFn,
}

enum Msg {
    Job(Job),
    Close(oneshot::Sender<()>),
}

/// Handle to the writer thread. Cheap to clone; the thread ends (closing the connection) when
/// the last handle is dropped or [`Writer::close`] is called.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

fn gone() -> StoreError {
    StoreError::Backend("the database writer has stopped".into())
}

/// A copy of a batch's error for each of its callers (`StoreError` is not `Clone`).
fn batch_error(e: &StoreError) -> StoreError {
    StoreError::Backend(format!("the write was not committed: {e}"))
}

/// Opens the writer connection: WAL (readers never wait for the writer), synchronous=NORMAL
/// (a commit survives a process crash; only an OS crash may lose the last transactions, and
/// never corrupts the file), a 5 s busy timeout, foreign keys on, no automatic checkpoints.
pub(super) fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Checkpoints run on their own thread (`checkpoint`): never an `fsync` inside a commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(
        None,
        "journal_size_limit",
        super::checkpoint::WAL_SIZE_LIMIT,
    )?;
    // Savepoints' statement journals in memory, not in a temporary file opened per batch.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Room for the indexes' hot pages (random keys touch many): 64 MiB.
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl Writer {
    /// Opens the connection on a new thread; returns once it is open.
    pub async fn start(path: &Path) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), StoreError>>();
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("forge-db-writer".into())
            .spawn(move || match open(&path) {
                Ok(conn) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(conn, &path, &rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(StoreError::Open {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    }));
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the database writer: {e}")))?;
        ready_rx.await.map_err(|_| gone())??;
        Ok(Self { tx })
    }

    /// Runs `f` on the writer connection, inside a savepoint of its own (its writes are rolled
    /// back when it returns an error), and returns its result once its batch committed.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(true, f).await
    }

    /// [`Writer::run`] for a job that is atomic by itself (its one statement that writes, or
    /// its own nested [`savepoint`]), sparing a savepoint's two statements.
    pub async fn run_atomic<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(false, f).await
    }

    /// Runs one statement on the writer connection and returns how many rows it changed. A
    /// single statement is atomic by itself, so it needs no savepoint of its own.
    pub async fn execute<P>(&self, sql: &'static str, params: P) -> Result<u64, StoreError>
    where
        P: rusqlite::Params + Send + 'static,
    {
        self.submit(false, move |c| {
            let n = c.prepare_cached(sql)?.execute(params)?;
            Ok(u64::try_from(n).unwrap_or(u64::MAX))
        })
        .await
    }

    async fn submit<T, F>(&self, savepoint: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let f: JobFn = Box::new(move |conn| {
            let result = conn.and_then(f);
            Ran {
                failed: result.is_err(),
                backend_error: matches!(result, Err(StoreError::Backend(_))),
                deliver: Box::new(move |lost: Option<&StoreError>| {
                    // A job that failed keeps its own error; one that succeeded in a batch that
                    // did not commit gets the batch's.
                    let result = match (lost, result) {
                        (Some(e), Ok(_)) => Err(batch_error(e)),
                        (_, r) => r,
                    };
                    let _ = done_tx.send(result);
                }),
            }
        });
        self.tx
            .send(Msg::Job(Job { savepoint, f }))
            .map_err(|_| gone())?;
        done_rx.await.map_err(|_| gone())?
    }

    /// Finishes queued jobs, then closes the connection.
    pub async fn close(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Msg::Close(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
    }
}

/// The writer thread's loop: a batch of whatever is queued, until closed.
fn serve(mut conn: Connection, path: &Path, rx: &mpsc::Receiver<Msg>) {
    let mut close = None;
    while close.is_none() {
        // Blocks the thread, which has nothing else to do; ends when every handle is gone.
        let Ok(first) = rx.recv() else { break };
        let mut jobs = VecDeque::new();
        match first {
            Msg::Job(j) => jobs.push_back(j),
            Msg::Close(done) => close = Some(done),
        }
        while close.is_none() && jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => jobs.push_back(j),
                Ok(Msg::Close(done)) => close = Some(done),
                Err(_) => break,
            }
        }
        while !jobs.is_empty() {
            if let Err(e) = batch(&conn, &mut jobs) {
                // The transaction's state is unknown: go on with a fresh connection (closing
                // this one rolls back whatever it left open) rather than issue statements into
                // this one.
                tracing::error!(error = %e, "a database write batch failed; reconnecting");
                drop(conn);
                conn = reconnect(path);
            }
        }
    }
    drop(conn);
    if let Some(done) = close {
        let _ = done.send(());
    }
}

/// A new writer connection, retrying until the database opens again.
fn reconnect(path: &Path) -> Connection {
    loop {
        match open(path) {
            Ok(c) => return c,
            Err(e) => {
                tracing::error!(error = %e, "cannot reopen the database writer; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// One statement that controls the transaction (cached: the writer issues them constantly).
fn control(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Runs jobs from the front of `jobs` in one transaction and delivers their results; stops
/// early after a job's database error, leaving the rest queued. `Err`: the connection must be
/// replaced (every result was delivered already).
fn batch(conn: &Connection, jobs: &mut VecDeque<Job>) -> Result<(), StoreError> {
    if let Err(e) = control(conn, "BEGIN IMMEDIATE") {
        // The first job gets the error (say, the database stayed locked past the busy timeout);
        // the others are tried in the next transaction, on a fresh connection in case this one
        // is what failed.
        if let Some(job) = jobs.pop_front() {
            ((job.f)(Err(batch_error(&e))).deliver)(None);
        }
        return Err(e);
    }
    let mut ran: Vec<Deliver> = Vec::with_capacity(jobs.len());
    let mut broken = None;
    while let Some(job) = jobs.pop_front() {
        let outcome = if job.savepoint {
            in_savepoint(conn, job.f)
        } else {
            Ok((job.f)(Ok(conn)))
        };
        match outcome {
            Ok(r) => {
                ran.push(r.deliver);
                if r.backend_error {
                    break;
                }
            }
            Err((r, e)) => {
                ran.push(r.deliver);
                broken = Some(e);
                break;
            }
        }
    }
    let committed = match broken {
        Some(e) => Err(e),
        None => control(conn, "COMMIT"),
    };
    match committed {
        Ok(()) => {
            for d in ran {
                d(None);
            }
            Ok(())
        }
        Err(e) => {
            for d in ran {
                d(Some(&e));
            }
            Err(e)
        }
    }
}

/// Runs `f` in a savepoint, released on success and rolled back on failure. `Err`: the
/// savepoint could not be opened or closed, so the transaction is in an unknown state.
fn in_savepoint(conn: &Connection, f: JobFn) -> Result<Ran, (Ran, StoreError)> {
    if let Err(e) = control(conn, "SAVEPOINT job") {
        return Err((f(Err(batch_error(&e))), e));
    }
    let r = f(Ok(conn));
    match end_savepoint(conn, !r.failed) {
        Ok(()) => Ok(r),
        Err(e) => Err((r, e)),
    }
}

/// Releases the innermost savepoint (`keep`), or rolls its writes back and releases it.
fn end_savepoint(conn: &Connection, keep: bool) -> Result<(), StoreError> {
    if !keep {
        control(conn, "ROLLBACK TO job")?;
    }
    control(conn, "RELEASE job")
}

/// Runs `f` in a savepoint of its own inside a job: the part of a [`Writer::run_atomic`] job
/// that writes more than once (its fast path stays a single statement). Nests in the batch's
/// transaction; SQLite resolves `ROLLBACK TO job` to the innermost savepoint of that name.
pub(super) fn savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    control(conn, "SAVEPOINT job")?;
    let r = f(conn);
    match end_savepoint(conn, r.is_ok()) {
        Ok(()) => r,
        // A failed release leaves the transaction in an unknown state: that error wins, so the
        // batch ends and the connection is replaced.
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn writer() -> (Writer, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let w = Writer::start(&dir.path().join("w.db")).await.unwrap();
        w.run(|c| {
            c.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY)")?;
            Ok(())
        })
        .await
        .unwrap();
        (w, dir)
    }

    fn insert(c: &Connection, k: &str) -> Result<(), StoreError> {
        c.execute("INSERT INTO t (k) VALUES (?)", [k])?;
        Ok(())
    }

    async fn keys(w: &Writer) -> Vec<String> {
        w.run_atomic(|c| {
            let mut s = c.prepare("SELECT k FROM t ORDER BY k")?;
            let rows = s.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
        .await
        .unwrap()
    }

    /// Jobs queued together share a batch; a failing job loses its own writes only, and a
    /// database error (here a constraint) ends the batch without losing the others' writes.
    #[tokio::test]
    async fn a_failed_job_rolls_back_alone() {
        let (w, _dir) = writer().await;
        let ok = |k: &'static str| {
            let w = w.clone();
            tokio::spawn(async move { w.run(move |c| insert(c, k)).await })
        };
        // Spawned in this order, so queued in this order (one runtime thread).
        let (a, b) = (ok("a"), ok("b"));
        let half = {
            let w = w.clone();
            tokio::spawn(async move {
                w.run(|c| {
                    insert(c, "half")?;
                    Err::<(), _>(StoreError::NotFound("x".into()))
                })
                .await
            })
        };
        let dup = {
            let w = w.clone();
            tokio::spawn(async move { w.execute("INSERT INTO t (k) VALUES ('a')", []).await })
        };
        assert!(a.await.unwrap().is_ok());
        assert!(b.await.unwrap().is_ok());
        assert!(matches!(half.await.unwrap(), Err(StoreError::NotFound(_))));
        assert!(matches!(dup.await.unwrap(), Err(StoreError::Backend(_))));
        assert_eq!(keys(&w).await, ["a", "b"]);
    }

    /// A nested savepoint undoes its writes on error and keeps them on success.
    #[tokio::test]
    async fn nested_savepoints_roll_back_their_own_writes() {
        let (w, _dir) = writer().await;
        let r = w
            .run_atomic(|c| {
                insert(c, "kept")?;
                let inner = savepoint(c, |c| {
                    insert(c, "undone")?;
                    Err::<(), _>(StoreError::NotFound("x".into()))
                });
                assert!(inner.is_err());
                savepoint(c, |c| insert(c, "nested"))
            })
            .await;
        assert!(r.is_ok());
        assert_eq!(keys(&w).await, ["kept", "nested"]);
        w.close().await;
        assert!(w.run_atomic(|_| Ok(())).await.is_err());
    }
}
