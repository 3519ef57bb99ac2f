//! The operator's egress profile file (`FORGE_EGRESS_PROFILES`): what each allowlist profile a
//! template may name lets its lab reach. Read with the template YAML reader (size, depth and
//! alias budgets, duplicate keys refused) and reported like templates: every error of the file
//! at once, each as `file:line:column: path: reason`.
//!
//! ```yaml
//! profiles:
//!   pypi-mirror:
//!     description: the package mirror
//!     rules:
//!       - cidr: 10.50.0.0/24
//!         protocol: tcp
//!         ports: [443, 8000-8099]
//!       - host: mirror.internal.example   # resolved when a lab starts
//!         protocol: udp
//!         ports: [53]
//! ```
//!
//! Host names are resolved by the system resolver when a lab starts (never at load time), so a
//! lab gets the addresses of the moment it starts and keeps them for its life.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use forge_core::template::{Diagnostic, TemplateErrors, parse_yaml};
use ipnet::Ipv4Net;
use serde_json::Value;

use super::{FORBIDDEN, in_forbidden};
use crate::error::RuntimeError;

/// Most profiles, rules per profile and port entries per rule a file may hold; far above any
/// real allowlist, low enough that a ruleset stays small.
const MAX_PROFILES: usize = 256;
const MAX_RULES: usize = 256;
const MAX_PORTS: usize = 64;
/// How long resolving one host name may take at lab start.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a profile file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfilesError {
    #[error("cannot read egress profiles {path}: {message}")]
    Read { path: String, message: String },
    #[error("{0}")]
    Invalid(TemplateErrors),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// Where a rule lets a lab connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Cidr(Ipv4Net),
    /// A DNS name (resolved at lab start) or an IPv4 literal.
    Host(String),
}

/// One allowed (destination, protocol, ports) tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub destination: Destination,
    pub protocol: Protocol,
    /// Inclusive port ranges (`443` is `443..=443`).
    pub ports: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub description: Option<String>,
    pub rules: Vec<Rule>,
}

/// The operator's profiles by name. The default is none: every allowlisted lab fails to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressProfiles {
    profiles: BTreeMap<String, Profile>,
}

/// A rule with its destinations resolved to addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRule {
    pub destinations: Vec<Ipv4Net>,
    pub protocol: Protocol,
    pub ports: Vec<(u16, u16)>,
}

/// A profile as a lab gets it: addresses, plus the names a lab's `/etc/hosts` should carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedProfile {
    pub name: String,
    pub rules: Vec<ResolvedRule>,
    pub hosts: Vec<(Ipv4Addr, Vec<String>)>,
}

impl EgressProfiles {
    /// Reads and validates the profile file at `path` (at most the template size limit).
    pub fn load(path: &std::path::Path) -> Result<Self, ProfilesError> {
        let shown = path.display().to_string();
        let read = |message: String| ProfilesError::Read {
            path: shown.clone(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| read(e.to_string()))?;
        if meta.len() > forge_core::template::MAX_YAML_BYTES as u64 {
            return Err(read(format!(
                "{} bytes is more than {} bytes",
                meta.len(),
                forge_core::template::MAX_YAML_BYTES
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        Self::parse(&shown, &text)
    }

    /// Parses the text of a profile file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ProfilesError> {
        let invalid = |d: Vec<Diagnostic>| ProfilesError::Invalid(TemplateErrors::new(file, d));
        let doc = parse_yaml(text).map_err(|d| invalid(vec![d]))?;
        let mut p = Parser::default();
        let profiles = p.root(&doc.value);
        if p.errors.is_empty() {
            return Ok(Self { profiles });
        }
        for d in &mut p.errors {
            d.locate(&doc);
        }
        Err(invalid(p.errors))
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}

impl Profile {
    /// Resolves every host name with the system resolver. A name that gives no IPv4 address,
    /// or one a lab may never reach (loopback, link-local, …), fails the lab's start: a rule
    /// that silently allows nothing hides a broken profile.
    pub async fn resolve(&self) -> Result<ResolvedProfile, RuntimeError> {
        let fail = |message: String| RuntimeError::EgressProfile {
            profile: self.name.clone(),
            message,
        };
        let mut rules = Vec::new();
        let mut hosts: Vec<(Ipv4Addr, Vec<String>)> = Vec::new();
        for r in &self.rules {
            let destinations = match &r.destination {
                Destination::Cidr(net) => vec![*net],
                Destination::Host(h) => {
                    let addrs = resolve_host(h).await.map_err(&fail)?;
                    if let Some(bad) = addrs.iter().find(|a| in_forbidden(**a)) {
                        return Err(fail(format!(
                            "host `{h}` resolves to {bad}, which a lab may never reach"
                        )));
                    }
                    if h.parse::<Ipv4Addr>().is_err() {
                        hosts.extend(addrs.iter().map(|a| (*a, vec![h.clone()])));
                    }
                    addrs.into_iter().map(Ipv4Net::from).collect()
                }
            };
            rules.push(ResolvedRule {
                destinations,
                protocol: r.protocol,
                ports: r.ports.clone(),
            });
        }
        Ok(ResolvedProfile {
            name: self.name.clone(),
            rules,
            hosts,
        })
    }
}

/// IPv4 addresses of `host` (a literal is itself), through the system resolver (`/etc/hosts`,
/// then DNS, as the host's nsswitch says).
async fn resolve_host(host: &str) -> Result<Vec<Ipv4Addr>, String> {
    if let Ok(a) = host.parse::<Ipv4Addr>() {
        return Ok(vec![a]);
    }
    let lookup = tokio::net::lookup_host((host, 0));
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| format!("resolving host `{host}` took longer than {RESOLVE_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot resolve host `{host}`: {e}"))?;
    let mut v4: Vec<Ipv4Addr> = found
        .filter_map(|sa| match sa.ip() {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    v4.sort_unstable();
    v4.dedup();
    if v4.is_empty() {
        return Err(format!("host `{host}` has no IPv4 address"));
    }
    Ok(v4)
}

/// Walks the document, collecting every error with its path.
#[derive(Default)]
struct Parser {
    errors: Vec<Diagnostic>,
}

impl Parser {
    fn err(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(Diagnostic::new(path, reason));
    }

    /// The mapping at `path`, with keys outside `known` reported.
    fn map<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        known: &[&str],
    ) -> Option<&'v serde_json::Map<String, Value>> {
        let Some(m) = v.as_object() else {
            self.err(path, "must be a mapping");
            return None;
        };
        for k in m.keys().filter(|k| !known.contains(&k.as_str())) {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            self.err(
                at,
                format!("unknown field `{k}` (known: {})", known.join(", ")),
            );
        }
        Some(m)
    }

    fn root(&mut self, v: &Value) -> BTreeMap<String, Profile> {
        let mut out = BTreeMap::new();
        let Some(root) = self.map(v, "", &["profiles"]) else {
            return out;
        };
        let Some(profiles) = root.get("profiles") else {
            self.err(
                "profiles",
                "is required (a mapping of profile names to profiles)",
            );
            return out;
        };
        let Some(profiles) = profiles.as_object() else {
            self.err("profiles", "must be a mapping of profile names to profiles");
            return out;
        };
        if profiles.len() > MAX_PROFILES {
            self.err("profiles", format!("more than {MAX_PROFILES} profiles"));
        }
        for (name, body) in profiles {
            let path = format!("profiles.{name}");
            if !valid_name(name) {
                self.err(
                    &path,
                    format!(
                        "profile name `{name}` must be 1 to 63 lowercase letters, digits, `-` or \
                         `_`, starting with a letter or digit"
                    ),
                );
                continue;
            }
            if let Some(p) = self.profile(name, body, &path) {
                out.insert(name.clone(), p);
            }
        }
        out
    }

    fn profile(&mut self, name: &str, v: &Value, path: &str) -> Option<Profile> {
        let m = self.map(v, path, &["description", "rules"])?;
        let description = match m.get("description") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.err(format!("{path}.description"), "must be a string");
                None
            }
        };
        let rules_path = format!("{path}.rules");
        let rules = match m.get("rules").and_then(Value::as_array) {
            Some(list) if !list.is_empty() && list.len() <= MAX_RULES => list,
            Some(list) if !list.is_empty() => {
                self.err(&rules_path, format!("more than {MAX_RULES} rules"));
                return None;
            }
            _ => {
                self.err(&rules_path, "must be a non-empty list of rules");
                return None;
            }
        };
        let before = self.errors.len();
        let rules: Vec<Rule> = rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.rule(r, &format!("{rules_path}[{i}]")))
            .collect();
        (self.errors.len() == before).then(|| Profile {
            name: name.to_owned(),
            description,
            rules,
        })
    }

    fn rule(&mut self, v: &Value, path: &str) -> Option<Rule> {
        let m = self.map(v, path, &["cidr", "host", "protocol", "ports"])?;
        let before = self.errors.len();
        let destination = match (m.get("cidr"), m.get("host")) {
            (Some(c), None) => self.cidr(c, &format!("{path}.cidr")).map(Destination::Cidr),
            (None, Some(h)) => self.host(h, &format!("{path}.host")).map(Destination::Host),
            (Some(_), Some(_)) => {
                self.err(path, "give either `cidr` or `host`, not both");
                None
            }
            (None, None) => {
                self.err(path, "needs a destination: `cidr` or `host`");
                None
            }
        };
        let protocol = match m.get("protocol").and_then(Value::as_str) {
            Some("tcp") => Some(Protocol::Tcp),
            Some("udp") => Some(Protocol::Udp),
            _ => {
                self.err(format!("{path}.protocol"), "must be `tcp` or `udp`");
                None
            }
        };
        let ports = self.ports(m.get("ports"), &format!("{path}.ports"));
        if self.errors.len() != before {
            return None;
        }
        Some(Rule {
            destination: destination?,
            protocol: protocol?,
            ports: ports?,
        })
    }

    fn cidr(&mut self, v: &Value, path: &str) -> Option<Ipv4Net> {
        let Some(s) = v.as_str() else {
            self.err(path, "must be an IPv4 CIDR such as 10.50.0.0/24");
            return None;
        };
        let net = match s.parse::<Ipv4Net>() {
            Ok(n) => n,
            // A bare address is the /32 it names.
            Err(_) => match s.parse::<Ipv4Addr>() {
                Ok(a) => Ipv4Net::from(a),
                Err(_) => {
                    self.err(
                        path,
                        format!("`{s}` is not an IPv4 CIDR such as 10.50.0.0/24"),
                    );
                    return None;
                }
            },
        };
        if net.trunc() != net {
            self.err(
                path,
                format!("`{s}` has host bits set; did you mean {}?", net.trunc()),
            );
            return None;
        }
        if let Some(f) = FORBIDDEN.iter().find(|f| f.contains(&net)) {
            self.err(
                path,
                format!("`{s}` lies in {f}, which a lab may never reach"),
            );
            return None;
        }
        Some(net)
    }

    fn host(&mut self, v: &Value, path: &str) -> Option<String> {
        let Some(s) = v.as_str() else {
            self.err(path, "must be a host name or an IPv4 address");
            return None;
        };
        if let Ok(a) = s.parse::<Ipv4Addr>() {
            if in_forbidden(a) {
                self.err(path, format!("{a} is an address a lab may never reach"));
                return None;
            }
            return Some(s.to_owned());
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let name = s.strip_suffix('.').unwrap_or(s);
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            self.err(path, format!("`{s}` is not a host name or an IPv4 address"));
            return None;
        }
        Some(name.to_ascii_lowercase())
    }

    fn ports(&mut self, v: Option<&Value>, path: &str) -> Option<Vec<(u16, u16)>> {
        let list = match v.and_then(Value::as_array) {
            Some(l) if !l.is_empty() && l.len() <= MAX_PORTS => l,
            _ => {
                self.err(
                    path,
                    format!("must be a list of 1 to {MAX_PORTS} ports or `first-last` ranges"),
                );
                return None;
            }
        };
        let mut out = Vec::new();
        for (i, p) in list.iter().enumerate() {
            match port_range(p) {
                Some(r) => out.push(r),
                None => self.err(
                    format!("{path}[{i}]"),
                    format!(
                        "`{}` is not a port (1-65535) or a range such as 8000-8099",
                        show(p)
                    ),
                ),
            }
        }
        (out.len() == list.len()).then_some(out)
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn port_range(v: &Value) -> Option<(u16, u16)> {
    let port = |n: u64| u16::try_from(n).ok().filter(|p| *p > 0);
    match v {
        Value::Number(n) => n.as_u64().and_then(port).map(|p| (p, p)),
        Value::String(s) => {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let a = port(a.trim().parse().ok()?)?;
            let b = port(b.trim().parse().ok()?)?;
            (a <= b).then_some((a, b))
        }
        _ => None,
    }
}

fn valid_name(n: &str) -> bool {
    (1..=63).contains(&n.len())
        && n.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
#[path = "profiles_tests.rs"]
mod tests;
