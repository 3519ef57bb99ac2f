//! Egress allowlist profiles of this lab host: the profile file templates with
//! `egress: allowlist` name a profile of, where the labs' uplinks attach, and the pool their
//! link addresses come from (docs/design.md §4). Without a profile file only `egress: deny`
//! labs launch.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use forge_runtime::egress::{DEFAULT_LINK_POOL, Ipv4Net};
use forge_runtime::{EgressConfig, EgressProfiles, Uplink};

#[derive(Args, Debug, Clone)]
pub struct EgressArgs {
    /// Egress allowlist profiles (YAML) that `egress: allowlist` templates name [default: none,
    /// so allowlisted labs do not launch]
    #[arg(long, env = "FORGE_EGRESS_PROFILES", value_name = "FILE")]
    pub egress_profiles: Option<PathBuf>,
    /// Network namespace (an `ip netns` name) the labs' uplinks attach to [default: the host's
    /// own namespace]
    #[arg(long, env = "FORGE_EGRESS_UPLINK_NETNS", value_name = "NAME")]
    pub egress_uplink_netns: Option<String>,
    /// Addresses of the labs' uplinks: one /31 per allowlisted lab, masqueraded on the way out
    #[arg(
        long,
        env = "FORGE_EGRESS_LINK_POOL",
        default_value_t = DEFAULT_LINK_POOL,
        value_name = "CIDR"
    )]
    pub egress_link_pool: Ipv4Net,
}

impl EgressArgs {
    /// The runtime's egress settings; the profile file is read and checked now, so a broken
    /// one stops the platform at start with every error in it.
    pub fn egress_config(&self) -> anyhow::Result<EgressConfig> {
        let profiles = match &self.egress_profiles {
            Some(path) => {
                EgressProfiles::load(path).context("FORGE_EGRESS_PROFILES (--egress-profiles)")?
            }
            None => EgressProfiles::default(),
        };
        let uplink = match &self.egress_uplink_netns {
            Some(name) => {
                if !std::path::Path::new("/run/netns").join(name).exists() {
                    bail!(
                        "FORGE_EGRESS_UPLINK_NETNS (--egress-uplink-netns) `{name}` is not a \
                         network namespace (see `ip netns list`)"
                    );
                }
                Uplink::Netns(name.clone())
            }
            None => Uplink::Host,
        };
        EgressConfig::new(profiles, uplink, self.egress_link_pool).map_err(|e| {
            anyhow::anyhow!(
                "egress settings (FORGE_EGRESS_UPLINK_NETNS, FORGE_EGRESS_LINK_POOL): {e}"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        egress: EgressArgs,
    }

    fn config(args: &[&str]) -> anyhow::Result<EgressConfig> {
        let c = Cmd::try_parse_from(std::iter::once("up").chain(args.iter().copied()))?;
        c.egress.egress_config()
    }

    #[test]
    fn defaults_are_deny_only_on_the_host() {
        let c = config(&[]).unwrap();
        assert!(c.profiles.is_empty());
        assert_eq!(c.uplink, Uplink::Host);
        assert_eq!(c.link_pool, DEFAULT_LINK_POOL);
    }

    #[test]
    fn the_profile_file_is_read_and_errors_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("egress.yaml");
        std::fs::write(
            &good,
            "profiles:\n  mirror:\n    rules:\n      - {cidr: 198.18.0.0/15, protocol: tcp, ports: [443]}\n",
        )
        .unwrap();
        let c = config(&[
            "--egress-profiles",
            good.to_str().unwrap(),
            "--egress-link-pool",
            "198.19.0.0/24",
        ])
        .unwrap();
        assert!(c.profiles.get("mirror").is_some());
        assert_eq!(c.link_pool.to_string(), "198.19.0.0/24");

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "profiles:\n  mirror:\n    rules: []\n").unwrap();
        let e = format!(
            "{:#}",
            config(&["--egress-profiles", bad.to_str().unwrap()]).unwrap_err()
        );
        assert!(
            e.starts_with("FORGE_EGRESS_PROFILES (--egress-profiles): "),
            "{e}"
        );
        assert!(
            e.contains("bad.yaml:3:5: profiles.mirror.rules: must be a non-empty list"),
            "{e}"
        );

        let e = config(&["--egress-uplink-netns", "forge-no-such-ns"]).unwrap_err();
        assert!(e.to_string().contains("is not a network namespace"), "{e}");
        assert!(config(&["--egress-link-pool", "not-a-cidr"]).is_err());
        let e = config(&["--egress-link-pool", "169.254.0.0/24"]).unwrap_err();
        assert!(e.to_string().contains("lies in 169.254.0.0/16"), "{e}");
    }
}
