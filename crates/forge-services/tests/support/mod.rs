//! Test harness: the real spawn service on 127.0.0.1:0 with SQLite in a temp dir, the in-process
//! bus, a memory audit sink and a gate the test controls; tokens minted like `forge token mint`.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use forge_auth::{AuthConfig, JwksConfig, JwksSource, LocalIssuer, Verifier};
use forge_bus::MemoryBus;
use forge_catalog::Catalog;
use forge_core::audit::MemoryAuditSink;
use forge_services::billing::BillingConfig;
use forge_services::spawn::{self, SpawnConfig, SpawnDeps, SpawnGate, SpawnState, StaticGate};
use forge_services::tenants::TenantDirectory;
use forge_store::{SqliteStore, Store};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const RSA_A: &str = include_str!("../../../forge-auth/tests/fixtures/rsa-a.pem");
pub const RSA_A_PUB: &str = include_str!("../../../forge-auth/tests/fixtures/rsa-a.pub.pem");
pub const RSA_B: &str = include_str!("../../../forge-auth/tests/fixtures/rsa-b.pem");
pub const ED: &str = include_str!("../../../forge-auth/tests/fixtures/ed25519.pem");

/// Tenants of the tests: `acme` bursts (small bucket), `globex` is steady, `tiny` has a quota
/// of two labs and netplus only, `demo` is the example's.
pub const TENANTS: &str = r#"
currency = "usd"

[plans.burst]
entitled_tracks = ["netplus", "ccna", "cissp"]
max_active_scenarios = 1000
rate = { requests_per_second = 2.0, burst = 5 }
prices.netplus = { intermediate = 250, default = 100 }
prices.ccna = { default = 400 }
prices.cissp = { default = 800 }

[plans.steady]
entitled_tracks = ["netplus", "ccna", "cissp"]
max_active_scenarios = 1000
rate = { requests_per_second = 100.0, burst = 20 }
prices.netplus = { default = 150 }
prices.ccna = { default = 400 }
prices.cissp = { default = 800 }

[plans.small]
entitled_tracks = ["netplus"]
max_active_scenarios = 2
rate = { requests_per_second = 100.0, burst = 100 }
prices.netplus = { default = 50 }

[plans.demo]
entitled_tracks = ["netplus", "ccna", "cissp"]
max_active_scenarios = 100000
rate = { requests_per_second = 100000.0, burst = 100000 }
prices.netplus = { default = 0 }
prices.ccna = { default = 0 }
prices.cissp = { default = 0 }

[tenants.acme]
plan = "burst"
[tenants.globex]
plan = "steady"
[tenants.tiny]
plan = "small"
[tenants.demo]
plan = "demo"
"#;

/// Which keys the service accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Local HS256 only (the data dir's secret).
    Local,
    /// JWKS only (rsa-a as RS256, ed-1 as EdDSA).
    Jwks,
}

pub struct Options {
    pub keys: Keys,
    pub gate: Arc<dyn SpawnGate>,
    pub bus: Option<Arc<dyn forge_bus::Bus>>,
    pub billing: BillingConfig,
    pub config: SpawnConfig,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            keys: Keys::Local,
            gate: Arc::new(StaticGate::like_policy()),
            bus: None,
            billing: BillingConfig::default(),
            config: SpawnConfig::default(),
        }
    }
}

pub struct Harness {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<SqliteStore>,
    pub bus: MemoryBus,
    pub audit: Arc<MemoryAuditSink>,
    pub dir: tempfile::TempDir,
    issuer: LocalIssuer,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

pub fn jwks_document() -> String {
    let jwk = |pem: &str, alg: Algorithm, kid: &str| {
        let key = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        };
        let mut j = Jwk::from_encoding_key(&key, alg).unwrap();
        j.common.key_id = Some(kid.to_owned());
        j
    };
    serde_json::to_string(&JwkSet {
        keys: vec![
            jwk(RSA_A, Algorithm::RS256, "rsa-a"),
            jwk(ED, Algorithm::EdDSA, "ed-1"),
        ],
    })
    .unwrap()
}

impl Harness {
    pub async fn start(opts: Options) -> Self {
        forge_auth::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let mut auth = AuthConfig::local(dir.path()).unwrap();
        if opts.keys == Keys::Jwks {
            let path = dir.path().join("jwks.json");
            std::fs::write(&path, jwks_document()).unwrap();
            auth.hs256_secret = None;
            auth.jwks = Some(JwksConfig::new(JwksSource::File(path)));
        }
        let issuer = LocalIssuer::load_or_create(dir.path(), "forge-local", "forge").unwrap();
        let store = Arc::new(SqliteStore::open_in_dir(dir.path()).await.unwrap());
        let bus = MemoryBus::default();
        let audit = Arc::new(MemoryAuditSink::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = opts.config;
        config.base_url = format!("http://{addr}");
        config.billing = opts.billing;
        let state = SpawnState::new(SpawnDeps {
            config,
            verifier: Arc::new(Verifier::new(&auth)),
            store: store.clone() as Arc<dyn Store>,
            bus: opts.bus.unwrap_or_else(|| Arc::new(bus.clone())),
            gate: opts.gate,
            audit: audit.clone(),
            catalog: Arc::new(Catalog::bundled().unwrap()),
            tenants: Arc::new(TenantDirectory::from_toml(TENANTS, "tests").unwrap()),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(spawn::serve(listener, state, async move {
            let _ = rx.await;
        }));
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            store,
            bus,
            audit,
            dir,
            issuer,
            stop: Some(tx),
            server: Some(server),
        }
    }

    /// A valid local token of `tenant` with `roles`.
    pub fn token(&self, tenant: &str, roles: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        self.issuer
            .mint(
                tenant,
                &roles,
                &format!("{tenant}-learner"),
                Duration::from_secs(600),
            )
            .unwrap()
    }

    /// A token that may spawn, for `tenant`.
    pub fn spawner(&self, tenant: &str) -> String {
        self.token(tenant, &["forge.spawn"])
    }

    /// `POST /v1/spawn` with a JSON body and extra headers.
    pub async fn spawn(&self, token: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut req = self
            .client
            .post(format!("{}/v1/spawn", self.base))
            .bearer_auth(token)
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::from(req.send().await.unwrap()).await
    }

    /// Any request, raw.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        Reply::from(req.send().await.unwrap()).await
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            s.await.unwrap().unwrap();
        }
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub async fn from(r: reqwest::Response) -> Self {
        Self {
            status: r.status(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    /// `error.code` of an error envelope (checking the envelope's shape on the way).
    pub fn code(&self) -> String {
        let v = self.json();
        let e = &v["error"];
        assert!(
            e["code"].is_string() && e["message"].is_string() && e["details"].is_object(),
            "not an error envelope: {}",
            self.text
        );
        e["code"].as_str().unwrap().to_owned()
    }

    pub fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}
