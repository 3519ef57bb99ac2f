//! The single writer connection, owned by a thread of its own, with group commit.
//!
//! SQLite has one writer at a time. Each logical write is sent here as a job and runs start to
//! finish on this thread's own single-task runtime. Were the connection instead borrowed by
//! request tasks, every statement of a transaction would wait its turn in the busy request
//! runtime while holding the write lock, leaving the writer idle in between.
//!
//! Group commit: the thread takes every job queued when it wakes (up to [`MAX_BATCH`]) and runs
//! them in one `BEGIN IMMEDIATE` transaction, so a burst of writes pays for one commit (one WAL
//! append of the pages they share) instead of one each. Each caller still gets its own result,
//! and only once the batch's `COMMIT` succeeded (a read after the answer sees the write). Errors
//! stay per job: a [`Writer::run`] job runs inside a savepoint of its own, rolled back when the
//! job fails, so its partial writes vanish and the other jobs of the batch are untouched; a
//! [`Writer::execute`] statement is atomic by itself (SQLite undoes a failed statement alone).
//! A database-level failure (`StoreError::Backend`) may have ended the whole transaction, so it
//! closes the batch early: what ran before it commits (or every one of them gets the commit's
//! error), and the jobs still queued go to the next batch.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Sqlite};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A statement with its arguments bound (sqlx copies them in, so it borrows nothing).
pub(crate) type SqliteQuery = Query<'static, Sqlite, SqliteArguments>;

/// Most jobs one transaction takes: bounds how long the first caller of a batch waits.
const MAX_BATCH: usize = 256;

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
type JobFn = Box<
    dyn for<'c> FnOnce(Result<&'c mut SqliteConnection, StoreError>) -> BoxFuture<'c, Ran> + Send,
>;

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
    tx: mpsc::UnboundedSender<Msg>,
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

impl Writer {
    /// Connects on a new thread; returns once the connection is open.
    pub async fn start(opts: SqliteConnectOptions) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel::<Msg>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), StoreError>>();
        std::thread::Builder::new()
            .name("forge-db-writer".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StoreError::Backend(e.to_string())));
                        return;
                    }
                };
                rt.block_on(async move {
                    let conn = match opts.connect().await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    serve(conn, opts, rx).await;
                });
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
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        self.submit(true, f).await
    }

    /// [`Writer::run`] for a job that is atomic by itself (its one statement that writes, or
    /// its own nested `Connection::begin`), sparing a savepoint's two statements.
    pub async fn run_atomic<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        self.submit(false, f).await
    }

    /// Runs one statement on the writer connection and returns how many rows it changed. A
    /// single statement is atomic by itself, so it needs no savepoint of its own.
    pub async fn execute(&self, query: SqliteQuery) -> Result<u64, StoreError> {
        self.submit(false, move |c| {
            Box::pin(async move { Ok(query.execute(&mut *c).await?.rows_affected()) })
        })
        .await
    }

    async fn submit<T, F>(&self, savepoint: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let f: JobFn = Box::new(move |conn| {
            Box::pin(async move {
                let result = match conn {
                    Ok(c) => f(c).await,
                    Err(e) => Err(e),
                };
                Ran {
                    failed: result.is_err(),
                    backend_error: matches!(result, Err(StoreError::Backend(_))),
                    deliver: Box::new(move |lost: Option<&StoreError>| {
                        // A job that failed keeps its own error; one that succeeded in a batch
                        // that did not commit gets the batch's.
                        let result = match (lost, result) {
                            (Some(e), Ok(_)) => Err(batch_error(e)),
                            (_, r) => r,
                        };
                        let _ = done_tx.send(result);
                    }),
                }
            })
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
async fn serve(
    mut conn: SqliteConnection,
    opts: SqliteConnectOptions,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) {
    let mut close = None;
    while close.is_none() {
        let Some(first) = rx.recv().await else { break };
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
            if let Err(e) = batch(&mut conn, &mut jobs).await {
                // The transaction's state is unknown (sqlx counts nesting itself): go on with a
                // fresh connection rather than issue statements into this one.
                tracing::error!(error = %e, "a database write batch failed; reconnecting");
                let _ = conn.close().await;
                conn = reconnect(&opts).await;
            }
        }
    }
    let _ = conn.close().await;
    if let Some(done) = close {
        let _ = done.send(());
    }
}

/// A new writer connection, retrying until the database opens again.
async fn reconnect(opts: &SqliteConnectOptions) -> SqliteConnection {
    loop {
        match opts.connect().await {
            Ok(c) => return c,
            Err(e) => {
                tracing::error!(error = %e, "cannot reopen the database writer; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Runs jobs from the front of `jobs` in one transaction and delivers their results; stops
/// early after a job's database error, leaving the rest queued. `Err`: the connection must be
/// replaced (every result was delivered already).
async fn batch(conn: &mut SqliteConnection, jobs: &mut VecDeque<Job>) -> Result<(), StoreError> {
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            // The first job gets the error (say, the database stayed locked past the busy
            // timeout); the others are tried in the next transaction, on a fresh connection in
            // case this one is what failed.
            let e = StoreError::from(e);
            if let Some(job) = jobs.pop_front() {
                ((job.f)(Err(batch_error(&e))).await.deliver)(None);
            }
            return Err(e);
        }
    };
    let mut ran: Vec<Deliver> = Vec::with_capacity(jobs.len());
    let mut broken = None;
    while let Some(job) = jobs.pop_front() {
        let outcome = if job.savepoint {
            in_savepoint(&mut tx, job.f).await
        } else {
            Ok((job.f)(Ok(&mut *tx)).await)
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
        None => tx.commit().await.map_err(StoreError::from),
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
async fn in_savepoint(conn: &mut SqliteConnection, f: JobFn) -> Result<Ran, (Ran, StoreError)> {
    let mut sp = match conn.begin().await {
        Ok(sp) => sp,
        Err(e) => {
            let e = StoreError::from(e);
            return Err((f(Err(batch_error(&e))).await, e));
        }
    };
    let r = f(Ok(&mut *sp)).await;
    let closed = if r.failed {
        sp.rollback().await
    } else {
        sp.commit().await
    };
    match closed {
        Ok(()) => Ok(r),
        Err(e) => Err((r, e.into())),
    }
}
