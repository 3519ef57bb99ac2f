//! Many lab hosts on one store and bus: two platforms, each with its own (fake) engine, share
//! the state store, the bus, the evidence store and the keys, as two `forge serve host`
//! processes share PostgreSQL and NATS. Capacity decides who pulls a spawn, a host that stops
//! renewing its lease loses its labs, a returning host reaps them, and lab actions reach the
//! owner whichever worker they are sent to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_lifecycle::orchestrator::HostConfig;
use forge_lifecycle::platform::{Backends, Platform};
use forge_runtime::Runtime;
use forge_runtime::fake::FakeRuntime;
use forge_testkit::servers::{NatsServer, TestDatabase};
use serde_json::json;

use crate::api::{Api, LEARNER_ROLES};
use crate::harness::{TEMPLATE, config, fake_runtime};

/// One lab host: a platform and its engine.
struct Host {
    platform: Platform,
    fake: FakeRuntime,
    api: Api,
}

struct Cluster {
    a: Host,
    b: Option<Host>,
    shared: Backends,
    dir: std::path::PathBuf,
    _tmp: tempfile::TempDir,
    /// The NATS and PostgreSQL servers of a distributed cluster.
    _servers: Option<(NatsServer, TestDatabase)>,
}

fn host_config(id: &str, capacity: u32, lease: Duration) -> HostConfig {
    HostConfig {
        id: id.into(),
        url: String::new(),
        runner_url: String::new(),
        capacity,
        lease,
    }
}

fn share(b: &Backends, runtime: Arc<dyn Runtime>) -> Backends {
    Backends {
        store: b.store.clone(),
        bus: b.bus.clone(),
        evidence: b.evidence.clone(),
        runtime: Some(runtime),
        audit_log: b.audit_log.clone(),
        opa: b.opa.clone(),
        policy: b.policy.clone(),
    }
}

/// A host on the cluster's backends: the very same objects, or, on NATS and PostgreSQL,
/// connections of its own to the same servers (as a process of its own would have).
async fn start_host(
    dir: &std::path::Path,
    shared: &Backends,
    servers: Option<&(NatsServer, TestDatabase)>,
    host: HostConfig,
    fake: FakeRuntime,
) -> Host {
    let mut cfg = config(dir);
    let audit = dir.join(format!("audit-{}.jsonl", host.id));
    cfg.orchestrator.host = host;
    let backends = match servers {
        None => share(shared, Arc::new(fake.clone())),
        Some((nats, db)) => {
            cfg.nats_url = Some(nats.url());
            cfg.database_url = Some(db.url());
            cfg.audit_log = Some(audit);
            Backends::local(&cfg, Arc::new(fake.clone()))
                .await
                .expect("host backends")
        }
    };
    let platform = Platform::start(cfg, backends).await.expect("host starts");
    let token = platform.mint("demo", LEARNER_ROLES, "learner-1").unwrap();
    let api = Api::new(&platform, token);
    Host {
        platform,
        fake,
        api,
    }
}

impl Cluster {
    /// Two hosts on SQLite and the in-process bus.
    async fn start(capacity: u32, lease: Duration) -> Self {
        Self::start_on(capacity, lease, None).await
    }

    /// Two hosts on NATS JetStream and PostgreSQL (servers started for the test).
    async fn start_distributed(capacity: u32, lease: Duration) -> Self {
        let servers = (NatsServer::start().await, TestDatabase::create().await);
        Self::start_on(capacity, lease, Some(servers)).await
    }

    async fn start_on(
        capacity: u32,
        lease: Duration,
        servers: Option<(NatsServer, TestDatabase)>,
    ) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let fake_a = fake_runtime();
        let mut cfg = config(&dir);
        if let Some((nats, db)) = &servers {
            cfg.nats_url = Some(nats.url());
            cfg.database_url = Some(db.url());
        }
        let shared = Backends::local(&cfg, Arc::new(fake_a.clone()))
            .await
            .expect("backends");
        let a = start_host(
            &dir,
            &shared,
            servers.as_ref(),
            host_config("host-a", capacity, lease),
            fake_a,
        )
        .await;
        let b = start_host(
            &dir,
            &shared,
            servers.as_ref(),
            host_config("host-b", capacity, lease),
            fake_runtime(),
        )
        .await;
        Self {
            a,
            b: Some(b),
            shared,
            dir,
            _tmp: tmp,
            _servers: servers,
        }
    }

    fn b(&self) -> &Host {
        self.b.as_ref().expect("host b is up")
    }

    async fn spawn(&self) -> String {
        self.a
            .api
            .spawn(json!({"track": "netplus", "template": TEMPLATE,
                          "request_id": uuid::Uuid::new_v4().to_string()}))
            .await
    }

    /// Scenario id → (status, host) for `ids`, from the shared store.
    async fn placement(&self, ids: &[String]) -> BTreeMap<String, (String, Option<String>)> {
        let mut out = BTreeMap::new();
        for id in ids {
            let rec = self
                .shared
                .store
                .get_any(&id.parse().unwrap())
                .await
                .unwrap()
                .unwrap();
            out.insert(id.clone(), (rec.status.to_string(), rec.host_id));
        }
        out
    }

    async fn wait_until<F>(&self, ids: &[String], within: Duration, what: &str, done: F)
    where
        F: Fn(&BTreeMap<String, (String, Option<String>)>) -> bool,
    {
        let start = Instant::now();
        loop {
            let p = self.placement(ids).await;
            if done(&p) {
                return;
            }
            assert!(
                start.elapsed() < within,
                "not {what} within {within:?}: {p:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        if let Some(b) = self.b {
            b.platform.shutdown().await;
        }
        self.a.platform.shutdown().await;
    }
}

fn count(
    p: &BTreeMap<String, (String, Option<String>)>,
    status: &str,
    host: Option<&str>,
) -> usize {
    p.values()
        .filter(|(s, h)| s == status && (host.is_none() || h.as_deref() == host))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_of_capacity_5_run_5_labs_each_and_2_spawns_wait_pending() {
    capacity_decides_who_pulls(Cluster::start(5, Duration::from_secs(30)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_nats_and_postgres_run_5_labs_each_and_2_spawns_wait_pending() {
    capacity_decides_who_pulls(Cluster::start_distributed(5, Duration::from_secs(30)).await).await;
}

/// 12 spawns on two hosts of capacity 5: 5 labs on each, 2 wait `pending` until a lab ends.
async fn capacity_decides_who_pulls(c: Cluster) {
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(c.spawn().await);
    }
    c.wait_until(&ids, Duration::from_secs(15), "10 running", |p| {
        count(p, "running", None) == 10
    })
    .await;
    // Full hosts pull nothing more: the last two stay pending.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let p = c.placement(&ids).await;
    assert_eq!(count(&p, "running", Some("host-a")), 5, "{p:?}");
    assert_eq!(count(&p, "running", Some("host-b")), 5, "{p:?}");
    assert_eq!(count(&p, "pending", None), 2, "{p:?}");
    assert_eq!(c.a.fake.labs().len(), 5);
    assert_eq!(c.b().fake.labs().len(), 5);
    assert_eq!(c.a.platform.orchestrator.as_ref().unwrap().labs_in_use(), 5);

    // Ending a lab on host b (through host a's API) frees a slot there: b tears its lab down
    // and takes one of the waiting spawns.
    let on_b = p
        .iter()
        .find(|(_, (s, h))| s == "running" && h.as_deref() == Some("host-b"))
        .map(|(id, _)| id.clone())
        .unwrap();
    assert_eq!(c.a.api.delete(&on_b).await, 200);
    c.wait_until(&ids, Duration::from_secs(10), "one more running", |p| {
        count(p, "running", Some("host-b")) == 5 && count(p, "pending", None) == 1
    })
    .await;
    let gone: forge_core::ScenarioId = on_b.parse().unwrap();
    assert!(!c.b().fake.labs().contains(&gone), "the ended lab is gone");
    assert_eq!(c.b().fake.labs().len(), 5);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_stops_renewing_loses_its_labs_and_reaps_them_when_it_returns() {
    let lease = Duration::from_secs(1);
    let mut c = Cluster::start(3, lease).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(c.spawn().await);
    }
    c.wait_until(&ids, Duration::from_secs(10), "6 running", |p| {
        count(p, "running", Some("host-a")) == 3 && count(p, "running", Some("host-b")) == 3
    })
    .await;

    // Host b goes away without a word (its labs stay on its engine).
    let b = c.b.take().unwrap();
    let fake_b = b.fake.clone();
    b.platform.shutdown().await;
    c.wait_until(&ids, Duration::from_secs(10), "b's labs failed", |p| {
        count(p, "failed", Some("host-b")) == 3
    })
    .await;
    let p = c.placement(&ids).await;
    assert_eq!(
        count(&p, "running", Some("host-a")),
        3,
        "a keeps its labs: {p:?}"
    );
    for (id, (_, host)) in &p {
        if host.as_deref() == Some("host-b") {
            let rec = c
                .shared
                .store
                .get_any(&id.parse().unwrap())
                .await
                .unwrap()
                .unwrap();
            let why = rec.error.unwrap_or_default();
            assert!(
                why.contains("lab host `host-b` stopped renewing its lease"),
                "{why}"
            );
        }
    }
    assert_eq!(fake_b.labs().len(), 3, "nobody else touches b's engine");

    // New spawns go to the host that is left (a ends one lab to make room).
    let first_a = p
        .iter()
        .find(|(_, (s, h))| s == "running" && h.as_deref() == Some("host-a"))
        .map(|(id, _)| id.clone())
        .unwrap();
    assert_eq!(c.a.api.delete(&first_a).await, 200);
    let new = vec![c.spawn().await];
    c.wait_until(&new, Duration::from_secs(10), "running on a", |p| {
        count(p, "running", Some("host-a")) == 1
    })
    .await;

    // Host b returns: it removes the labs it no longer owns.
    let b = start_host(
        &c.dir,
        &c.shared,
        c._servers.as_ref(),
        host_config("host-b", 3, lease),
        fake_b,
    )
    .await;
    assert_eq!(
        b.platform.recovered.orphans_removed.len(),
        3,
        "{:?}",
        b.platform.recovered
    );
    assert!(b.fake.labs().is_empty());
    c.b = Some(b);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exec_and_terminal_reach_the_host_that_owns_the_lab() {
    let c = Cluster::start(1, Duration::from_secs(30)).await;
    let ids = vec![c.spawn().await, c.spawn().await];
    c.wait_until(&ids, Duration::from_secs(10), "both running", |p| {
        count(p, "running", Some("host-a")) == 1 && count(p, "running", Some("host-b")) == 1
    })
    .await;
    let p = c.placement(&ids).await;
    let on_b = p
        .iter()
        .find(|(_, (_, h))| h.as_deref() == Some("host-b"))
        .map(|(id, _)| id.clone())
        .unwrap();

    // Through host a's worker, the lab on host b is solved and checked.
    for cmd in crate::harness::SOLUTION {
        let out = c.a.api.exec(&on_b, cmd).await;
        assert_eq!(out["exit_code"], 0, "{out}");
    }
    let report = c.a.api.check(&on_b).await;
    assert_eq!(report["passed"], report["total"], "{report}");
    let on_b_id: forge_core::ScenarioId = on_b.parse().unwrap();
    assert!(
        c.b()
            .fake
            .exec_calls()
            .iter()
            .any(|e| e.scenario == on_b_id),
        "the commands ran on host b's engine"
    );
    assert!(!c.a.fake.exec_calls().iter().any(|e| e.scenario == on_b_id));

    // A stranger is refused by the owner exactly as by a direct call.
    let other = c.a.api.with_token(
        c.a.platform
            .mint("other", LEARNER_ROLES, "mallory")
            .unwrap(),
    );
    let (code, _) = other.post_worker(&on_b, "check", None).await;
    assert_eq!(code, 404);

    // The terminal is relayed frame by frame.
    let url = format!(
        "{}/v1/scenarios/{on_b}/terminal?access_token={}",
        c.a.api.worker.replace("http://", "ws://"),
        c.a.api.token
    );
    crate::harness::terminal_echoes(url, (99, 33), "echo relayed").await;
    assert!(c.b().fake.tty_sizes().contains(&(99, 33)));

    // An instructor's playbook through host a's runner runs in host b's lab.
    let teacher = c.a.api.with_token(
        c.a.platform
            .mint("demo", &["forge.instructor"], "teacher")
            .unwrap(),
    );
    let before = c.b().fake.exec_calls().len();
    let playbook = json!({"scenario_id": on_b, "playbook": {"playbook": [
        {"step": "execute_command", "container": "workstation", "command": "cat /tmp/flag",
         "expect": {"exit_code": 0}}
    ]}});
    let r = teacher
        .http
        .post(format!(
            "{}/v1/playbooks/run",
            c.a.platform.url(forge_http::Service::Runner)
        ))
        .bearer_auth(&teacher.token)
        .json(&playbook)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        report["passed"], true,
        "the flag was written on b: {report}"
    );
    assert!(c.b().fake.exec_calls().len() > before);

    // Submitted through host a, it is evaluated by host b and scored.
    c.a.api.submit(&on_b).await;
    let score = c.a.api.wait_score(&on_b, Duration::from_secs(10)).await;
    assert_eq!(score["score"]["passed"], 3, "{score}");
    c.stop().await;
}
