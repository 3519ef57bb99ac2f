//! The nftables rulesets of egress, as `nft -f -` scripts (pure, unit-tested), and running `nft`
//! inside a namespace.
//!
//! Two tables:
//! - `inet forge_egress` in a lab's fabric: the lab's policy. Input drops everything (the fabric
//!   is not reachable, neither from its lab nor from upstream); forward drops by default, keeps
//!   each subnet's own bridged traffic (br_netfilter hands it to this hook), lets back replies,
//!   refuses the never-reachable set first and then accepts only the profile's tuples out of the
//!   uplink; what is refused is logged `FORGE_EGRESS_DENY: ` (rate-limited) and dropped; what
//!   leaves is masqueraded to the lab's uplink address, so identical labs never collide.
//! - `inet forge_uplink` in the uplink namespace, shared by every lab's uplink there (all named
//!   `fgu…`): nothing from a lab is delivered to that namespace itself, labs cannot reach each
//!   other through it, nothing enters a lab that is not a reply, and the link pool is
//!   masqueraded on its way out.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;

use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;

use super::profiles::ResolvedRule;
use crate::error::RuntimeError;

/// The fabric's end of the uplink.
pub const UPLINK_IF: &str = "up0";
/// Prefix of every uplink's end in the uplink namespace (`fgu<scenario hex>`).
pub const PEER_PREFIX: &str = "fgu";
pub const FABRIC_TABLE: &str = "forge_egress";
pub const UPLINK_TABLE: &str = "forge_uplink";
/// The spec's log prefix for refused egress.
pub const LOG_PREFIX: &str = "FORGE_EGRESS_DENY: ";

/// An inclusive range of IPv4 addresses.
type Span = (u32, u32);

/// Sorted, overlap-free spans of `nets` (nft refuses overlapping intervals in one set).
pub fn merge(nets: impl IntoIterator<Item = Ipv4Net>) -> Vec<Span> {
    let mut spans: Vec<Span> = nets
        .into_iter()
        .map(|n| (u32::from(n.network()), u32::from(n.broadcast())))
        .collect();
    spans.sort_unstable();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn merge_ports(ports: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut v = ports.to_vec();
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn span_text((a, b): Span) -> String {
    if a == b {
        Ipv4Addr::from(a).to_string()
    } else {
        format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b))
    }
}

fn set_text<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let inner: Vec<String> = items.iter().map(show).collect();
    format!("{{ {} }}", inner.join(", "))
}

/// What the fabric's table is built from.
pub struct FabricRules<'a> {
    /// Bridges of the lab (`br0`, …).
    pub bridges: &'a [String],
    /// Destinations refused before any rule: fixed ranges, the link pool, the uplink
    /// namespace's own addresses.
    pub never: Vec<Span>,
    pub rules: &'a [ResolvedRule],
    pub profile: &'a str,
}

/// The `nft -f -` script of a fresh fabric's `inet forge_egress`.
pub fn fabric_script(r: &FabricRules<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table inet {FABRIC_TABLE} {{");
    let _ = writeln!(
        s,
        "  set never {{\n    type ipv4_addr\n    flags interval\n    elements = {}\n  }}",
        set_text(&r.never, |sp| span_text(*sp))
    );
    s.push_str(
        "  chain input {\n    type filter hook input priority filter; policy drop;\n    \
         iif \"lo\" accept\n  }\n",
    );
    s.push_str("  chain forward {\n    type filter hook forward priority filter; policy drop;\n");
    s.push_str("    ct state invalid drop\n");
    for br in r.bridges {
        // Frames bridged inside one subnet (with br_netfilter the bridge is both in and out).
        let _ = writeln!(s, "    iifname \"{br}\" oifname \"{br}\" accept");
    }
    let _ = writeln!(
        s,
        "    iifname \"{UPLINK_IF}\" ct state established,related accept"
    );
    let _ = writeln!(
        s,
        "    oifname \"{UPLINK_IF}\" ct state established,related accept"
    );
    let _ = writeln!(s, "    oifname \"{UPLINK_IF}\" ip daddr @never jump deny");
    for rule in r.rules {
        let dst = merge(rule.destinations.iter().copied());
        if dst.is_empty() {
            continue;
        }
        let ports = merge_ports(&rule.ports);
        let _ = writeln!(
            s,
            "    iifname \"br*\" oifname \"{UPLINK_IF}\" ip daddr {} {} dport {} ct state new accept comment \"profile {}\"",
            set_text(&dst, |sp| span_text(*sp)),
            rule.protocol.as_str(),
            set_text(&ports, |(a, b)| if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }),
            r.profile,
        );
    }
    s.push_str("    jump deny\n  }\n");
    let _ = writeln!(
        s,
        "  chain deny {{\n    limit rate 10/second burst 20 packets log prefix \"{LOG_PREFIX}\" level warn\n    drop\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"{UPLINK_IF}\" masquerade\n  }}"
    );
    s.push_str("}\n");
    s
}

/// The `nft -f -` script that (re)defines `inet forge_uplink` atomically for `pool`.
pub fn uplink_script(pool: Ipv4Net) -> String {
    let p = format!("\"{PEER_PREFIX}*\"");
    format!(
        "table inet {UPLINK_TABLE}\ndelete table inet {UPLINK_TABLE}\n\
         table inet {UPLINK_TABLE} {{\n\
         \x20 chain input {{\n    type filter hook input priority filter; policy accept;\n    iifname {p} drop\n  }}\n\
         \x20 chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
         iifname {p} oifname {p} drop\n    oifname {p} ct state established,related accept\n    oifname {p} drop\n  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         ip saddr {pool} oifname != {p} masquerade\n  }}\n}}\n"
    )
}

/// The script that removes `inet forge_uplink` (absent is fine: it is created first).
pub fn uplink_removal_script() -> String {
    format!("table inet {UPLINK_TABLE}\ndelete table inet {UPLINK_TABLE}\n")
}

/// Runs `nft -f -` with `script` inside the network namespace at `ns_path`.
pub async fn apply(ns_path: &Path, label: &str, script: &str) -> Result<(), RuntimeError> {
    let fail = |message: String| RuntimeError::Nft {
        namespace: label.to_owned(),
        message,
    };
    let ns = std::fs::File::open(ns_path)
        .map_err(|e| fail(format!("cannot open {}: {e}", ns_path.display())))?;
    let fd = ns.as_raw_fd();
    let mut cmd = tokio::process::Command::new("nft");
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: setns(2) is async-signal-safe; the child enters the namespace between fork and
    // exec, so neither this process nor any of its threads ever changes namespace.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::setns(fd, nix::libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RuntimeError::NftMissing,
        _ => fail(format!("cannot start nft: {e}")),
    })?;
    drop(ns);
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| fail(format!("writing the ruleset: {e}")))?;
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .map_err(|_| fail("nft did not finish within 20s".into()))?
        .map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(fail(err.trim().chars().take(600).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::profiles::Protocol;
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn spans_merge_overlaps_and_neighbours() {
        let m = merge([
            net("127.0.0.0/8"),
            net("127.0.0.1/32"),
            net("10.0.0.0/25"),
            net("10.0.0.128/25"),
            net("192.0.2.7/32"),
        ]);
        let shown: Vec<String> = m.into_iter().map(span_text).collect();
        assert_eq!(
            shown,
            [
                "10.0.0.0-10.0.0.255",
                "127.0.0.0-127.255.255.255",
                "192.0.2.7"
            ]
        );
        assert_eq!(
            merge_ports(&[(443, 443), (80, 90), (85, 100)]),
            [(80, 100), (443, 443)]
        );
    }

    #[test]
    fn fabric_script_allows_only_the_profile() {
        let rules = [ResolvedRule {
            destinations: vec![net("198.18.1.0/24")],
            protocol: Protocol::Tcp,
            ports: vec![(8443, 8443), (9000, 9010)],
        }];
        let bridges = ["br0".to_owned(), "br1".to_owned()];
        let s = fabric_script(&FabricRules {
            bridges: &bridges,
            never: merge([net("127.0.0.0/8"), net("198.19.0.0/24")]),
            rules: &rules,
            profile: "mirror",
        });
        assert!(
            s.contains("type filter hook forward priority filter; policy drop;"),
            "{s}"
        );
        assert!(
            s.contains("type filter hook input priority filter; policy drop;"),
            "{s}"
        );
        assert!(s.contains("iifname \"br1\" oifname \"br1\" accept"), "{s}");
        assert!(
            s.contains(
                "ip daddr { 198.18.1.0-198.18.1.255 } tcp dport { 8443, 9000-9010 } ct state new accept"
            ),
            "{s}"
        );
        assert!(s.contains("elements = { 127.0.0.0-127.255.255.255, 198.19.0.0-198.19.0.255 }"));
        assert!(s.contains("log prefix \"FORGE_EGRESS_DENY: \""), "{s}");
        assert!(s.contains("oifname \"up0\" masquerade"), "{s}");
        // The never set is consulted before any allow rule.
        assert!(s.find("@never").unwrap() < s.find("comment \"profile mirror\"").unwrap());
    }

    #[test]
    fn uplink_script_is_atomic_and_guards_the_namespace() {
        let s = uplink_script(net("100.127.0.0/16"));
        assert!(s.starts_with("table inet forge_uplink\ndelete table inet forge_uplink\n"));
        assert!(s.contains("iifname \"fgu*\" drop"), "{s}");
        assert!(s.contains("iifname \"fgu*\" oifname \"fgu*\" drop"), "{s}");
        assert!(
            s.contains("ip saddr 100.127.0.0/16 oifname != \"fgu*\" masquerade"),
            "{s}"
        );
    }
}
