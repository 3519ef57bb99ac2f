//! Egress allowlist profiles (docs/design.md §4): the one way a lab reaches anything outside
//! itself. Deny stays the default: a lab whose template says `egress: deny` gets no uplink at
//! all, as before; only `egress: allowlist` with a profile the operator defined gets one.
//!
//! An allowlisted lab's fabric gets, before anything can flow:
//! - the profile, looked up by name (unknown → the launch fails naming it) and its host names
//!   resolved by the system resolver at lab start (they also go into the lab's `/etc/hosts`);
//! - an uplink: a veth pair from the fabric (`up0`) to the uplink namespace (the host's own by
//!   default, or a named one the operator gives) addressed with a /31 of the link pool
//!   ([`uplink`] explains the allocation), with the fabric's default route through it;
//! - the nftables table `inet forge_egress` ([`nft`]): input drops everything, forward drops by
//!   default and accepts only the profile's (CIDR, protocol, ports) tuples out of the uplink,
//!   after refusing what a lab may never reach (loopback, link-local and cloud metadata,
//!   multicast, the link pool, i.e. other labs, its own subnets, and every address of the uplink
//!   namespace, i.e. the host); replies come back through conntrack; the lab's addresses are masqueraded to the
//!   uplink address, so identical labs never collide upstream;
//! - a gateway address on each subnet without a router of its own (no declared `gateway`):
//!   the highest host address the lab does not use (`.254` of a /24 in practice), which
//!   becomes, by the usual routing rule, the default route of the single-homed containers
//!   there. Subnets with a declared gateway keep their template router, which may route to the
//!   fabric's address itself. The fabric never routes between the lab's subnets.
//!
//! What stays the operator's: beyond the uplink namespace, traffic follows that namespace's
//! routes and firewall. On the host's own namespace that includes its forward filter, and
//! Docker sets iptables' FORWARD policy to drop, so allow the pool there (`iptables -I
//! DOCKER-USER -s <pool> -j ACCEPT` and `-d <pool> -m conntrack --ctstate
//! ESTABLISHED,RELATED -j ACCEPT`); the runtime never edits another program's tables. The
//! kernel writes `FORGE_EGRESS_DENY: ` lines from a lab's namespace only with
//! `net.netfilter.nf_log_all_netns=1`.

mod nft;
pub mod profiles;
mod uplink;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use forge_core::template::{Egress, LabPlan, ScenarioTemplate};
pub use ipnet::Ipv4Net;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

pub use nft::{LOG_PREFIX, UPLINK_IF};
pub use profiles::{EgressProfiles, ProfilesError, ResolvedProfile};
pub use uplink::remove;

use crate::error::RuntimeError;
use crate::fabric::Fabric;
use crate::netns;

/// What a lab may never reach, whatever a profile says.
pub const FORBIDDEN: [Ipv4Net; 5] = [
    // "this network", loopback, link-local (with cloud metadata services), multicast, reserved
    // and broadcast.
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4),
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// The default link pool: the last /16 of the RFC 6598 shared address space, never on the
/// internet and seldom on a LAN; 32768 labs with an uplink at once.
pub const DEFAULT_LINK_POOL: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(100, 127, 0, 0), 16);

pub fn in_forbidden(a: Ipv4Addr) -> bool {
    FORBIDDEN.iter().any(|n| n.contains(&a))
}

/// Where labs' uplinks attach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Uplink {
    /// The namespace the runtime runs in (the host's): traffic leaves by the host's routes.
    #[default]
    Host,
    /// A named namespace (`/run/netns/<name>`) the operator routes onward.
    Netns(String),
}

impl Uplink {
    fn label(&self) -> String {
        match self {
            Self::Host => "the host namespace".into(),
            Self::Netns(n) => n.clone(),
        }
    }

    fn alias(&self) -> String {
        match self {
            Self::Host => "host".into(),
            Self::Netns(n) => format!("netns={n}"),
        }
    }

    fn from_alias(s: &str) -> Option<Self> {
        match s {
            "host" => Some(Self::Host),
            _ => s
                .strip_prefix("netns=")
                .filter(|n| valid_netns_name(n))
                .map(|n| Self::Netns(n.to_owned())),
        }
    }
}

fn valid_netns_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n != "."
        && n != ".."
        && !n.contains(['/', '\0'])
        && !n.starts_with(netns::FABRIC_PREFIX)
}

/// The runtime's egress settings: the operator's profiles, where uplinks attach and the pool
/// their addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressConfig {
    pub profiles: EgressProfiles,
    pub uplink: Uplink,
    pub link_pool: Ipv4Net,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            profiles: EgressProfiles::default(),
            uplink: Uplink::Host,
            link_pool: DEFAULT_LINK_POOL,
        }
    }
}

impl EgressConfig {
    /// Checked settings: a pool of at least one /31 outside what labs may never reach, and an
    /// uplink namespace name `ip netns` accepts that is not a lab's fabric.
    pub fn new(
        profiles: EgressProfiles,
        uplink: Uplink,
        link_pool: Ipv4Net,
    ) -> Result<Self, RuntimeError> {
        if link_pool.prefix_len() > 31 || link_pool.trunc() != link_pool {
            return Err(RuntimeError::Invalid(format!(
                "egress link pool {link_pool} must be a network of at least two addresses \
                 without host bits"
            )));
        }
        if let Some(f) = FORBIDDEN.iter().find(|f| f.contains(&link_pool.network())) {
            return Err(RuntimeError::Invalid(format!(
                "egress link pool {link_pool} lies in {f}, which cannot carry lab traffic"
            )));
        }
        if let Uplink::Netns(n) = &uplink
            && !valid_netns_name(n)
        {
            return Err(RuntimeError::Invalid(format!(
                "egress uplink namespace `{n}` is not a namespace name (no `/`, not a lab's \
                 forge_scn_ fabric)"
            )));
        }
        Ok(Self {
            profiles,
            uplink,
            link_pool,
        })
    }
}

/// A subnet where the fabric is the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricGateway {
    pub subnet: String,
    pub bridge: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

/// What an allowlisted lab's launch prepared before building anything.
#[derive(Debug, Clone)]
pub struct LabEgress {
    pub profile: ResolvedProfile,
    pub gateways: Vec<FabricGateway>,
}

/// The egress of `t`: `None` for a deny lab; the resolved profile and gateways for an
/// allowlisted one. Fails without side effects (unknown profile, unresolvable host).
pub async fn prepare(
    cfg: &EgressConfig,
    t: &ScenarioTemplate,
    plan: &LabPlan,
) -> Result<Option<LabEgress>, RuntimeError> {
    if t.spec.network.egress == Egress::Deny {
        return Ok(None);
    }
    let name = t.spec.network.allowlist_profile.as_deref().ok_or_else(|| {
        RuntimeError::Invalid("egress `allowlist` needs an allowlist_profile".into())
    })?;
    let profile = cfg.profiles.get(name).ok_or_else(|| {
        let names: Vec<&str> = cfg.profiles.names().collect();
        RuntimeError::EgressProfileUnknown {
            profile: name.to_owned(),
            configured: if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            },
        }
    })?;
    let profile = profile.resolve().await?;
    Ok(Some(LabEgress {
        profile,
        gateways: fabric_gateways(t, plan)?,
    }))
}

/// The fabric's address on every subnet without a declared gateway: its highest host address
/// no container of the lab uses. Point-to-point links (/30, /31) are left alone: their two
/// hosts are the routers at either end, and a lab routes out through its LANs.
pub fn fabric_gateways(
    t: &ScenarioTemplate,
    plan: &LabPlan,
) -> Result<Vec<FabricGateway>, RuntimeError> {
    let mut out = Vec::new();
    for (s, planned) in t.spec.network.subnets.iter().zip(&plan.subnets) {
        if s.gateway.is_some() || planned.cidr.prefix_len() >= 30 {
            continue;
        }
        let used: BTreeSet<Ipv4Addr> = plan
            .containers
            .iter()
            .flat_map(|c| &c.attachments)
            .filter(|a| a.subnet == s.name)
            .filter_map(|a| a.address)
            .collect();
        let first = u32::from(planned.cidr.network()) + 1;
        let last = u32::from(planned.cidr.broadcast()).saturating_sub(1);
        let address = (first..=last)
            .rev()
            .map(Ipv4Addr::from)
            .find(|a| !used.contains(a))
            .ok_or_else(|| {
                RuntimeError::Plan(format!(
                    "subnet {} has no free address for the egress gateway",
                    s.name
                ))
            })?;
        out.push(FabricGateway {
            subnet: s.name.clone(),
            bridge: planned.bridge.clone(),
            address,
            prefix_len: planned.cidr.prefix_len(),
        });
    }
    Ok(out)
}

/// Gives a fresh fabric its uplink, ruleset and gateway addresses. The uplink comes up, and
/// the bridges get addresses, only once the ruleset is in place.
pub async fn attach(
    fabric: &Fabric,
    plan: &LabPlan,
    egress: &LabEgress,
    cfg: &EgressConfig,
) -> Result<(), RuntimeError> {
    let ns = fabric.name.as_str();
    let h = fabric.handle();
    let made = uplink::create(h, ns, &cfg.uplink, cfg.link_pool).await?;
    let never = nft::merge(
        FORBIDDEN
            .iter()
            .copied()
            .chain([cfg.link_pool])
            // The lab's own subnets are never "outside", whatever the profile's CIDR covers.
            .chain(plan.subnets.iter().map(|s| s.cidr))
            .chain(made.upstream_addresses.iter().map(|a| Ipv4Net::from(*a))),
    );
    let bridges: Vec<String> = plan.subnets.iter().map(|s| s.bridge.clone()).collect();
    let script = nft::fabric_script(&nft::FabricRules {
        bridges: &bridges,
        never,
        rules: &egress.profile.rules,
        profile: &egress.profile.name,
    });
    let path = netns::ns_path(ns);
    nft::apply(&path, ns, &script).await?;
    netns::write_sysctls(
        path,
        vec![
            ("net/ipv4/ip_forward".into(), "1".into()),
            // The fabric routes only to its uplink; it has no business redirecting anyone.
            ("net/ipv4/conf/all/send_redirects".into(), "0".into()),
            (
                format!("net/ipv6/conf/{UPLINK_IF}/disable_ipv6"),
                "1".into(),
            ),
        ],
    )
    .await?;
    let fail = |op: &'static str| move |e: rtnetlink::Error| RuntimeError::netlink(ns, op, e);
    h.address()
        .add(made.fabric_index, IpAddr::V4(made.link.fabric), 31)
        .execute()
        .await
        .map_err(fail("add uplink address"))?;
    h.link()
        .set(LinkUnspec::new_with_index(made.fabric_index).up().build())
        .execute()
        .await
        .map_err(fail("uplink up"))?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(made.link.peer)
        .build();
    h.route()
        .add(route)
        .execute()
        .await
        .map_err(fail("add default route"))?;
    for g in &egress.gateways {
        let idx = fabric.bridge_index(&g.bridge).ok_or_else(|| {
            RuntimeError::netlink(ns, "gateway address", format!("no bridge {}", g.bridge))
        })?;
        h.address()
            .add(idx, IpAddr::V4(g.address), g.prefix_len)
            .execute()
            .await
            .map_err(fail("add gateway address"))?;
    }
    tracing::info!(
        fabric = ns,
        profile = %egress.profile.name,
        uplink = %made.link.fabric,
        peer = %made.link.peer,
        "egress uplink up"
    );
    Ok(())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
