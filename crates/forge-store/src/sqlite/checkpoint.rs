//! WAL checkpoints on a thread of their own, never on the writer's.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that pushes the WAL past 1,000 pages,
//! on the writing connection: it copies the WAL back into the database file and `fsync`s both,
//! which takes milliseconds of disk time. On the writer thread that stalls every write queued
//! behind it (profiling the front door showed the writer blocked in `fsync` a large part of its
//! time while the CPUs idled). So the writer turns automatic checkpoints off and this thread
//! runs a `PASSIVE` checkpoint every [`INTERVAL`] on a connection of its own: passive
//! checkpoints never block the writer or the readers (they copy what no reader still needs and
//! leave the rest for the next round), and once a round copied everything, the writer's next
//! transaction starts the WAL over from its beginning. `journal_size_limit` keeps the WAL file
//! from staying at its largest size after a burst.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is copied back into the database file.
pub(super) const INTERVAL: Duration = Duration::from_millis(200);

/// The size the WAL file is cut back to after a checkpoint that let the writer start over.
pub(super) const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The checkpoint thread; stops when [`Checkpointer::stop`] is called or it is dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on a connection of its own to `path`; `Err` says why it could not.
    pub fn start(path: &Path) -> Result<Self, String> {
        let conn = Connection::open(path).map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("forge-db-checkpoint".into())
            .spawn(move || {
                // A message or a dropped sender both mean stop; only the timeout means work.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    if let Err(e) = checkpoint(&conn) {
                        tracing::warn!(error = %e, "a database checkpoint failed; retrying later");
                    }
                }
            })
            .map_err(|e| format!("cannot start the checkpoint thread: {e}"))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (at most one checkpoint in progress).
    pub fn stop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One passive checkpoint. `Ok` also when readers kept part of the WAL (the next round goes on).
fn checkpoint(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}
