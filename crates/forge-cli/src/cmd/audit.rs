//! `forge audit verify`: checks the signed, hash-chained audit log (signatures, chain, head
//! checkpoint). Exit 0 when it verifies, 1 when it does not.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Subcommand;
use forge_evidence::{AuditLog, KeyPurpose, verify_log};

/// `forge audit …`
#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Verify the audit log's signatures, hash chain and head checkpoint
    Verify {
        /// The log file [default: <data-dir>/audit/audit.jsonl]
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
        /// A PEM public key or an exported keyset JSON [default: the data dir's audit keyring]
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
}

pub fn run(data_dir: &Path, cmd: AuditCommand) -> anyhow::Result<u8> {
    let AuditCommand::Verify { log, public_key } = cmd;
    let log = log.unwrap_or_else(|| AuditLog::default_path(data_dir));
    if !log.exists() {
        bail!("no audit log at {}", log.display());
    }
    let keys = super::keys::trusted_keys(data_dir, KeyPurpose::Audit, public_key.as_deref())?;
    match verify_log(&log, &keys) {
        Ok(r) => {
            println!(
                "OK {}: {} events, {} checkpoints, last seq {}, head {}, keys {}",
                log.display(),
                r.events,
                r.checkpoints,
                r.last_seq,
                r.head_hash,
                r.key_ids.into_iter().collect::<Vec<_>>().join(",")
            );
            Ok(0)
        }
        Err(e) => {
            println!("FAIL {}: {e}", log.display());
            Ok(1)
        }
    }
}
