//! `forge bundle verify`: checks an evidence bundle offline (a directory, one of its files, or
//! the http(s) base URL it is published under) and names whatever does not match. Exit 0 when
//! it verifies, 1 when it does not.

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
    },
}

pub async fn run(data_dir: &Path, cmd: BundleCommand) -> anyhow::Result<u8> {
    let BundleCommand::Verify { target, public_key } = cmd;
    let target: BundleLocation = target.parse()?;
    let keys = super::keys::trusted_keys(data_dir, KeyPurpose::Verdict, public_key.as_deref())?;
    match target.verify(&keys).await {
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
