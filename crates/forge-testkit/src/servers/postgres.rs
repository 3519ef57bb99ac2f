//! A throwaway PostgreSQL server for the tests, and a fresh database per test on it.
//!
//! The server is Debian's (`/usr/lib/postgresql/<major>/bin`, the highest major installed;
//! scripts/bootstrap.sh installs it). One server serves every test of the binary that runs at
//! the same time: the tests hold it through an `Arc`, and the last one to finish stops it (by
//! its postmaster PID) and removes its directory, so a later test starts another. PostgreSQL
//! refuses to run as root, so as root `initdb` and `postgres` run as the `postgres` system user
//! (the package creates it), on a temporary directory handed to that user. It listens on
//! 127.0.0.1 only, on a free port, with trust authentication, and trades durability for speed
//! (`fsync=off`): the data lives only as long as the test.

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// Where Debian installs each major version's server binaries.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";
/// How long the server may take to accept connections, or to stop.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running server, stopped on drop.
pub struct PgServer {
    postmaster: Child,
    port: u16,
    // Dropped after `drop` below has stopped the server: removes data, socket and log.
    _dir: tempfile::TempDir,
}

/// Who runs the server: the `postgres` user when we are root, else ourselves.
struct RunAs {
    uid: Uid,
    gid: Gid,
}

fn run_as() -> Result<Option<RunAs>, String> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")
        .map_err(|e| format!("cannot look up the postgres user: {e}"))?
        .ok_or("PostgreSQL refuses to run as root and there is no `postgres` user to run it as")?;
    Ok(Some(RunAs {
        uid: user.uid,
        gid: user.gid,
    }))
}

/// The `bin` directory of the highest PostgreSQL major version installed.
fn bin_dir() -> Result<PathBuf, String> {
    let entries = fs::read_dir(DEBIAN_ROOT).map_err(|e| {
        format!("no PostgreSQL under {DEBIAN_ROOT} ({e}); scripts/bootstrap.sh installs it")
    })?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file()).then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no {DEBIAN_ROOT}/<major>/bin with initdb and postgres"))
}

/// A command that runs as `who`, in `dir` (a root-only working directory would stop it).
fn command(bin: &Path, who: &Option<RunAs>, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir).stdin(Stdio::null());
    if let Some(who) = who {
        cmd.uid(who.uid.as_raw()).gid(who.gid.as_raw());
    }
    cmd
}

fn give_to(path: &Path, who: &Option<RunAs>) -> Result<(), String> {
    match who {
        Some(who) => chown(path, Some(who.uid.as_raw()), Some(who.gid.as_raw()))
            .map_err(|e| format!("cannot hand {} to the postgres user: {e}", path.display())),
        None => Ok(()),
    }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn tail(path: &Path) -> String {
    let log = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl PgServer {
    /// Creates a cluster and starts a server on it; returns once it accepts connections.
    pub fn start() -> Result<Self, String> {
        let bin = bin_dir()?;
        let who = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("forge-pg-")
            .tempdir()
            .map_err(|e| format!("cannot make a temp dir: {e}"))?;
        let (data, socket) = (dir.path().join("data"), dir.path().join("socket"));
        fs::create_dir(&socket).map_err(|e| format!("cannot make the socket dir: {e}"))?;
        give_to(dir.path(), &who)?;
        give_to(&socket, &who)?;

        let log_path = dir.path().join("initdb.log");
        let log = File::create(&log_path).map_err(|e| e.to_string())?;
        let status = command(&bin.join("initdb"), &who, dir.path())
            .arg("--pgdata")
            .arg(&data)
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            // no locale to depend on; no fsync for a cluster that lives one test run
            .args(["--no-locale", "--no-sync"])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .status()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !status.success() {
            return Err(format!("initdb failed ({status}):\n{}", tail(&log_path)));
        }

        // A port free a moment ago may be taken by the time the server binds it: try again.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let log_path = dir.path().join(format!("postgres-{port}.log"));
            let log = File::create(&log_path).map_err(|e| e.to_string())?;
            let mut postmaster = command(&bin.join("postgres"), &who, dir.path())
                .arg("-D")
                .arg(&data)
                .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
                .arg("-k")
                .arg(&socket)
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot run postgres: {e}"))?;
            match wait_ready(&mut postmaster, &bin, port) {
                Ok(()) => {
                    return Ok(PgServer {
                        postmaster,
                        port,
                        _dir: dir,
                    });
                }
                Err(e) => last_error = format!("{e}:\n{}", tail(&log_path)),
            }
            // Stop whatever is left of this attempt; the cluster serves the next one.
            stop(&mut postmaster);
        }
        Err(format!("postgres did not start: {last_error}"))
    }

    /// The url of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        stop(&mut self.postmaster);
    }
}

/// Waits until the server on `port` accepts connections, or has exited.
fn wait_ready(postmaster: &mut Child, bin: &Path, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = postmaster.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("postgres exited ({status})"));
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("postgres not ready after {PATIENCE:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fast shutdown (SIGINT to the postmaster's PID: sessions are ended, nothing waits for
/// clients), then SIGKILL if it has not exited in time.
fn stop(postmaster: &mut Child) {
    if !matches!(postmaster.try_wait(), Ok(None)) {
        return;
    }
    let pid = Pid::from_raw(i32::try_from(postmaster.id()).expect("pids fit in i32"));
    let _ = kill(pid, Signal::SIGINT);
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if !matches!(postmaster.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = postmaster.kill();
    let _ = postmaster.wait();
}

/// The server the running tests share (see the module docs).
static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());

fn shared_server() -> Arc<PgServer> {
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(PgServer::start().unwrap_or_else(|e| panic!("{e}")));
    *slot = Arc::downgrade(&server);
    server
}

/// A database of its own for one test, on the shared server, which it keeps running.
pub struct TestDatabase {
    name: String,
    server: Arc<PgServer>,
}

impl TestDatabase {
    pub async fn create() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let server = tokio::task::spawn_blocking(shared_server)
            .await
            .expect("starting postgres panicked");
        let name = format!("forge_test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let mut admin = PgConnection::connect(&server.url("postgres"))
            .await
            .expect("connect to the test server");
        // The name is ours (a counter), not input: safe to splice.
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        Self { name, server }
    }

    pub fn url(&self) -> String {
        self.server.url(&self.name)
    }
}
