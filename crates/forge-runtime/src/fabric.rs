//! A lab's fabric (docs/design.md §4): one bridge per subnet inside the lab's own namespace, and the
//! veth links that plug containers into it. All of it through netlink, none through `ip`.
//!
//! Per attachment the fabric end `v<container>x<attachment>` is created in the fabric, already
//! enslaved to its bridge and up, and its peer is created *directly* in the container's
//! namespace (`IFLA_NET_NS_PID`) under its final name `eth<n>` — one netlink request, no rename,
//! and no chance of a name clash in the fabric. The container side is then addressed and brought
//! up from a socket opened inside the container's namespace. IPv6 addresses (dual-stack subnets)
//! are added the same way, flagged `IFA_F_NODAD` so they answer at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use forge_core::template::{Attachment, LabPlan};
use futures::TryStreamExt;
use futures::future::try_join_all;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use crate::error::RuntimeError;
use crate::netns;

const EEXIST: i32 = 17;

/// Prefix of the alias on the fabric's `lo`, which records when the lab was created so that
/// cleanup can age namespaces that lost their containers.
const ALIAS_PREFIX: &str = "forge created_at=";

/// An open fabric namespace: a netlink handle inside it and its bridges' indexes.
pub struct Fabric {
    pub name: String,
    handle: Handle,
    bridges: HashMap<String, u32>,
}

/// What one container needs to be plumbed.
#[derive(Debug, Clone)]
pub struct Plumbing<'a> {
    /// Position of the container in the template (names the fabric-side veths).
    pub index: usize,
    pub pid: u32,
    pub links: &'a [Attachment],
    pub gateway: Option<Ipv4Addr>,
}

fn fail<'a>(ns: &'a str, op: &str) -> impl Fn(rtnetlink::Error) -> RuntimeError + 'a {
    let op = op.to_owned();
    move |e| RuntimeError::netlink(ns, &op, e)
}

fn is_eexist(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == EEXIST)
}

async fn link_index(h: &Handle, ns: &str, name: &str) -> Result<u32, RuntimeError> {
    let mut links = h.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(RuntimeError::netlink(
            ns,
            "get link",
            format!("no link {name}"),
        )),
        Err(e) => Err(RuntimeError::netlink(ns, &format!("get link {name}"), e)),
    }
}

fn name_of(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

impl Fabric {
    /// Creates the namespace `name` with one bridge (up, no address) per planned subnet.
    pub async fn create(
        name: &str,
        plan: &LabPlan,
        created_at: &str,
    ) -> Result<Self, RuntimeError> {
        let handle = netns::handle(netns::create(name).await?)?;
        let result = Self::populate(name, handle, plan, created_at).await;
        if result.is_err() {
            let _ = netns::delete(name).await;
        }
        result
    }

    async fn populate(
        name: &str,
        handle: Handle,
        plan: &LabPlan,
        created_at: &str,
    ) -> Result<Self, RuntimeError> {
        let adds = plan.subnets.iter().map(|s| {
            let h = handle.clone();
            async move {
                // No STP: ports forward at once instead of after a 15 s listening delay.
                let msg = LinkBridge::new(&s.bridge).build();
                h.link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(fail(name, "add bridge"))
            }
        });
        let alias = handle
            .link()
            .set(
                LinkUnspec::new_with_index(1)
                    .alias(format!("{ALIAS_PREFIX}{created_at}"))
                    .build(),
            )
            .execute();
        let (adds, alias) = futures::join!(try_join_all(adds), alias);
        adds?;
        alias.map_err(fail(name, "set lo alias"))?;
        Self::with_bridges(name, handle).await
    }

    /// Opens an existing fabric (re-plumbing after a container restart).
    pub async fn open(name: &str) -> Result<Self, RuntimeError> {
        let handle = netns::handle(netns::socket_in(netns::ns_path(name)).await?)?;
        Self::with_bridges(name, handle).await
    }

    /// The fabric reached through `handle`, its bridges read back from the namespace (a
    /// fresh one and a reopened one alike, so both know the kernel's indexes).
    async fn with_bridges(name: &str, handle: Handle) -> Result<Self, RuntimeError> {
        let mut fabric = Self {
            name: name.to_owned(),
            handle,
            bridges: HashMap::new(),
        };
        fabric.load_bridges().await?;
        Ok(fabric)
    }

    async fn load_bridges(&mut self) -> Result<(), RuntimeError> {
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links
            .try_next()
            .await
            .map_err(fail(&self.name, "list links"))?
        {
            if let Some(n) = name_of(&msg).filter(|n| n.starts_with("br")) {
                self.bridges.insert(n.to_owned(), msg.header.index);
            }
        }
        Ok(())
    }

    /// The netlink handle inside the fabric.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Index of the bridge `name` (`br0`, …).
    pub(crate) fn bridge_index(&self, name: &str) -> Option<u32> {
        self.bridges.get(name).copied()
    }

    /// When the fabric was created, from the alias on its `lo`.
    pub async fn created_at(&self) -> Option<String> {
        let mut links = self.handle.link().get().match_index(1).execute();
        let msg = links.try_next().await.ok()??;
        msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfAlias(s) => s.strip_prefix(ALIAS_PREFIX).map(str::to_owned),
            _ => None,
        })
    }

    /// Plugs one container into the fabric: veths, addresses, lo, default route.
    pub async fn plumb(&self, p: &Plumbing<'_>) -> Result<(), RuntimeError> {
        let ns_label = format!("container pid {}", p.pid);
        // The container-side socket needs a thread hop; overlap it with the veth creation.
        let inner = netns::socket_in(PathBuf::from(format!("/proc/{}/ns/net", p.pid)));
        let veths = try_join_all(
            p.links
                .iter()
                .enumerate()
                .map(|(ai, a)| self.add_veth(p, ai, a)),
        );
        let (inner, veths) = futures::join!(inner, veths);
        veths?;
        let h = netns::handle(inner?)?;
        configure_inside(&h, &ns_label, p.links, p.gateway).await
    }

    async fn add_veth(
        &self,
        p: &Plumbing<'_>,
        ai: usize,
        a: &Attachment,
    ) -> Result<(), RuntimeError> {
        let bridge = *self.bridges.get(&a.bridge).ok_or_else(|| {
            RuntimeError::netlink(&self.name, "plumb", format!("no bridge {}", a.bridge))
        })?;
        let outer = format!("v{}x{ai}", p.index);
        let build = || {
            let peer = LinkMessageBuilder::<LinkUnspec>::default()
                .name(a.ifname.clone())
                .address(lab_mac(a).to_vec())
                .setns_by_pid(p.pid)
                .build();
            LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
                .name(outer.clone())
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .controller(bridge)
                .up()
                .build()
        };
        match self.handle.link().add(build()).execute().await {
            Ok(()) => Ok(()),
            // A restarted container: the old fabric end can outlive the old namespace for a
            // moment (the kernel frees namespaces asynchronously). Remove it and retry.
            Err(e) if is_eexist(&e) => {
                if let Ok(idx) = link_index(&self.handle, &self.name, &outer).await {
                    let _ = self.handle.link().del(idx).execute().await;
                }
                self.handle
                    .link()
                    .add(build())
                    .execute()
                    .await
                    .map_err(fail(&self.name, "add veth"))
            }
            Err(e) => Err(RuntimeError::netlink(
                &self.name,
                &format!("add veth {outer}"),
                e,
            )),
        }
    }
}

/// The interface's planned MAC; for links planned before MACs were (a container launched by
/// an older runtime, re-plumbed from its label), the same `02:<bridge>:<IPv4>` they had.
pub fn lab_mac(a: &Attachment) -> [u8; 6] {
    if a.mac != [0; 6] {
        return a.mac;
    }
    let br: u8 = a.bridge.trim_start_matches("br").parse().unwrap_or(0);
    let [o1, o2, o3, o4] = a.address.map_or([0; 4], |ip| ip.octets());
    [0x02, br, o1, o2, o3, o4]
}

/// Inside the container: addresses, links up, lo up, default route.
async fn configure_inside(
    h: &Handle,
    ns: &str,
    links: &[Attachment],
    gateway: Option<Ipv4Addr>,
) -> Result<(), RuntimeError> {
    let mut by_name: HashMap<String, u32> = HashMap::new();
    let mut dump = h.link().get().execute();
    while let Some(msg) = dump.try_next().await.map_err(fail(ns, "list links"))? {
        if let Some(n) = name_of(&msg) {
            by_name.insert(n.to_owned(), msg.header.index);
        }
    }
    let lo = *by_name.get("lo").unwrap_or(&1);
    let per_link = links.iter().map(|a| {
        let idx = by_name.get(&a.ifname).copied();
        async move {
            let idx = idx.ok_or_else(|| {
                RuntimeError::netlink(ns, "plumb", format!("{} missing", a.ifname))
            })?;
            // An unaddressed interface (`address: none`) only comes up: its address, if any,
            // is the lab's business (a DHCP client).
            if let Some(addr) = a.address {
                h.address()
                    .add(idx, IpAddr::V4(addr), a.prefix_len)
                    .execute()
                    .await
                    .map_err(fail(ns, "add address"))?;
            }
            if let Some(addr) = a.address6 {
                // No duplicate address detection: the plan makes addresses unique, and a
                // tentative address would not answer for the first second or two.
                let mut req = h.address().add(idx, IpAddr::V6(addr), a.prefix6);
                let msg = req.message_mut();
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
                req.execute().await.map_err(fail(ns, "add IPv6 address"))?;
            }
            h.link()
                .set(LinkUnspec::new_with_index(idx).up().build())
                .execute()
                .await
                .map_err(fail(ns, "link up"))
        }
    });
    let lo_up = h
        .link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute();
    let (links_up, lo_up) = futures::join!(try_join_all(per_link), lo_up);
    links_up?;
    lo_up.map_err(fail(ns, "lo up"))?;
    if let Some(gw) = gateway {
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build();
        h.route()
            .add(route)
            .execute()
            .await
            .map_err(fail(ns, "add default route"))?;
    }
    Ok(())
}

/// The routing rule of the crate docs: a default route via the subnet's gateway for a
/// single-homed container that does not own the gateway address and has an address of its own
/// (without one the gateway is unreachable; a DHCP client learns its route from the server).
pub fn default_gateway(
    links: &[Attachment],
    gateways: &HashMap<String, Ipv4Addr>,
) -> Option<Ipv4Addr> {
    match links {
        [only] => gateways
            .get(&only.subnet)
            .copied()
            .filter(|gw| only.address.is_some_and(|a| a != *gw)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(subnet: &str, addr: [u8; 4]) -> Attachment {
        Attachment {
            subnet: subnet.into(),
            bridge: "br0".into(),
            ifname: "eth0".into(),
            address: Some(Ipv4Addr::from(addr)),
            prefix_len: 24,
            address6: None,
            prefix6: 0,
            mac: [0x02, 0, addr[0], addr[1], addr[2], addr[3]],
        }
    }

    #[test]
    fn gateway_rule() {
        let gws: HashMap<String, Ipv4Addr> = [("t".to_owned(), Ipv4Addr::new(10, 20, 0, 1))].into();
        assert_eq!(
            default_gateway(&[att("t", [10, 20, 0, 10])], &gws),
            Some(Ipv4Addr::new(10, 20, 0, 1))
        );
        // The gateway owner, other subnets and multi-homed hosts get none.
        assert_eq!(default_gateway(&[att("t", [10, 20, 0, 1])], &gws), None);
        assert_eq!(default_gateway(&[att("l", [10, 10, 0, 10])], &gws), None);
        let two = [att("l", [10, 10, 0, 1]), att("t", [10, 20, 0, 1])];
        assert_eq!(default_gateway(&two, &gws), None);
        assert_eq!(default_gateway(&[], &gws), None);
    }

    #[test]
    fn macs_are_planned_or_derived_for_old_labels() {
        let mut a = att("t", [10, 20, 0, 10]);
        assert_eq!(lab_mac(&a), [0x02, 0, 10, 20, 0, 10]);
        a.mac = [0; 6];
        a.bridge = "br1".into();
        assert_eq!(lab_mac(&a), [0x02, 1, 10, 20, 0, 10]);
    }

    #[test]
    fn unaddressed_hosts_get_no_default_route() {
        let gws: HashMap<String, Ipv4Addr> = [("t".to_owned(), Ipv4Addr::new(10, 20, 0, 1))].into();
        let mut a = att("t", [10, 20, 0, 10]);
        a.address = None;
        assert_eq!(default_gateway(&[a], &gws), None);
    }
}
