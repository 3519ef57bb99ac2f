//! Readiness on the real engine (issue 14): `/ready` of the orchestrator turns 503 naming
//! `engine` within 5 s of losing the Docker Engine and 200 again within 5 s of getting it back.
//!
//! The daemon itself is shared with every other test on this host, so it is not stopped: the
//! platform reaches the engine through a unix-socket proxy this test runs in front of it
//! ([`EngineProxy`]), and the test stops and restarts the proxy instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_http::Service;
use forge_lifecycle::platform::{Backends, Platform};
use forge_runtime::{DockerRuntime, Runtime};
use serde_json::Value;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::common::{self, Cleanup};

/// The engine's socket: `DOCKER_HOST` when it is a unix socket, else Docker's default.
fn engine_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// A unix socket at `path` whose every connection is forwarded to the engine's socket. Stopping
/// it closes the listener, ends every forwarded connection and removes the socket file, so to
/// a client of `path` the engine is gone.
struct EngineProxy {
    path: PathBuf,
    accept: Option<JoinHandle<()>>,
}

impl EngineProxy {
    fn start(path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind the proxy socket");
        let engine = engine_socket();
        let accept = tokio::spawn(async move {
            // Dropped with this task when the proxy stops: that aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let engine = engine.clone();
                connections.spawn(async move {
                    if let Ok(mut upstream) = UnixStream::connect(&engine).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            path: path.to_owned(),
            accept: Some(accept),
        }
    }

    /// Closes the listener and every connection, and waits until they are gone.
    async fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn ready(http: &reqwest::Client, platform: &Platform, service: Service) -> (u16, Value) {
    let r = http
        .get(format!("{}/ready", platform.url(service)))
        .send()
        .await
        .expect("/ready answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

/// Polls the orchestrator's `/ready` until it answers `want`; fails after 5 s.
async fn orchestrator_becomes(http: &reqwest::Client, platform: &Platform, want: u16) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = ready(http, platform, Service::Orchestrator).await;
        if status == want {
            eprintln!("/ready answered {want} after {:?}: {body}", start.elapsed());
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the orchestrator's /ready is not {want} within 5 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_engine() {
    let run = common::new_run_id();
    // Labels and cleans up whatever the run leaves (it launches no lab).
    let _cleanup = Cleanup::new(&run);
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("engine.sock");
    let mut proxy = EngineProxy::start(&socket);

    let mut cfg = common::config(&dir.path().join("data"), &run);
    cfg.build_images = false;
    let runtime = DockerRuntime::connect_at(&socket)
        .await
        .expect("the engine through the proxy");
    let runtime: Arc<dyn Runtime> = Arc::new(runtime);
    let backends = Backends::local(&cfg, runtime).await.expect("backends");
    let platform = Platform::start(cfg, backends)
        .await
        .expect("platform starts");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let (status, body) = ready(&http, &platform, Service::Orchestrator).await;
    assert_eq!(status, 200, "{body}");
    for check in ["engine", "store", "bus", "policy"] {
        assert_eq!(body["checks"][check], "ok", "{body}");
    }

    proxy.stop().await;
    let body = orchestrator_becomes(&http, &platform, 503).await;
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    let engine = body["checks"]["engine"].as_str().unwrap_or_default();
    assert!(engine.contains("docker engine"), "{body}");
    assert_eq!(body["checks"]["store"], "ok", "{body}");
    // The front door does not depend on the engine.
    let (status, body) = ready(&http, &platform, Service::Spawn).await;
    assert_eq!(status, 200, "{body}");

    let _proxy = EngineProxy::start(&socket);
    let body = orchestrator_becomes(&http, &platform, 200).await;
    assert_eq!(body["checks"]["engine"], "ok", "{body}");

    platform.shutdown().await;
}
