//! `forge bundle verify`: checks an evidence bundle offline (a directory, one of its files, or
//! the http(s) base URL it is published under) and names whatever does not match. Exit 0 when
//! it verifies, 1 when it does not.
//!
//! A URL is downloaded with the caller's token: `--token`/`FORGE_TOKEN`, else one minted from
//! the data dir's secret when there is one (the machine runs the platform), else none.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use forge_evidence::{BundleLocation, KeyPurpose};

/// `forge bundle …`
#[derive(Debug, Clone, Subcommand)]
pub enum BundleCommand {
    /// Verify an evidence bundle in a directory or under an http(s) base URL
    Verify {
        /// Bundle directory (or one of its files), or `http(s)://…/scn-…` base URL
        target: String,
        /// A PEM public key or an exported keyset JSON [default: the data dir's verdict keyring]
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        #[command(flatten)]
        caller: super::client::Caller,
    },
}

pub async fn run(data_dir: &Path, cmd: BundleCommand) -> anyhow::Result<u8> {
    let BundleCommand::Verify {
        target,
        public_key,
        caller,
    } = cmd;
    let target: BundleLocation = target.parse()?;
    let keys = super::keys::trusted_keys(data_dir, KeyPurpose::Verdict, public_key.as_deref())?;
    // Minting creates a secret where none is; a verifier on another machine must not.
    let bearer = match &target {
        BundleLocation::Url(_)
            if caller.token.is_some() || forge_auth::secret_path(data_dir).exists() =>
        {
            Some(caller.token(data_dir)?)
        }
        _ => None,
    };
    match target.verify(&keys, bearer.as_deref()).await {
        Ok(v) => {
            let (m, s) = (&v.manifest, &v.score);
            println!(
                "OK {} run {} track {} score {} ({}/{}) signed by {} ({}) at {}",
                m.scenario_id,
                m.run_id,
                m.track,
                s.score,
                s.passed,
                s.total,
                v.key_id,
                v.key_status.as_str(),
                m.timestamp.to_rfc3339()
            );
            Ok(0)
        }
        Err(e) => {
            for p in e.problems() {
                println!("FAIL {p}");
            }
            Ok(1)
        }
    }
}
