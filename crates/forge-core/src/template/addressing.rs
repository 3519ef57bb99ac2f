//! Deterministic address plan of a lab (docs/design.md §4): which interface of which container gets
//! which address on which subnet bridge. Pure: the runtime turns the plan into netlink calls.
//!
//! Rules: explicit addresses are honoured; the subnet's `gateway` is reserved for whoever claims
//! it explicitly; implicit attachments get the lowest free host address from offset 10 upward
//! (`.10`, `.11`, …) in declaration order, leaving the low addresses to explicit infrastructure
//! such as routers at `.1`; `address: none` leaves an interface without IPv4 (a DHCP client's).
//! Interfaces are named `eth0`, `eth1`, … in attachment order. Every interface has a MAC
//! derived from its place in the plan, so a restarted container keeps it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::ScenarioTemplate;

/// First host offset used for implicit addresses.
pub const FIRST_IMPLICIT_HOST: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPlan {
    pub subnets: Vec<PlannedSubnet>,
    pub containers: Vec<PlannedContainer>,
    /// `/etc/hosts` lines for every lab host: `(address, names)`.
    pub hosts: Vec<(Ipv4Addr, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedSubnet {
    pub name: String,
    pub cidr: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<Ipv6Net>,
    /// Bridge device name inside the lab's fabric namespace (`br0`, `br1`, …).
    pub bridge: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedContainer {
    pub name: String,
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub subnet: String,
    /// Bridge in the fabric namespace this interface's peer joins.
    pub bridge: String,
    /// Interface name inside the container (`eth0`, …).
    pub ifname: String,
    /// `None`: plumbed and up without IPv4 (`address: none`).
    pub address: Option<Ipv4Addr>,
    pub prefix_len: u8,
    /// The IPv6 address on a dual-stack subnet (`cidr6`), unless `address6: none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    /// The `cidr6` prefix length (0 when the subnet has none).
    #[serde(default)]
    pub prefix6: u8,
    /// Locally administered and unique within the lab: `02:<bridge>:<IPv4 address>` for an
    /// addressed interface (so neighbours' ARP caches stay right across a restart),
    /// `02:<bridge>:00:00:<container>:<attachment>` for an unaddressed one (stable, so a DHCP
    /// server may key a static lease on it; lab subnets never start with octet 0). All zero
    /// in the `forge.links` label of a container launched before MACs were planned.
    #[serde(default)]
    pub mac: [u8; 6],
}

impl Attachment {
    /// `address6/prefix6`, if the interface has an IPv6 address.
    pub fn cidr6(&self) -> Option<String> {
        self.address6.map(|a| format!("{a}/{}", self.prefix6))
    }

    /// `address/prefix`, or `none`.
    pub fn cidr(&self) -> String {
        match self.address {
            Some(a) => format!("{a}/{}", self.prefix_len),
            None => "none".to_owned(),
        }
    }
}

fn mac_of(
    bridge: usize,
    address: Option<Ipv4Addr>,
    container: usize,
    attachment: usize,
) -> [u8; 6] {
    // Validation bounds containers (32) and attachments (8); a byte holds them.
    let b = |n: usize| u8::try_from(n).unwrap_or(u8::MAX);
    match address {
        Some(a) => {
            let [o1, o2, o3, o4] = a.octets();
            [0x02, b(bridge), o1, o2, o3, o4]
        }
        None => [0x02, b(bridge), 0, 0, b(container), b(attachment)],
    }
}

/// Why a plan cannot be made (validation reports these earlier with locations).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("container {container}: unknown subnet `{subnet}`")]
    UnknownSubnet { container: String, subnet: String },
    #[error("subnet {subnet}: no free address left for container {container}")]
    Exhausted { subnet: String, container: String },
}

/// Computes the lab's address plan. Validated templates always plan; the error is for callers
/// that skipped validation.
pub fn plan_lab(t: &ScenarioTemplate) -> Result<LabPlan, PlanError> {
    let subnets: Vec<PlannedSubnet> = t
        .spec
        .network
        .subnets
        .iter()
        .enumerate()
        .map(|(i, s)| PlannedSubnet {
            name: s.name.clone(),
            cidr: s.cidr.trunc(),
            cidr6: s.cidr6.map(|n| n.trunc()),
            bridge: format!("br{i}"),
        })
        .collect();
    let by_name: BTreeMap<&str, (usize, &PlannedSubnet)> = subnets
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), (i, s)))
        .collect();

    // Reserve explicit addresses and gateways first so implicit ones never collide with them.
    let mut taken: BTreeMap<&str, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for s in &t.spec.network.subnets {
        let set = taken.entry(s.name.as_str()).or_default();
        set.extend(s.gateway);
    }
    let mut taken6: BTreeMap<&str, BTreeSet<Ipv6Addr>> = BTreeMap::new();
    for c in &t.spec.assets.containers {
        for a in &c.networks {
            if let Some(addr) = a.address() {
                taken.entry(a.subnet()).or_default().insert(addr);
            }
            if let Some(addr) = a.address6() {
                taken6.entry(a.subnet()).or_default().insert(addr);
            }
        }
    }

    let mut containers = Vec::new();
    let mut hosts: Vec<(Ipv4Addr, Vec<String>)> = Vec::new();
    for (ci, c) in t.spec.assets.containers.iter().enumerate() {
        let mut attachments = Vec::new();
        for (i, a) in c.networks.iter().enumerate() {
            let (bi, subnet) =
                by_name
                    .get(a.subnet())
                    .copied()
                    .ok_or_else(|| PlanError::UnknownSubnet {
                        container: c.name.clone(),
                        subnet: a.subnet().to_owned(),
                    })?;
            let address = match a.address() {
                Some(addr) => Some(addr),
                None if a.unaddressed() => None,
                None => {
                    let set = taken.entry(a.subnet()).or_default();
                    let addr = next_free(subnet.cidr, set).ok_or_else(|| PlanError::Exhausted {
                        subnet: subnet.name.clone(),
                        container: c.name.clone(),
                    })?;
                    set.insert(addr);
                    Some(addr)
                }
            };
            let address6 = match (subnet.cidr6, a.address6()) {
                (_, Some(addr)) => Some(addr),
                (None, None) => None,
                (Some(_), None) if a.unaddressed6() => None,
                (Some(net), None) => {
                    let set = taken6.entry(a.subnet()).or_default();
                    let addr =
                        super::ipv6::next_free(&net, set).ok_or_else(|| PlanError::Exhausted {
                            subnet: subnet.name.clone(),
                            container: c.name.clone(),
                        })?;
                    set.insert(addr);
                    Some(addr)
                }
            };
            attachments.push(Attachment {
                subnet: subnet.name.clone(),
                bridge: subnet.bridge.clone(),
                ifname: format!("eth{i}"),
                address,
                prefix_len: subnet.cidr.prefix_len(),
                address6,
                prefix6: subnet.cidr6.map_or(0, |n| n.prefix_len()),
                mac: mac_of(bi, address, ci, i),
            });
        }
        // The plain name goes to the first interface that has an address.
        let mut named = false;
        for a in &attachments {
            let Some(addr) = a.address else { continue };
            let mut names = vec![format!("{}-{}", c.name, a.subnet)];
            if !named {
                names.insert(0, c.name.clone());
                named = true;
            }
            hosts.push((addr, names));
        }
        containers.push(PlannedContainer {
            name: c.name.clone(),
            attachments,
        });
    }
    Ok(LabPlan {
        subnets,
        containers,
        hosts,
    })
}

/// The usable host addresses of `cidr`, first and last inclusive: a /31 (RFC 3021) has no
/// network or broadcast address, so both of its addresses are hosts; any larger subnet loses
/// its first and last.
pub fn host_range(cidr: &Ipv4Net) -> (u32, u32) {
    let (network, broadcast) = (u32::from(cidr.network()), u32::from(cidr.broadcast()));
    match cidr.prefix_len() {
        31 => (network, broadcast),
        32 => (network, network),
        _ => (network + 1, broadcast - 1),
    }
}

/// Whether `a` is a usable host address of `cidr`.
pub fn is_host(cidr: &Ipv4Net, a: Ipv4Addr) -> bool {
    let (first, last) = host_range(cidr);
    (first..=last).contains(&u32::from(a))
}

fn next_free(cidr: Ipv4Net, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let (first, last) = host_range(&cidr);
    let base = u32::from(cidr.network());
    // Small subnets (/28 and smaller, down to /30 and /31) have no room above .10: fall back
    // to the first host.
    let start = if base + FIRST_IMPLICIT_HOST <= last {
        base + FIRST_IMPLICIT_HOST
    } else {
        first
    };
    (start..=last)
        .map(Ipv4Addr::from)
        .find(|a| !taken.contains(a))
}

impl LabPlan {
    pub fn container(&self, name: &str) -> Option<&PlannedContainer> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The `/etc/hosts` file every lab container gets.
    pub fn hosts_file(&self) -> String {
        hosts_file(&self.hosts)
    }
}

/// Docker's own header, so a lab sees the same file whether the engine or the runtime wrote it.
const HOSTS_HEADER: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\n\
ff02::1\tip6-allnodes\n\
ff02::2\tip6-allrouters\n";

/// An `/etc/hosts` file: Docker's header, then one line per address that has names, with its
/// names, in the given order.
pub fn hosts_file(hosts: &[(Ipv4Addr, Vec<String>)]) -> String {
    let mut out = String::from(HOSTS_HEADER);
    for (addr, names) in hosts.iter().filter(|(_, n)| !n.is_empty()) {
        out.push_str(&format!("{addr}\t{}\n", names.join(" ")));
    }
    out
}
