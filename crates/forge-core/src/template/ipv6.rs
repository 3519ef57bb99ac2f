//! Dual-stack subnets (docs/dsl.md "IPv6"): a subnet's `cidr6` and an attachment's `address6`.
//! Checked on their own so the IPv4 rules stay as they were; planned by `addressing`.
//!
//! Rules: prefixes are unique local addresses (fd00::/8, RFC 4193) so a lab never announces a
//! routable prefix, between /48 and /127, without host bits and not overlapping; an address is
//! a host of its subnet's prefix (not the subnet-router anycast address, offset 0, except on a
//! /127, RFC 6164, where both addresses are hosts) and unique in the lab.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::ScenarioTemplate;
use super::diagnostics::Diagnostic;

/// Implicit IPv6 addresses start at this host offset, as IPv4 ones do (`::a`).
const FIRST_IMPLICIT_HOST: u128 = 10;
/// How far up an implicit address is searched for: a lab has at most 32 containers.
const SEARCH: u128 = 256;

fn ula() -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 8).expect("valid prefix")
}

/// Whether `a` is a usable host address of `net`.
pub fn is_host(net: &Ipv6Net, a: Ipv6Addr) -> bool {
    net.contains(&a) && (net.prefix_len() == 127 || a != net.network())
}

/// The lowest free host address of `net` from offset 10 (from the first host on prefixes too
/// small for that), or `None` when the searched range is full.
pub fn next_free(net: &Ipv6Net, taken: &BTreeSet<Ipv6Addr>) -> Option<Ipv6Addr> {
    let base = u128::from(net.network());
    let last = u128::from(net.broadcast());
    let first = if net.prefix_len() == 127 {
        base
    } else {
        base + 1
    };
    let start = if base + FIRST_IMPLICIT_HOST <= last {
        base + FIRST_IMPLICIT_HOST
    } else {
        first
    };
    (start..=last.min(start + SEARCH))
        .map(Ipv6Addr::from)
        .find(|a| !taken.contains(a))
}

/// Every IPv6 problem of a template, with its path.
pub fn check(t: &ScenarioTemplate) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut nets: BTreeMap<&str, Ipv6Net> = BTreeMap::new();
    let mut seen: Vec<(usize, Ipv6Net)> = Vec::new();
    for (i, s) in t.spec.network.subnets.iter().enumerate() {
        let Some(net) = s.cidr6 else { continue };
        let p = format!("spec.network.subnets[{i}].cidr6");
        if net.trunc() != net {
            let msg = format!("`{net}` has host bits set; did you mean {}?", net.trunc());
            out.push(Diagnostic::new(&p, msg));
        }
        if !(48..=127).contains(&net.prefix_len()) {
            let msg = format!("prefix /{} must be between /48 and /127", net.prefix_len());
            out.push(Diagnostic::new(&p, msg));
        }
        if !ula().contains(&net) {
            let msg = format!(
                "{net} is not a unique local prefix; lab IPv6 subnets must be inside fd00::/8"
            );
            out.push(Diagnostic::new(&p, msg));
        }
        for (j, other) in &seen {
            if other.contains(&net.network()) || net.contains(&other.network()) {
                let msg = format!("{net} overlaps subnet spec.network.subnets[{j}] ({other})");
                out.push(Diagnostic::new(&p, msg));
            }
        }
        seen.push((i, net));
        nets.insert(&s.name, net.trunc());
    }
    let mut owners: BTreeMap<Ipv6Addr, &str> = BTreeMap::new();
    for (i, c) in t.spec.assets.containers.iter().enumerate() {
        for (k, a) in c.networks.iter().enumerate() {
            let p = format!("spec.assets.containers[{i}].networks[{k}].address6");
            let net = nets.get(a.subnet());
            if net.is_none() && (a.address6().is_some() || a.unaddressed6()) {
                let msg = format!(
                    "subnet `{}` has no cidr6; give it one to use IPv6",
                    a.subnet()
                );
                out.push(Diagnostic::new(&p, msg));
                continue;
            }
            let (Some(net), Some(addr)) = (net, a.address6()) else {
                continue;
            };
            if !net.contains(&addr) {
                out.push(Diagnostic::new(&p, format!("{addr} is outside {net}")));
            } else if !is_host(net, addr) {
                let msg = format!("{addr} is the subnet-router anycast address of {net}");
                out.push(Diagnostic::new(&p, msg));
            }
            if let Some(owner) = owners.insert(addr, &c.name) {
                let msg = format!("address {addr} is already used by container `{owner}`");
                out.push(Diagnostic::new(&p, msg));
            }
        }
    }
    out
}
