//! Deterministic address plan of a lab (docs/design.md §4): which interface of which container gets
//! which address on which subnet bridge. Pure: the runtime turns the plan into netlink calls.
//!
//! Rules: explicit addresses are honoured; the subnet's `gateway` is reserved for whoever claims
//! it explicitly; implicit attachments get the lowest free host address from offset 10 upward
//! (`.10`, `.11`, …) in declaration order, leaving the low addresses to explicit infrastructure
//! such as routers at `.1`. Interfaces are named `eth0`, `eth1`, … in attachment order.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
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
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl Attachment {
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix_len)
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
            bridge: format!("br{i}"),
        })
        .collect();
    let by_name: BTreeMap<&str, &PlannedSubnet> =
        subnets.iter().map(|s| (s.name.as_str(), s)).collect();

    // Reserve explicit addresses and gateways first so implicit ones never collide with them.
    let mut taken: BTreeMap<&str, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for s in &t.spec.network.subnets {
        let set = taken.entry(s.name.as_str()).or_default();
        set.extend(s.gateway);
    }
    for c in &t.spec.assets.containers {
        for a in &c.networks {
            if let Some(addr) = a.address() {
                taken.entry(a.subnet()).or_default().insert(addr);
            }
        }
    }

    let mut containers = Vec::new();
    let mut hosts: Vec<(Ipv4Addr, Vec<String>)> = Vec::new();
    for c in &t.spec.assets.containers {
        let mut attachments = Vec::new();
        for (i, a) in c.networks.iter().enumerate() {
            let subnet = by_name
                .get(a.subnet())
                .ok_or_else(|| PlanError::UnknownSubnet {
                    container: c.name.clone(),
                    subnet: a.subnet().to_owned(),
                })?;
            let address = match a.address() {
                Some(addr) => addr,
                None => {
                    let set = taken.entry(a.subnet()).or_default();
                    let addr = next_free(subnet.cidr, set).ok_or_else(|| PlanError::Exhausted {
                        subnet: subnet.name.clone(),
                        container: c.name.clone(),
                    })?;
                    set.insert(addr);
                    addr
                }
            };
            attachments.push(Attachment {
                subnet: subnet.name.clone(),
                bridge: subnet.bridge.clone(),
                ifname: format!("eth{i}"),
                address,
                prefix_len: subnet.cidr.prefix_len(),
            });
        }
        for (i, a) in attachments.iter().enumerate() {
            let mut names = vec![format!("{}-{}", c.name, a.subnet)];
            if i == 0 {
                names.insert(0, c.name.clone());
            }
            hosts.push((a.address, names));
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

fn next_free(cidr: Ipv4Net, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let base = u32::from(cidr.network());
    let broadcast = u32::from(cidr.broadcast());
    // Small subnets (/29, /30) have no room above .10: fall back to the first host.
    let start = if base + FIRST_IMPLICIT_HOST < broadcast {
        base + FIRST_IMPLICIT_HOST
    } else {
        base + 1
    };
    (start..broadcast)
        .map(Ipv4Addr::from)
        .find(|a| !taken.contains(a))
}

impl LabPlan {
    pub fn container(&self, name: &str) -> Option<&PlannedContainer> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The `/etc/hosts` file every lab container gets.
    pub fn hosts_file(&self) -> String {
        let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        for (addr, names) in &self.hosts {
            out.push_str(&format!("{addr}\t{}\n", names.join(" ")));
        }
        out
    }
}
