//! `forge keys rotate|revoke|list|export`: the signing keys in the data dir, one keyring per
//! purpose (`verdict` signs bundles, `audit` signs the audit log).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use forge_evidence::{KeyError, KeyPurpose, KeySource, Keyring};

/// What a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Purpose {
    /// Evidence bundles (`verdict.sig`)
    Verdict,
    /// The audit log
    Audit,
}

impl From<Purpose> for KeyPurpose {
    fn from(p: Purpose) -> Self {
        match p {
            Purpose::Verdict => KeyPurpose::Verdict,
            Purpose::Audit => KeyPurpose::Audit,
        }
    }
}

/// `forge keys …`
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Make a new active signing key and retire the current one
    Rotate {
        #[arg(long, value_enum, default_value_t = Purpose::Verdict)]
        purpose: Purpose,
    },
    /// Revoke a key: every signature by it fails verification from now on
    Revoke {
        key_id: String,
        #[arg(long, value_enum, default_value_t = Purpose::Verdict)]
        purpose: Purpose,
    },
    /// List keys with their status
    List {
        /// Only this purpose [default: both]
        #[arg(long, value_enum)]
        purpose: Option<Purpose>,
    },
    /// Print (or write) the public keyset JSON for offline verifiers
    Export {
        #[arg(long, value_enum, default_value_t = Purpose::Verdict)]
        purpose: Purpose,
        /// Write to this file instead of standard output
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(data_dir: &Path, cmd: KeysCommand) -> anyhow::Result<u8> {
    match cmd {
        KeysCommand::Rotate { purpose } => {
            let mut ring = Keyring::open(data_dir, purpose.into())?;
            let old = ring.active().map(|k| k.key_id.clone());
            let new = ring.rotate()?;
            match old {
                Some(old) => println!(
                    "rotated {} key: {} is active, {old} is retired",
                    ring.purpose(),
                    new.key_id
                ),
                None => println!("created {} key {}", ring.purpose(), new.key_id),
            }
        }
        KeysCommand::Revoke { key_id, purpose } => {
            let mut ring = Keyring::open(data_dir, purpose.into())?;
            let replacement = ring.revoke(&key_id)?;
            println!("revoked {} key {key_id}", ring.purpose());
            if let Some(new) = replacement {
                println!("new active {} key {}", ring.purpose(), new.key_id);
            }
        }
        KeysCommand::List { purpose } => {
            let purposes = purpose.map_or(vec![KeyPurpose::Verdict, KeyPurpose::Audit], |p| {
                vec![p.into()]
            });
            println!(
                "{:<8} {:<25} {:<8} {:<26} CHANGED",
                "PURPOSE", "KEY_ID", "STATUS", "CREATED"
            );
            for p in purposes {
                let ring = Keyring::open(data_dir, p)?;
                for k in ring.keys() {
                    let changed = k
                        .revoked_at
                        .or(k.retired_at)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    println!(
                        "{:<8} {:<25} {:<8} {:<26} {changed}",
                        p.as_str(),
                        k.key_id,
                        k.status.as_str(),
                        k.created_at.to_rfc3339()
                    );
                }
            }
        }
        KeysCommand::Export { purpose, out } => {
            let ring = Keyring::open(data_dir, purpose.into())?;
            let mut json = serde_json::to_vec_pretty(&ring.export_public()?)?;
            json.push(b'\n');
            match out {
                Some(path) => {
                    std::fs::write(&path, &json)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    println!("wrote {} public keys to {}", ring.purpose(), path.display());
                }
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&json)?;
                }
            }
        }
    }
    Ok(0)
}

/// The keys a verifier trusts: `--public-key FILE`, else the data dir's `purpose` keyring.
pub fn trusted_keys(
    data_dir: &Path,
    purpose: KeyPurpose,
    public_key: Option<&Path>,
) -> anyhow::Result<KeySource> {
    match KeySource::load(data_dir, purpose, public_key) {
        Ok(keys) => Ok(keys),
        Err(e @ KeyError::NoKeyring { .. }) => {
            bail!("{e}; pass --public-key with a PEM public key or an exported keyset json")
        }
        Err(e) => Err(e).with_context(|| match public_key {
            Some(file) => format!("cannot load keys from {}", file.display()),
            None => format!("cannot load the {purpose} keyring"),
        }),
    }
}
