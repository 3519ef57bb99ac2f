//! The single writer connection, owned by a thread of its own.
//!
//! SQLite has one writer at a time. Each logical write (a whole transaction) is sent here as a
//! job and runs start to finish on this thread's own single-task runtime. Were the connection
//! instead borrowed by request tasks, every statement of a transaction would wait its turn in
//! the busy request runtime while holding the write lock, leaving the writer idle in between.

use std::future::Future;
use std::pin::Pin;

use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Sqlite};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A statement with its arguments bound (sqlx copies them in, so it borrows nothing).
pub(crate) type SqliteQuery = Query<'static, Sqlite, SqliteArguments>;

type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, ()> + Send>;

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

impl Writer {
    /// Connects on a new thread; returns once the connection is open.
    pub async fn start(opts: SqliteConnectOptions) -> Result<Self, StoreError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
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
                    let mut conn = match opts.connect().await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    while let Some(msg) = rx.recv().await {
                        match msg {
                            Msg::Job(job) => job(&mut conn).await,
                            Msg::Close(done) => {
                                let _ = sqlx::Connection::close(conn).await;
                                let _ = done.send(());
                                return;
                            }
                        }
                    }
                    let _ = sqlx::Connection::close(conn).await;
                });
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the database writer: {e}")))?;
        ready_rx.await.map_err(|_| gone())??;
        Ok(Self { tx })
    }

    /// Runs `f` on the writer connection and returns its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let _ = done_tx.send(f(conn).await);
            })
        });
        self.tx.send(Msg::Job(job)).map_err(|_| gone())?;
        done_rx.await.map_err(|_| gone())?
    }

    /// Runs one statement on the writer connection and returns how many rows it changed. A
    /// single statement is atomic by itself, so the many one-statement writes need no job of
    /// their own: their query, arguments bound, is the whole job.
    pub async fn execute(&self, query: SqliteQuery) -> Result<u64, StoreError> {
        self.run(move |c| {
            Box::pin(async move { Ok(query.execute(&mut *c).await?.rows_affected()) })
        })
        .await
    }

    /// Finishes queued jobs, then closes the connection.
    pub async fn close(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Msg::Close(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
    }
}
