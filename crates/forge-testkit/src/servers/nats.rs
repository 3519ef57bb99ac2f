//! A real `nats-server` with JetStream for one test: a free loopback port, file storage in its
//! own temporary directory, and the process killed by its PID when the test is done.

use std::fs::File;
use std::io::Read as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `NATS_SERVER` if set, else Debian's package's (`/usr/sbin`; scripts/bootstrap.sh installs
/// it), else whatever `nats-server` is on the PATH.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return path.into();
    }
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| "nats-server".into())
}

pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port. The port is found by binding `127.0.0.1:0` and letting it
    /// go, so another process may take it in between: then the server exits and we try another.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            match spawn(port, dir.path()).await {
                Ok(child) => {
                    return Self {
                        child: Some(child),
                        port,
                        dir,
                    };
                }
                Err(e) => last_error = e,
            }
        }
        panic!("cannot start nats-server: {last_error}");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, by PID: no clean shutdown, nothing flushed but what the server already wrote.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is kill(pid, SIGKILL); `wait` reaps it, so the PID is not reused
            // under us and the port is free again.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store directory.
    pub async fn restart(&mut self) {
        self.kill();
        match spawn(self.port, self.dir.path()).await {
            Ok(child) => self.child = Some(child),
            Err(e) => panic!("cannot restart nats-server: {e}"),
        }
    }
}

/// Runs the server on `port` with its store and log in `dir`, and waits until it takes clients.
async fn spawn(port: u16, dir: &Path) -> Result<Child, String> {
    let log_path = dir.join("server.log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let mut child = Command::new(binary())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("jetstream"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary().display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("it exited with {status}:\n{log}"));
        }
        if greets(port) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no INFO on port {port} within 10 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server accepts clients once it sends its `INFO` line (JetStream is up before that).
fn greets(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut first = [0u8; 4];
    stream.read_exact(&mut first).is_ok() && &first == b"INFO"
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
