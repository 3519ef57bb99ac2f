//! Checks the schema cannot express: cross references, uniqueness, address arithmetic, and the
//! mistakes an author would otherwise only discover at spawn time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::diagnostics::Diagnostic;
use super::yaml::SpannedDoc;
use super::{Egress, EvidenceType, ScenarioTemplate};
use crate::model::Track;

const TIERS: [&str; 3] = ["foundation", "intermediate", "advanced"];
const MAX_CONTAINERS: usize = 32;
const MAX_ATTACHMENTS: usize = 8;
const MAX_TIMEOUT_MINUTES: u64 = 24 * 60;
const MIN_MEMORY_PER_CONTAINER_MB: u64 = 16;

/// Linux capability names (without `CAP_`), so typos are caught before the policy sees them.
const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// Private ranges lab subnets must live in (RFC 1918): lab addresses never shadow real hosts.
fn is_private(net: &Ipv4Net) -> bool {
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        .iter()
        .filter_map(|p| p.parse::<Ipv4Net>().ok())
        .any(|p| p.contains(net))
}

struct Checker<'a> {
    t: &'a ScenarioTemplate,
    doc: &'a SpannedDoc,
    out: Vec<Diagnostic>,
}

/// Every semantic problem of a schema-valid template.
pub fn check(t: &ScenarioTemplate, doc: &SpannedDoc) -> Vec<Diagnostic> {
    let mut c = Checker {
        t,
        doc,
        out: Vec::new(),
    };
    c.labels();
    c.limits();
    let subnets = c.subnets();
    c.containers(&subnets);
    c.out.extend(super::ipv6::check(t));
    c.criteria(&subnets);
    c.solution();
    if c.out.is_empty()
        && let Err(e) = super::plan_lab(t)
    {
        c.err("spec.network.subnets", e.to_string());
    }
    c.out
}

impl Checker<'_> {
    fn err(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.out.push(Diagnostic::new(path, reason));
    }

    fn raw(&self, path: &str) -> Option<&serde_json::Value> {
        let mut v = &self.doc.value;
        for seg in path.split('.') {
            let (key, idx) = match seg.split_once('[') {
                Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (seg, None),
            };
            v = v.get(key)?;
            if let Some(i) = idx {
                v = v.get(i)?;
            }
        }
        Some(v)
    }

    fn labels(&mut self) {
        let labels = &self.t.metadata.labels;
        let classes: Vec<(usize, &str)> = labels
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.strip_prefix("class:").map(|v| (i, v)))
            .collect();
        match classes.as_slice() {
            [] => self.err(
                "metadata.labels",
                "needs exactly one `class:<track>` label (netplus, ccna or cissp); found none",
            ),
            [(i, v)] => {
                if let Err(e) = v.parse::<Track>() {
                    self.err(format!("metadata.labels[{i}]"), e.to_string());
                }
            }
            [_, (i, _), ..] => self.err(
                format!("metadata.labels[{i}]"),
                format!(
                    "needs exactly one `class:<track>` label; found {}",
                    classes.len()
                ),
            ),
        }
        let tiers: Vec<(usize, &str)> = labels
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.strip_prefix("tier:").map(|v| (i, v)))
            .collect();
        for (n, (i, v)) in tiers.iter().enumerate() {
            if n > 0 {
                self.err(format!("metadata.labels[{i}]"), "at most one `tier:` label");
            } else if !TIERS.contains(v) {
                self.err(
                    format!("metadata.labels[{i}]"),
                    format!("unknown tier `{v}`; use foundation, intermediate or advanced"),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (i, l) in labels.iter().enumerate() {
            if !seen.insert(l) {
                self.err(
                    format!("metadata.labels[{i}]"),
                    format!("duplicate label `{l}`"),
                );
            }
        }
    }

    fn limits(&mut self) {
        let l = &self.t.spec.limits;
        if !l.cpu.is_finite() {
            self.err("spec.limits.cpu", "must be a finite number of cores");
        }
        if l.timeout_minutes > MAX_TIMEOUT_MINUTES {
            self.err(
                "spec.limits.timeout_minutes",
                format!(
                    "{} minutes is more than a day; limits are in minutes",
                    l.timeout_minutes
                ),
            );
        }
        let n = self.t.spec.assets.containers.len() as u64;
        if n > 0 && l.memory_mb / n < MIN_MEMORY_PER_CONTAINER_MB {
            self.err(
                "spec.limits.memory_mb",
                format!(
                    "{} MiB across {n} containers leaves less than {MIN_MEMORY_PER_CONTAINER_MB} MiB each",
                    l.memory_mb
                ),
            );
        }
        let net = &self.t.spec.network;
        match (net.egress, &net.allowlist_profile) {
            (Egress::Allowlist, None) => self.err(
                "spec.network.allowlist_profile",
                "egress `allowlist` needs an allowlist_profile",
            ),
            (Egress::Deny, Some(p)) => self.err(
                "spec.network.allowlist_profile",
                format!(
                    "profile `{p}` has no effect with egress `deny`; remove it or use `allowlist`"
                ),
            ),
            _ => {}
        }
    }

    /// Validates subnets; returns the parsed ones by name.
    fn subnets(&mut self) -> BTreeMap<String, Ipv4Net> {
        let mut nets: BTreeMap<String, Ipv4Net> = BTreeMap::new();
        let mut seen: Vec<(usize, Ipv4Net)> = Vec::new();
        for (i, s) in self.t.spec.network.subnets.iter().enumerate() {
            let p = format!("spec.network.subnets[{i}]");
            if nets.contains_key(&s.name) {
                self.err(
                    format!("{p}.name"),
                    format!("duplicate subnet name `{}`", s.name),
                );
                continue;
            }
            let cidr = s.cidr;
            let raw = self
                .raw(&format!("{p}.cidr"))
                .and_then(|v| v.as_str())
                .unwrap_or("");
            if cidr.trunc() != cidr {
                self.err(
                    format!("{p}.cidr"),
                    format!("`{raw}` has host bits set; did you mean {}?", cidr.trunc()),
                );
            }
            // /30 and /31 (RFC 3021) are the point-to-point links between routers; /32 has no peer.
            if !(8..=31).contains(&cidr.prefix_len()) {
                self.err(
                    format!("{p}.cidr"),
                    format!("prefix /{} must be between /8 and /31", cidr.prefix_len()),
                );
            }
            if !is_private(&cidr) {
                self.err(
                    format!("{p}.cidr"),
                    format!("{cidr} is not a private range; lab subnets must be inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"),
                );
            }
            for (j, other) in &seen {
                if other.contains(&cidr.network()) || cidr.contains(&other.network()) {
                    self.err(
                        format!("{p}.cidr"),
                        format!("{cidr} overlaps subnet spec.network.subnets[{j}] ({other})"),
                    );
                }
            }
            if let Some(g) = s.gateway {
                self.host_address(&format!("{p}.gateway"), g, &cidr);
            }
            seen.push((i, cidr));
            nets.insert(s.name.clone(), cidr.trunc());
        }
        nets
    }

    fn host_address(&mut self, path: &str, a: Ipv4Addr, net: &Ipv4Net) {
        if !net.contains(&a) {
            self.err(path, format!("{a} is outside subnet {net}"));
        } else if !super::addressing::is_host(net, a) {
            self.err(
                path,
                format!("{a} is the network or broadcast address of {net}"),
            );
        }
    }

    fn containers(&mut self, subnets: &BTreeMap<String, Ipv4Net>) {
        let containers = &self.t.spec.assets.containers;
        if containers.len() > MAX_CONTAINERS {
            self.err(
                "spec.assets.containers",
                format!("at most {MAX_CONTAINERS} containers per lab"),
            );
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut addresses: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
        let mut learners = 0;
        for (i, c) in containers.iter().enumerate() {
            let p = format!("spec.assets.containers[{i}]");
            if let Some(j) = names.insert(&c.name, i) {
                self.err(
                    format!("{p}.name"),
                    format!(
                        "duplicate container name `{}` (first at containers[{j}])",
                        c.name
                    ),
                );
            }
            if c.learner {
                learners += 1;
                if learners > 1 {
                    self.err(
                        format!("{p}.learner"),
                        "only one container can be the learner's",
                    );
                }
            }
            if c.networks.len() > MAX_ATTACHMENTS {
                self.err(
                    format!("{p}.networks"),
                    format!("at most {MAX_ATTACHMENTS} attachments per container"),
                );
            }
            let mut attached = BTreeSet::new();
            for (k, a) in c.networks.iter().enumerate() {
                let ap = format!("{p}.networks[{k}]");
                let Some(net) = subnets.get(a.subnet()) else {
                    let known: Vec<&str> = subnets.keys().map(String::as_str).collect();
                    self.err(
                        ap,
                        format!(
                            "unknown subnet `{}`; declared subnets: {}",
                            a.subnet(),
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                    continue;
                };
                if !attached.insert(a.subnet()) {
                    self.err(
                        ap.clone(),
                        format!("attached to subnet `{}` twice", a.subnet()),
                    );
                }
                if let Some(addr) = a.address() {
                    let addr_path = format!("{ap}.address");
                    self.host_address(&addr_path, addr, &net.clone());
                    if let Some(owner) = addresses.insert(addr, c.name.clone()) {
                        self.err(
                            addr_path,
                            format!("address {addr} is already used by container `{owner}`"),
                        );
                    }
                }
            }
            let mut caps = BTreeSet::new();
            for (k, cap) in c.capabilities.iter().enumerate() {
                let cp = format!("{p}.capabilities[{k}]");
                if let Some(stripped) = cap.strip_prefix("CAP_") {
                    self.err(cp, format!("write `{stripped}` without the CAP_ prefix"));
                } else if !CAPABILITIES.contains(&cap.as_str()) {
                    self.err(cp, format!("unknown capability `{cap}`"));
                } else if !caps.insert(cap) {
                    self.err(cp, format!("duplicate capability `{cap}`"));
                }
            }
        }
        // Gateways must belong to someone attached, or the routes that point at them lead nowhere.
        for (i, s) in self.t.spec.network.subnets.iter().enumerate() {
            if let Some(g) = s.gateway {
                let owned = containers.iter().any(|c| {
                    c.networks
                        .iter()
                        .any(|a| a.subnet() == s.name && a.address() == Some(g))
                });
                if !owned {
                    self.err(
                        format!("spec.network.subnets[{i}].gateway"),
                        format!("no container is attached to `{}` with address {g}", s.name),
                    );
                }
            }
        }
    }

    fn criteria(&mut self, subnets: &BTreeMap<String, Ipv4Net>) {
        let t = self.t;
        if t.spec.success_criteria.is_empty() {
            self.err(
                "spec.successCriteria",
                "needs at least one success criterion",
            );
        }
        let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, c) in t.spec.success_criteria.iter().enumerate() {
            let p = format!("spec.successCriteria[{i}]");
            if let Some(j) = ids.insert(&c.id, i) {
                self.err(
                    format!("{p}.id"),
                    format!(
                        "duplicate criterion id `{}` (first at successCriteria[{j}])",
                        c.id
                    ),
                );
            }
            if !c.weight.is_finite() {
                self.err(
                    format!("{p}.weight"),
                    "must be a finite number greater than 0",
                );
            }
            for (k, e) in c.evidence.iter().enumerate() {
                self.evidence(&format!("{p}.evidence[{k}]"), e, subnets);
            }
        }
    }

    fn evidence(&mut self, p: &str, e: &super::Evidence, subnets: &BTreeMap<String, Ipv4Net>) {
        let t = self.t;
        if let Some(c) = &e.container
            && t.container(c).is_none()
        {
            self.err(
                format!("{p}.container"),
                format!(
                    "unknown container `{c}`; declared: {}",
                    self.container_names()
                ),
            );
        }
        let kind = e.kind.as_str();
        let needs = |field: &str| format!("`{kind}` evidence needs `{field}`");
        let stray = |field: &str| format!("`{field}` does not apply to `{kind}` evidence");
        let (wants_command, wants_path, wants_target) = match e.kind {
            EvidenceType::Command => (true, false, false),
            EvidenceType::File => (false, true, false),
            EvidenceType::Network => (false, false, true),
            EvidenceType::State => (false, false, false),
        };
        for (field, present, wanted) in [
            ("command", e.command.is_some(), wants_command),
            ("path", e.path.is_some(), wants_path),
            ("target", e.target.is_some(), wants_target),
        ] {
            if wanted && !present {
                self.err(p.to_owned(), needs(field));
            } else if present && !wanted {
                self.err(format!("{p}.{field}"), stray(field));
            }
        }
        if e.timeout_seconds.is_some()
            && !matches!(e.kind, EvidenceType::Command | EvidenceType::Network)
        {
            self.err(format!("{p}.timeout_seconds"), stray("timeout_seconds"));
        }
        if let Some(path) = &e.path
            && (!path.starts_with('/') || path.split('/').any(|s| s == ".."))
        {
            self.err(
                format!("{p}.path"),
                format!("`{path}` must be an absolute path without `..`"),
            );
        }
        if let Some(target) = &e.target {
            self.target(&format!("{p}.target"), target, subnets);
        }
        let x = &e.expect;
        let allowed: &[&str] = match e.kind {
            EvidenceType::Command => &["exit_code", "stdout_contains", "stdout_not_contains"],
            EvidenceType::File => &["file_exists", "contains", "not_contains"],
            EvidenceType::Network => &["reachable"],
            EvidenceType::State => &["running"],
        };
        let set: Vec<&str> = [
            ("exit_code", x.exit_code.is_some()),
            ("stdout_contains", x.stdout_contains.is_some()),
            ("stdout_not_contains", x.stdout_not_contains.is_some()),
            ("file_exists", x.file_exists.is_some()),
            ("contains", x.contains.is_some()),
            ("not_contains", x.not_contains.is_some()),
            ("reachable", x.reachable.is_some()),
            ("running", x.running.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
        for k in &set {
            if !allowed.contains(k) {
                self.err(
                    format!("{p}.expect.{k}"),
                    format!(
                        "`{k}` does not apply to `{kind}` evidence (use {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
        if e.kind == EvidenceType::Command && set.is_empty() {
            self.err(
                format!("{p}.expect"),
                "command evidence checks nothing; add exit_code or stdout_contains",
            );
        }
        if x.file_exists == Some(false) && (x.contains.is_some() || x.not_contains.is_some()) {
            self.err(
                format!("{p}.expect"),
                "a file expected absent cannot be checked for content",
            );
        }
    }

    /// Network probes stay inside the lab: an IP target must be in a lab subnet, a name must be
    /// a lab host.
    fn target(&mut self, p: &str, target: &str, subnets: &BTreeMap<String, Ipv4Net>) {
        let host = match crate::playbook::split_target(target) {
            (h, Some(port)) => {
                if port.parse::<u16>().map_or(true, |n| n == 0) {
                    self.err(p, format!("`{target}`: port must be 1-65535"));
                    return;
                }
                h
            }
            (h, None) => h,
        };
        if let Ok(ip) = host.parse::<std::net::Ipv6Addr>() {
            let inside = self
                .t
                .spec
                .network
                .subnets
                .iter()
                .any(|s| s.cidr6.is_some_and(|n| n.contains(&ip)));
            if !inside {
                self.err(
                    p,
                    format!("{ip} is outside every lab subnet's cidr6; probes never leave the lab"),
                );
            }
        } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
            if !subnets.values().any(|n| n.contains(&ip)) {
                self.err(
                    p,
                    format!("{ip} is outside every lab subnet; probes never leave the lab"),
                );
            }
        } else {
            let known = self.t.spec.assets.containers.iter().any(|c| {
                c.name == host
                    || c.networks
                        .iter()
                        .any(|a| format!("{}-{}", c.name, a.subnet()) == host)
            });
            if !known {
                self.err(p, format!("`{host}` is not a lab host; use a container name or an address in a lab subnet"));
            }
        }
    }

    fn solution(&mut self) {
        for (i, s) in self.t.spec.solution.iter().enumerate() {
            if self.t.container(&s.container).is_none() {
                self.err(
                    format!("spec.solution[{i}].container"),
                    format!(
                        "unknown container `{}`; declared: {}",
                        s.container,
                        self.container_names()
                    ),
                );
            }
        }
    }

    fn container_names(&self) -> String {
        self.t
            .spec
            .assets
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
