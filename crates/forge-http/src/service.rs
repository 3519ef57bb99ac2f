//! The one registry of the platform's services: their keys, the names `/health` reports,
//! their default ports and what they do (docs/design.md §3).

use std::fmt;
use std::str::FromStr;

/// A Forge service with an HTTP API.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Spawn,
    Orchestrator,
    Worker,
    Observer,
    Scoreboard,
    Runner,
    Opa,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::Spawn,
        Service::Orchestrator,
        Service::Worker,
        Service::Observer,
        Service::Scoreboard,
        Service::Runner,
        Service::Opa,
    ];

    fn entry(self) -> &'static Entry {
        &REGISTRY[self as usize]
    }

    /// Short name, as in configuration and on the command line (`spawn`, `opa`, ...).
    pub fn key(self) -> &'static str {
        self.entry().key
    }

    /// The spec's service name, reported by `/health` (`forge_spawn_service`, ...).
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// The spec's port.
    pub fn default_port(self) -> u16 {
        self.entry().port
    }

    /// What the service does, in a line (its OpenAPI document's description).
    pub fn description(self) -> &'static str {
        self.entry().description
    }
}

struct Entry {
    key: &'static str,
    name: &'static str,
    port: u16,
    description: &'static str,
}

/// Indexed by the enum's discriminant, in declaration order.
const REGISTRY: [Entry; 7] = [
    Entry {
        key: "spawn",
        name: "forge_spawn_service",
        port: 8082,
        description: "the front door: spawn labs (auth, quotas, idempotency, billing, spawn gate)",
    },
    Entry {
        key: "orchestrator",
        name: "forge_orchestrator",
        port: 8083,
        description: "scenario life cycle: training gate, lab launch, state machine, teardown",
    },
    Entry {
        key: "worker",
        name: "forge_worker_agent",
        port: 8084,
        description: "checks, submissions, learner commands and the terminal",
    },
    Entry {
        key: "observer",
        name: "forge_observer_hub",
        port: 8085,
        description: "telemetry, fairness statistics and audit verification",
    },
    Entry {
        key: "scoreboard",
        name: "forge_scoreboard",
        port: 8086,
        description: "signed scores and evidence bundles",
    },
    Entry {
        key: "runner",
        name: "forge_playbook_runner",
        port: 8087,
        description: "deterministic evaluation of success criteria and playbooks",
    },
    Entry {
        key: "opa",
        name: "forge_opa",
        port: 8181,
        description: "OPA's Data API over the embedded policy engine",
    },
];

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A string that is neither a service's key nor its name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown service `{0}` (known: spawn, orchestrator, worker, observer, scoreboard, runner, opa)"
)]
pub struct UnknownService(pub String);

impl FromStr for Service {
    type Err = UnknownService;

    /// Accepts the key (`spawn`) or the name (`forge_spawn_service`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|svc| s == svc.key() || s == svc.name())
            .ok_or_else(|| UnknownService(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_names_and_ports_are_unique_and_round_trip() {
        let mut ports: Vec<u16> = Service::ALL.iter().map(|s| s.default_port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), Service::ALL.len());
        for svc in Service::ALL {
            assert_eq!(svc.key().parse::<Service>(), Ok(svc));
            assert_eq!(svc.name().parse::<Service>(), Ok(svc));
            assert_eq!(svc.to_string(), svc.key());
            let json = serde_json::to_value(svc).unwrap();
            assert_eq!(json, svc.key());
            assert_eq!(serde_json::from_value::<Service>(json).unwrap(), svc);
        }
        assert_eq!(Service::Spawn.default_port(), 8082);
        assert_eq!(Service::Opa.name(), "forge_opa");
        for (i, svc) in Service::ALL.into_iter().enumerate() {
            assert_eq!(svc as usize, i, "ALL is in declaration order");
        }
    }

    #[test]
    fn unknown_names_list_the_valid_keys() {
        let e = "egress".parse::<Service>().unwrap_err();
        let message = e.to_string();
        assert!(message.contains("`egress`"), "{message}");
        for svc in Service::ALL {
            assert!(message.contains(svc.key()), "{message}");
        }
    }
}
