//! A lab's uplink: one veth pair from its fabric (`up0`) to the uplink namespace
//! (`fgu<scenario hex>`), a /31 of the link pool, and the bookkeeping that keeps labs apart.
//!
//! Addressing: each uplink takes one /31 (RFC 3021: both addresses usable on a point-to-point
//! link) of the operator's link pool, the even address on the uplink namespace's end and the
//! odd one on the fabric's. The kernel is the only record: a pool block is taken when an
//! address in it exists in the uplink namespace, so allocation needs no state file and
//! survives crashes. Allocation starts at a block derived from the scenario id (a lab usually
//! gets the same block back) and probes upward; it happens under an exclusive `flock` on
//! [`LOCK_PATH`], which also serialises the shared `forge_uplink` table's creation and removal
//! with every other forge process on the host.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec};

use super::nft::{self, PEER_PREFIX, UPLINK_IF};
use super::{Uplink, in_forbidden};
use crate::error::RuntimeError;
use crate::netns;

/// Serialises uplink allocation and the shared table across processes.
pub const LOCK_PATH: &str = "/run/forge-egress.lock";
/// Prefix of the alias on `up0` recording where its peer lives, so that any process can tear
/// the uplink down whatever its own configuration.
const ALIAS_PREFIX: &str = "forge uplink ";

/// The lab's end of the link and its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddresses {
    /// The uplink namespace's end (the fabric's default gateway).
    pub peer: Ipv4Addr,
    /// The fabric's end (what the lab's traffic is masqueraded to).
    pub fabric: Ipv4Addr,
}

/// The uplink's name in the uplink namespace: `fgu` + the scenario's 12 hex digits (15
/// characters, the kernel's limit).
pub fn peer_name(fabric_ns: &str) -> String {
    let hex = fabric_ns
        .strip_prefix(netns::FABRIC_PREFIX)
        .unwrap_or(fabric_ns);
    format!("{PEER_PREFIX}{hex}")
}

/// The first free /31 of `pool` from the block `seed` picks, given the addresses in use.
pub fn allocate(pool: Ipv4Net, seed: u64, taken: &BTreeSet<Ipv4Addr>) -> Option<LinkAddresses> {
    let base = u32::from(pool.network());
    let blocks = (1u64 << (32 - pool.prefix_len())) / 2;
    let used: BTreeSet<u32> = taken
        .iter()
        .filter(|a| pool.contains(*a))
        .map(|a| (u32::from(*a) - base) / 2)
        .collect();
    (0..blocks)
        .map(|i| ((seed + i) % blocks) as u32)
        .find(|b| !used.contains(b))
        .map(|b| LinkAddresses {
            peer: Ipv4Addr::from(base + 2 * b),
            fabric: Ipv4Addr::from(base + 2 * b + 1),
        })
}

/// The exclusive lock of [`LOCK_PATH`], held until dropped.
pub async fn lock() -> Result<Flock<std::fs::File>, RuntimeError> {
    tokio::task::spawn_blocking(|| {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_PATH)
            .map_err(|e| format!("cannot open {LOCK_PATH}: {e}"))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("cannot lock {LOCK_PATH}: {e}"))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(RuntimeError::Uplink)
}

pub fn uplink_handle_path(uplink: &Uplink) -> Result<PathBuf, RuntimeError> {
    let path = match uplink {
        Uplink::Host => PathBuf::from("/proc/self/ns/net"),
        Uplink::Netns(name) => netns::ns_path(name),
    };
    if !path.exists() {
        return Err(RuntimeError::Uplink(format!(
            "uplink namespace `{}` does not exist",
            uplink.label()
        )));
    }
    Ok(path)
}

/// Every IPv4 address in the namespace behind `h`.
pub async fn addresses(h: &Handle, label: &str) -> Result<BTreeSet<Ipv4Addr>, RuntimeError> {
    let mut out = BTreeSet::new();
    let mut dump = h.address().get().execute();
    while let Some(msg) = dump
        .try_next()
        .await
        .map_err(|e| RuntimeError::netlink(label, "list addresses", e))?
    {
        for a in &msg.attributes {
            if let AddressAttribute::Local(IpAddr::V4(v4))
            | AddressAttribute::Address(IpAddr::V4(v4)) = a
            {
                out.insert(*v4);
            }
        }
    }
    Ok(out)
}

/// Names and indexes of the links of the namespace behind `h` whose name starts with `prefix`.
pub async fn links_named(
    h: &Handle,
    label: &str,
    prefix: &str,
) -> Result<Vec<(String, u32)>, RuntimeError> {
    let mut out = Vec::new();
    let mut dump = h.link().get().execute();
    while let Some(msg) = dump
        .try_next()
        .await
        .map_err(|e| RuntimeError::netlink(label, "list links", e))?
    {
        let name = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        if let Some(n) = name.filter(|n| n.starts_with(prefix)) {
            out.push((n, msg.header.index));
        }
    }
    Ok(out)
}

/// What [`create`] made, for the rest of the set-up.
pub struct Created {
    pub link: LinkAddresses,
    /// Index of `up0` in the fabric.
    pub fabric_index: u32,
    /// The uplink namespace's own addresses (the peer's included): never reachable from a lab.
    pub upstream_addresses: BTreeSet<Ipv4Addr>,
}

/// Under the lock: makes sure the shared table exists, picks the lab's /31, creates the veth
/// pair (the fabric's end down, unaddressed) and addresses and raises the peer.
pub async fn create(
    fabric: &Handle,
    fabric_ns: &str,
    uplink: &Uplink,
    pool: Ipv4Net,
) -> Result<Created, RuntimeError> {
    let path = uplink_handle_path(uplink)?;
    let label = uplink.label();
    let _guard = lock().await?;
    let up = netns::handle(netns::socket_in(path.clone()).await?)?;
    nft::apply(&path, &label, &nft::uplink_script(pool)).await?;
    let taken = addresses(&up, &label).await?;
    let seed =
        u64::from_str_radix(fabric_ns.trim_start_matches(netns::FABRIC_PREFIX), 16).unwrap_or(0);
    let link = allocate(pool, seed, &taken).ok_or_else(|| {
        RuntimeError::Uplink(format!("the link pool {pool} has no free /31 left"))
    })?;
    let peer = peer_name(fabric_ns);
    let ns_file = std::fs::File::open(&path)
        .map_err(|e| RuntimeError::Uplink(format!("cannot open {}: {e}", path.display())))?;
    let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
        .name(UPLINK_IF.to_owned())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(
            LinkMessageBuilder::<LinkUnspec>::default()
                .name(peer.clone())
                .setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(&ns_file))
                .build(),
        )))
        .build();
    fabric
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| RuntimeError::netlink(fabric_ns, "add uplink veth", e))?;
    drop(ns_file);
    // The kernel ignores an alias in a create request: set it on the made link.
    let own = links_named(fabric, fabric_ns, UPLINK_IF)
        .await?
        .into_iter()
        .find(|(n, _)| n == UPLINK_IF)
        .map(|(_, i)| i)
        .ok_or_else(|| RuntimeError::netlink(fabric_ns, "get link", "no link up0"))?;
    fabric
        .link()
        .set(
            LinkUnspec::new_with_index(own)
                .alias(format!("{ALIAS_PREFIX}{}", uplink.alias()))
                .build(),
        )
        .execute()
        .await
        .map_err(|e| RuntimeError::netlink(fabric_ns, "set uplink alias", e))?;
    let idx = links_named(&up, &label, &peer)
        .await?
        .into_iter()
        .find(|(n, _)| *n == peer)
        .map(|(_, i)| i)
        .ok_or_else(|| RuntimeError::netlink(&label, "get link", format!("no link {peer}")))?;
    netns::write_sysctls(
        path,
        vec![(format!("net/ipv6/conf/{peer}/disable_ipv6"), "1".into())],
    )
    .await?;
    up.address()
        .add(idx, IpAddr::V4(link.peer), 31)
        .execute()
        .await
        .map_err(|e| RuntimeError::netlink(&label, "add uplink address", e))?;
    up.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| RuntimeError::netlink(&label, "uplink up", e))?;
    let mut upstream_addresses = taken;
    upstream_addresses.insert(link.peer);
    upstream_addresses.retain(|a| !in_forbidden(*a));
    Ok(Created {
        link,
        fabric_index: own,
        upstream_addresses,
    })
}

/// Removes the lab's uplink, if it has one, and the shared table once no uplink is left in
/// that namespace. Works from the fabric alone (the alias on `up0` says where the peer is).
pub async fn remove(fabric_ns: &str) -> Result<bool, RuntimeError> {
    if !netns::namespace_exists(fabric_ns) {
        return Ok(false);
    }
    let fabric = netns::handle(netns::socket_in(netns::ns_path(fabric_ns)).await?)?;
    let Some((_, idx)) = links_named(&fabric, fabric_ns, UPLINK_IF)
        .await?
        .into_iter()
        .find(|(n, _)| n == UPLINK_IF)
    else {
        return Ok(false);
    };
    let uplink = alias_of(&fabric, idx)
        .await
        .and_then(|a| Uplink::from_alias(&a));
    // Deleting one end of a veth deletes its peer at once, wherever it lives (and with it the
    // peer's address and connected route).
    match fabric.link().del(idx).execute().await {
        Ok(()) => {}
        Err(e) if is_enodev(&e) => {}
        Err(e) => return Err(RuntimeError::netlink(fabric_ns, "delete uplink", e)),
    }
    if let Some(uplink) = uplink {
        release(&uplink).await?;
    }
    Ok(true)
}

/// Drops the shared table of `uplink`'s namespace when no lab's uplink is left there.
pub async fn release(uplink: &Uplink) -> Result<(), RuntimeError> {
    let Ok(path) = uplink_handle_path(uplink) else {
        return Ok(());
    };
    let label = uplink.label();
    let _guard = lock().await?;
    let up = netns::handle(netns::socket_in(path.clone()).await?)?;
    if links_named(&up, &label, PEER_PREFIX).await?.is_empty() {
        nft::apply(&path, &label, &nft::uplink_removal_script()).await?;
    }
    Ok(())
}

fn is_enodev(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == 19)
}

async fn alias_of(h: &Handle, idx: u32) -> Option<String> {
    let mut links = h.link().get().match_index(idx).execute();
    let msg = links.try_next().await.ok()??;
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(s) => s.strip_prefix(ALIAS_PREFIX).map(str::to_owned),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_takes_free_blocks_from_the_seed() {
        let pool: Ipv4Net = "198.19.0.0/29".parse().unwrap();
        let none = BTreeSet::new();
        let a = allocate(pool, 1, &none).unwrap();
        assert_eq!(
            (a.peer, a.fabric),
            ("198.19.0.2".parse().unwrap(), "198.19.0.3".parse().unwrap())
        );
        // Block 1 taken (by either address): the next one; wraps around the pool.
        let taken: BTreeSet<Ipv4Addr> = ["198.19.0.3", "198.19.0.4", "198.19.0.7", "10.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let b = allocate(pool, 1, &taken).unwrap();
        assert_eq!(b.peer, "198.19.0.0".parse::<Ipv4Addr>().unwrap());
        let all: BTreeSet<Ipv4Addr> = (0..8).map(|i| Ipv4Addr::new(198, 19, 0, i)).collect();
        assert_eq!(allocate(pool, 5, &all), None);
    }

    #[test]
    fn peer_names_fit_the_kernel_limit() {
        let n = peer_name("forge_scn_0123456789ab");
        assert_eq!(n, "fgu0123456789ab");
        assert!(n.len() <= 15);
    }
}
