//! Where each service listens and is reached, and who this lab host is: the settings that let
//! one `forge` per service (and one per lab host) form one platform. `forge up` uses them too
//! (all services in one process, one lab host).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use forge_http::Service;
use forge_lifecycle::orchestrator::HostConfig;
use forge_lifecycle::platform::PlatformConfig;

use super::require_http_url;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 30s or 2m: {e}"))
}

/// The machine's host name (letters, digits and `-`; others become `_`), for the default lab
/// host id and per-process file names.
pub fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>();
    if name.is_empty() {
        "local".into()
    } else {
        name
    }
}

#[derive(Args, Debug, Clone)]
pub struct TopologyArgs {
    /// Port of forge_spawn_service [default: 8082]
    #[arg(long, env = "FORGE_SPAWN_PORT", value_name = "PORT")]
    pub spawn_port: Option<u16>,
    /// Port of forge_orchestrator [default: 8083]
    #[arg(long, env = "FORGE_ORCHESTRATOR_PORT", value_name = "PORT")]
    pub orchestrator_port: Option<u16>,
    /// Port of forge_worker_agent [default: 8084]
    #[arg(long, env = "FORGE_WORKER_PORT", value_name = "PORT")]
    pub worker_port: Option<u16>,
    /// Port of forge_observer_hub [default: 8085]
    #[arg(long, env = "FORGE_OBSERVER_PORT", value_name = "PORT")]
    pub observer_port: Option<u16>,
    /// Port of forge_scoreboard [default: 8086]
    #[arg(long, env = "FORGE_SCOREBOARD_PORT", value_name = "PORT")]
    pub scoreboard_port: Option<u16>,
    /// Port of forge_playbook_runner [default: 8087]
    #[arg(long, env = "FORGE_RUNNER_PORT", value_name = "PORT")]
    pub runner_port: Option<u16>,
    /// Port of the OPA endpoint [default: 8181]
    #[arg(long, env = "FORGE_OPA_PORT", value_name = "PORT")]
    pub opa_port: Option<u16>,
    /// URL learners reach the orchestrator by (access page links) [default:
    /// http://FORGE_PUBLIC_HOST:port]
    #[arg(long, env = "FORGE_ORCHESTRATOR_URL", value_name = "URL")]
    pub orchestrator_url: Option<String>,
    /// URL learners reach the worker agent by (access page, terminal)
    #[arg(long, env = "FORGE_WORKER_URL", value_name = "URL")]
    pub worker_url: Option<String>,
    /// URL learners reach the scoreboard by
    #[arg(long, env = "FORGE_SCOREBOARD_URL", value_name = "URL")]
    pub scoreboard_url: Option<String>,
    /// This lab host's id, unique among the platform's lab hosts [default: the host name]
    #[arg(long, env = "FORGE_HOST_ID", value_name = "ID")]
    pub host_id: Option<String>,
    /// Most labs this host runs at once; more spawns wait `pending` for a host with room
    #[arg(
        long,
        env = "FORGE_HOST_CAPACITY",
        default_value_t = 20,
        value_name = "LABS"
    )]
    pub host_capacity: u32,
    /// A lab host that misses its heartbeats this long has lost its labs (they fail)
    #[arg(long, env = "FORGE_HOST_LEASE", default_value = "30s", value_parser = duration, value_name = "DURATION")]
    pub host_lease: Duration,
    /// URL other workers forward this host's lab actions to [default: the worker URL]
    #[arg(long, env = "FORGE_HOST_URL", value_name = "URL")]
    pub host_url: Option<String>,
    /// URL other runners forward playbooks for this host's labs to [default:
    /// http://FORGE_PUBLIC_HOST:runner port]
    #[arg(long, env = "FORGE_HOST_RUNNER_URL", value_name = "URL")]
    pub host_runner_url: Option<String>,
    /// Extra labels on every lab container this host builds (`key=value`, comma-separated),
    /// e.g. to find one deployment's labs with `forge scenarios cleanup --label`
    #[arg(
        long,
        env = "FORGE_LAB_LABEL",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub lab_label: Vec<String>,
    /// Run labs on an engine without user-namespace remapping even with FORGE_ENV=production
    /// (a lab's root is then host root)
    #[arg(
        long,
        env = "FORGE_ALLOW_HOST_ROOT_LABS",
        value_parser = clap::builder::BoolishValueParser::new(),
        default_value_t = false,
        value_name = "BOOL"
    )]
    pub allow_host_root_labs: bool,
    /// The signed audit log file of this process [default: audit/audit.jsonl in the data dir;
    /// `forge serve`: audit/<service>-<host name or lab host id>.jsonl]
    #[arg(long, env = "FORGE_AUDIT_LOG", value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
}

impl TopologyArgs {
    /// Applies the ports, URLs, host and audit log to `cfg`.
    pub fn apply(&self, cfg: &mut PlatformConfig) -> anyhow::Result<()> {
        let ports = [
            (Service::Spawn, self.spawn_port),
            (Service::Orchestrator, self.orchestrator_port),
            (Service::Worker, self.worker_port),
            (Service::Observer, self.observer_port),
            (Service::Scoreboard, self.scoreboard_port),
            (Service::Runner, self.runner_port),
            (Service::Opa, self.opa_port),
        ];
        for (service, port) in ports {
            if let Some(p) = port {
                cfg.ports = cfg.ports.clone().with(service, p);
            }
        }
        let urls = [
            (
                "FORGE_ORCHESTRATOR_URL (--orchestrator-url)",
                Service::Orchestrator,
                &self.orchestrator_url,
            ),
            (
                "FORGE_WORKER_URL (--worker-url)",
                Service::Worker,
                &self.worker_url,
            ),
            (
                "FORGE_SCOREBOARD_URL (--scoreboard-url)",
                Service::Scoreboard,
                &self.scoreboard_url,
            ),
        ];
        let mut map = BTreeMap::new();
        for (name, service, url) in urls {
            if let Some(u) = url {
                require_http_url(name, u)?;
                map.insert(service, u.clone());
            }
        }
        cfg.urls = map;
        let mut host = HostConfig {
            id: self.host_id.clone().unwrap_or_else(hostname),
            url: String::new(),
            runner_url: String::new(),
            capacity: self.host_capacity,
            lease: self.host_lease,
        };
        if let Some(u) = self.host_url.as_ref().or(self.worker_url.as_ref()) {
            require_http_url("FORGE_HOST_URL (--host-url)", u)?;
            host.url = u.clone();
        }
        if let Some(u) = &self.host_runner_url {
            require_http_url("FORGE_HOST_RUNNER_URL (--host-runner-url)", u)?;
            host.runner_url = u.clone();
        }
        if let Err(why) = host.validate() {
            bail!("FORGE_HOST_ID / FORGE_HOST_CAPACITY / FORGE_HOST_LEASE: {why}");
        }
        cfg.orchestrator.host = host;
        for label in &self.lab_label {
            match label.split_once('=') {
                Some((k, v)) if !k.is_empty() && k != forge_lifecycle::orchestrator::HOST_LABEL => {
                    cfg.orchestrator.labels.insert(k.to_owned(), v.to_owned());
                }
                _ => bail!(
                    "FORGE_LAB_LABEL (--lab-label) `{label}` is not key=value (and the host \
                     label is the platform's own)"
                ),
            }
        }
        cfg.audit_log = self.audit_log.clone();
        Ok(())
    }
}
