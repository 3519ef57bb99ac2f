//! The scenario DSL: `apiVersion: frostgate.forge/v1`, `kind: ScenarioTemplate`.
//!
//! [`load`] is the one entry point: YAML text in, a validated [`ScenarioTemplate`] or every error
//! found (file, line, column, path, reason) out. The model here is the spec's, plus the
//! backward-compatible extensions of docs/design.md §4 (`{name, address}` attachments, subnet
//! `gateway`, container `setup` and `console`, template `solution`, criterion `hint`,
//! `capabilities`).

mod addressing;
pub mod agents;
mod console;
mod diagnostics;
mod flatten;
mod ipv6;
mod schema;
mod semantic;
mod yaml;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::model::{ArtifactType, Track};

pub use addressing::{Attachment, LabPlan, PlannedContainer, PlannedSubnet, hosts_file, plan_lab};
pub use agents::{ActionKind, Agent, AgentAction};
pub use console::{Console, LabConsole};
pub use diagnostics::{Diagnostic, TemplateErrors};
pub use flatten::policy_input;
pub use yaml::{MAX_EXPANDED_BYTES, MAX_YAML_BYTES, SpannedDoc, check_input_size, parse_yaml};

/// The only apiVersion this build reads.
pub const API_VERSION: &str = "frostgate.forge/v1";
/// The only kind this build reads.
pub const KIND: &str = "ScenarioTemplate";

/// A parsed and validated scenario template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioTemplate {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    pub labels: Vec<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub limits: Limits,
    pub network: Network,
    pub assets: Assets,
    pub success_criteria: Vec<Criterion>,
    /// Steps that make every criterion pass; only used to test that the lab is solvable.
    #[serde(default)]
    pub solution: Vec<Step>,
    /// Scripted attackers and defenders acting in the lab (`agents`); skipped when empty so
    /// templates without them serialise (and hash) as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<Agent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU cores for the whole lab (split evenly across containers by the runtime).
    pub cpu: f64,
    /// Memory for the whole lab, in MiB.
    pub memory_mb: u64,
    pub attacker_max_exploits: i64,
    pub timeout_minutes: u64,
    /// Processes per container; defaults to [`Limits::DEFAULT_PIDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

impl Limits {
    pub const DEFAULT_PIDS: u64 = 128;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    Deny,
    Allowlist,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub egress: Egress,
    #[serde(default)]
    pub allowlist_profile: Option<String>,
    #[serde(default)]
    pub subnets: Vec<Subnet>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subnet {
    pub name: String,
    pub cidr: Ipv4Net,
    /// An address inside the subnet reserved for a router; only informative to the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The subnet's IPv6 prefix (a ULA, inside fd00::/8): the subnet is then dual-stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<Ipv6Net>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assets {
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub image: String,
    /// Read-only root filesystem; the platform enforces it whatever the template says, and the
    /// training gate refuses `false`.
    #[serde(default = "yes")]
    pub read_only: bool,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub networks: Vec<NetworkAttachment>,
    /// Linux capabilities added back after `cap_drop: ALL` (without the `CAP_` prefix).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Commands (`sh -c`) run in order once the lab's links are up.
    #[serde(default)]
    pub setup: Vec<String>,
    /// Whether the learner's terminal opens here; defaults to the first container.
    #[serde(default)]
    pub learner: bool,
    /// A console (terminal) into this container, for learners unless it says otherwise; the
    /// learner container always has one. `console: true` is `console: {}`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "console::deserialize"
    )]
    pub console: Option<Console>,
}

fn yes() -> bool {
    true
}

/// A container's attachment to a subnet: the subnet's name, or `{name, address}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NetworkAttachment {
    Name(String),
    Explicit {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<AddressSpec<Ipv4Addr>>,
        /// On a dual-stack subnet: the IPv6 address, or `none` for no IPv6 address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address6: Option<AddressSpec<Ipv6Addr>>,
    },
}

/// An attachment's explicit address setting: an address, or `none` for an interface that is
/// plumbed and up without one of that family (a DHCP client's, a learner's to configure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSpec<A> {
    None,
    Addr(A),
}

impl<A: Serialize> Serialize for AddressSpec<A> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::None => s.serialize_str("none"),
            Self::Addr(a) => a.serialize(s),
        }
    }
}

impl<'de, A: std::str::FromStr> Deserialize<'de> for AddressSpec<A> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "none" {
            return Ok(Self::None);
        }
        s.parse()
            .map(Self::Addr)
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an address or none")))
    }
}

impl NetworkAttachment {
    pub fn subnet(&self) -> &str {
        match self {
            Self::Name(n) | Self::Explicit { name: n, .. } => n,
        }
    }

    /// The explicit IPv4 address, if the template gives one.
    pub fn address(&self) -> Option<Ipv4Addr> {
        match self {
            Self::Explicit {
                address: Some(AddressSpec::Addr(a)),
                ..
            } => Some(*a),
            _ => None,
        }
    }

    /// The explicit IPv6 address, if the template gives one.
    pub fn address6(&self) -> Option<Ipv6Addr> {
        match self {
            Self::Explicit {
                address6: Some(AddressSpec::Addr(a)),
                ..
            } => Some(*a),
            _ => None,
        }
    }

    /// Whether the interface is to stay without an IPv6 address (`address6: none`).
    pub fn unaddressed6(&self) -> bool {
        matches!(
            self,
            Self::Explicit {
                address6: Some(AddressSpec::None),
                ..
            }
        )
    }

    /// Whether the interface is to stay without an IPv4 address (`address: none`).
    pub fn unaddressed(&self) -> bool {
        matches!(
            self,
            Self::Explicit {
                address: Some(AddressSpec::None),
                ..
            }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Criterion {
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "crate::model::default_weight")]
    pub weight: f64,
    /// Shown to the learner when a check fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub evidence: Vec<Evidence>,
}

/// The four DSL evidence types (docs/design.md §7.6 maps them onto artifact types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceType {
    Command,
    File,
    Network,
    State,
}

impl EvidenceType {
    /// The one mapping from DSL evidence type to artifact type.
    pub fn artifact_type(self) -> ArtifactType {
        match self {
            Self::Command => ArtifactType::CommandOutput,
            Self::File => ArtifactType::FileCapture,
            Self::Network => ArtifactType::NetworkCapture,
            Self::State => ArtifactType::StateSnapshot,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::File => "file",
            Self::Network => "network",
            Self::State => "state",
        }
    }
}

/// One piece of evidence a criterion needs, and what it must show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    #[serde(rename = "type")]
    pub kind: EvidenceType,
    /// Container to collect from; defaults to the learner container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// `command`: shell command run with `sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `file`: absolute path read without running a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `network`: `host:port` (TCP connect) or `host` (ICMP echo) probed from the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Per-evidence timeout in seconds (default 10, at most
    /// [`crate::playbook::MAX_TIMEOUT_SECONDS`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::playbook::timeout_seconds"
    )]
    pub timeout_seconds: Option<u64>,
    #[serde(default)]
    pub expect: Expect,
}

/// Expectations; which keys apply depends on the evidence type (validation checks that).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_not_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_exists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
}

/// One command run in one container (solution steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub container: String,
    pub command: String,
}

impl ScenarioTemplate {
    /// The track from the template's single `class:<track>` label.
    pub fn track(&self) -> Option<Track> {
        self.label_value("class").and_then(|t| t.parse().ok())
    }

    /// The `tier:<level>` label, when present.
    pub fn tier(&self) -> Option<&str> {
        self.label_value("tier")
    }

    /// The value of the first `key:value` label with this key.
    pub fn label_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .labels
            .iter()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
    }

    /// The `description` annotation, or empty.
    pub fn description(&self) -> &str {
        self.metadata
            .annotations
            .get("description")
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn container(&self, name: &str) -> Option<&Container> {
        self.spec.assets.containers.iter().find(|c| c.name == name)
    }

    /// The container a learner's terminal (and default evidence) goes to.
    pub fn learner_container(&self) -> &Container {
        let containers = &self.spec.assets.containers;
        containers
            .iter()
            .find(|c| c.learner)
            .unwrap_or(&containers[0])
    }
}

/// Parses and validates a template. `file` is only used in error messages.
pub fn load(file: &str, text: &str) -> Result<ScenarioTemplate, TemplateErrors> {
    let doc = parse_yaml(text).map_err(|d| TemplateErrors::new(file, vec![d]))?;
    let mut diagnostics = schema::check(&doc);
    diagnostics.extend(schema::check_formats(&doc));
    // Only a structurally valid document can be deserialised and checked for meaning; schema
    // errors already say what to fix first.
    if diagnostics.is_empty() {
        match serde_json::from_value::<ScenarioTemplate>(doc.value.clone()) {
            Ok(t) => {
                diagnostics.extend(semantic::check(&t, &doc));
                diagnostics.extend(console::check(&t, &doc));
                diagnostics.extend(agents::check(&t));
            }
            Err(e) => diagnostics.push(Diagnostic::new("", format!("cannot read template: {e}"))),
        }
    }
    if diagnostics.is_empty() {
        // Re-deserialise is cheap and keeps the Ok path free of clones held across checks.
        let t = serde_json::from_value(doc.value).map_err(|e| {
            TemplateErrors::new(
                file,
                vec![Diagnostic::new("", format!("cannot read template: {e}"))],
            )
        })?;
        Ok(t)
    } else {
        let mut d = diagnostics;
        for x in &mut d {
            x.locate(&doc);
        }
        Err(TemplateErrors::new(file, d))
    }
}
