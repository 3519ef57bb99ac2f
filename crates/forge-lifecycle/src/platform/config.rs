//! What a platform is configured with: plain values, no environment reads. The `forge` binary
//! assembles this from its flags and environment (one table in the README); tests build it
//! directly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use forge_auth::AuthSettings;
use forge_bus::MemoryBusConfig;
use forge_http::Service;
use forge_runtime::SupervisorConfig;
use forge_services::spawn::SpawnConfig;

use crate::orchestrator::OrchestratorConfig;

/// The port of every service; 0 picks a free one (tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(BTreeMap<Service, u16>);

impl Ports {
    /// The spec's service registry (`Service::default_port`).
    pub fn spec() -> Self {
        Self(Service::ALL.map(|s| (s, s.default_port())).into())
    }

    /// Every service on a free port.
    pub fn ephemeral() -> Self {
        Self(Service::ALL.map(|s| (s, 0)).into())
    }

    pub fn with(mut self, service: Service, port: u16) -> Self {
        self.0.insert(service, port);
        self
    }

    pub fn get(&self, service: Service) -> u16 {
        self.0
            .get(&service)
            .copied()
            .unwrap_or(service.default_port())
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self::spec()
    }
}

#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// State, keys, the audit log and the local evidence store live here.
    pub data_dir: PathBuf,
    /// Address the services bind (default loopback).
    pub bind: IpAddr,
    pub ports: Ports,
    /// Host name in the URLs handed to learners (`access_url`, the page's API links).
    pub public_host: String,
    /// Operator templates added to the bundled catalog (`TEMPLATE_DIR`).
    pub template_dir: Option<PathBuf>,
    /// Operator policies (`POLICY_DIR`).
    pub policy_dir: Option<PathBuf>,
    /// A remote OPA (`OPA_URL`) instead of the embedded engine.
    pub opa_url: Option<String>,
    /// The bearer token sent to the remote OPA (`OPA_TOKEN`); without it, a platform that
    /// accepts local HS256 tokens mints its own short-lived ones (`forge_policy::MintedToken`).
    pub opa_token: Option<String>,
    /// Tenants and plans (`FORGE_TENANTS_FILE`); the bundled example (tenant `demo`) when absent.
    pub tenants_file: Option<PathBuf>,
    /// Who may call: issuer, audience, JWKS, local HS256 tokens (secret in the data dir).
    pub auth: AuthSettings,
    /// The front door's settings; an empty `base_url` (of `access_url`) means
    /// `http://{public_host}:{the spawn service's bound port}`.
    pub spawn: SpawnConfig,
    pub orchestrator: OrchestratorConfig,
    /// Lab images: build the missing ones at start (Docker runtime only).
    pub build_images: bool,
    /// Where lab image definitions live (`FORGE_IMAGES_DIR`); found next to the binary's
    /// working tree when absent.
    pub images_dir: Option<PathBuf>,
    /// The statically linked busybox copied into every lab image (`FORGE_BUSYBOX`).
    pub busybox: PathBuf,
    /// The Debian mirror the Debian base image is bootstrapped from (`FORGE_DEBIAN_MIRROR`);
    /// `None`: the one apt uses on this host.
    pub debian_mirror: Option<String>,
    /// The in-process bus's tuning, when `nats_url` is not set.
    pub bus: MemoryBusConfig,
    /// NATS with JetStream (`NATS_URL`) instead of the in-process bus.
    pub nats_url: Option<String>,
    /// PostgreSQL (`DATABASE_URL`) instead of SQLite in the data dir.
    pub database_url: Option<String>,
    /// An S3 server with object lock instead of the evidence directory in the data dir.
    pub s3: Option<forge_evidence::S3Config>,
    /// Which labs the supervisor keeps alive (label filters narrow it to one test run).
    pub supervisor: SupervisorConfig,
    /// The services this process runs: all of them (`forge up`), or one (`forge serve`).
    pub services: BTreeSet<Service>,
    /// Where services this process does not run are reached (links on the access page, the
    /// worker URL a lab host registers); the default is `http://{public_host}:{port}`.
    pub urls: BTreeMap<Service, String>,
    /// The signed audit log file; `audit/audit.jsonl` in the data dir when absent. Processes
    /// sharing a data dir need one each.
    pub audit_log: Option<PathBuf>,
    /// What goes on the bus as telemetry (levels, sampling interval, queue sizes).
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// How often this process verifies its signed audit log (`forge_audit_chain_verified`);
    /// `None` never does.
    pub audit_verify_every: Option<std::time::Duration>,
    /// Launch labs only on an engine that remaps user namespaces (production).
    pub require_user_namespaces: bool,
    /// Egress allowlist profiles, uplink namespace and link pool of allowlisted labs
    /// (`FORGE_EGRESS_PROFILES`, …); by default none, so only `egress: deny` labs launch.
    pub egress: forge_runtime::EgressConfig,
    /// LLM proposals (`FORGE_LLM_URL`, `FORGE_LLM_MODEL`, …); `None` (the default): off.
    pub llm: Option<crate::llm::LlmConfig>,
}

impl PlatformConfig {
    /// The embedded defaults in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: Ports::spec(),
            public_host: "localhost".into(),
            template_dir: None,
            policy_dir: None,
            opa_url: None,
            opa_token: None,
            tenants_file: None,
            auth: AuthSettings::default(),
            spawn: SpawnConfig {
                base_url: String::new(),
                ..SpawnConfig::default()
            },
            orchestrator: OrchestratorConfig::default(),
            build_images: true,
            images_dir: None,
            busybox: forge_runtime::images::DEFAULT_BUSYBOX.into(),
            debian_mirror: None,
            bus: MemoryBusConfig::default(),
            nats_url: None,
            database_url: None,
            s3: None,
            supervisor: SupervisorConfig::default(),
            services: Service::ALL.into_iter().collect(),
            urls: BTreeMap::new(),
            audit_log: None,
            telemetry: crate::telemetry::TelemetryConfig::default(),
            audit_verify_every: Some(std::time::Duration::from_secs(300)),
            require_user_namespaces: false,
            egress: forge_runtime::EgressConfig::default(),
            llm: None,
        }
    }

    /// Whether a configured service runs labs (needs the engine).
    pub fn runs_labs(&self) -> bool {
        [Service::Orchestrator, Service::Worker, Service::Runner]
            .iter()
            .any(|s| self.services.contains(s))
    }

    /// The name this process's telemetry carries: the one service it runs, `forge_lab_host`
    /// for a lab host, `forge_platform` for all of them.
    pub fn process_name(&self) -> String {
        let lab_host = [Service::Orchestrator, Service::Worker, Service::Runner];
        match self.services.len() {
            1 => self
                .services
                .iter()
                .next()
                .map(|s| s.name().to_owned())
                .unwrap_or_default(),
            3 if lab_host.iter().all(|s| self.services.contains(s)) => "forge_lab_host".into(),
            _ => "forge_platform".into(),
        }
    }

    /// A state file of this process in the data dir, `state/<process>/<name>`, where the
    /// process is named like its audit log: processes sharing a data dir keep their own.
    pub fn state_file(&self, name: &str) -> PathBuf {
        let log = self.audit_log_path();
        let process = log
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "audit".into());
        self.data_dir.join("state").join(process).join(name)
    }

    pub fn audit_log_path(&self) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| forge_evidence::AuditLog::default_path(&self.data_dir))
    }
}
