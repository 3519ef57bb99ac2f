//! `forge keys|bundle|audit` subcommands, as clap derive pieces plus run functions the `forge`
//! binary wires in. Run functions write human output to `out` and return the process exit code:
//! 0 for success, 1 when verification found problems; operational failures (unreadable keyring,
//! I/O) are `Err`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::audit_log::{AuditLog, verify_log};
use crate::keyring::{KeyPurpose, KeySource, Keyring, keyring_exists};
use crate::verify::{BundleFiles, VerifiedBundle, VerifyError, verify_bundle, verify_bundle_url};

/// `$FORGE_DATA_DIR` is handled by clap; this is the fallback: `$HOME/.local/share/forge`, or
/// `.forge-data` in the working directory when there is no home.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/share/forge"),
        _ => PathBuf::from(".forge-data"),
    }
}

/// `--data-dir` (env `FORGE_DATA_DIR`).
#[derive(Debug, Clone, Args)]
pub struct DataDirArg {
    /// Directory holding keys, audit logs and local state.
    #[arg(long, env = "FORGE_DATA_DIR", default_value_os_t = default_data_dir(), global = true)]
    pub data_dir: PathBuf,
}

/// `forge keys ...`
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Make a new active signing key and retire the current one.
    Rotate {
        #[arg(long, value_enum, default_value_t = KeyPurpose::Verdict)]
        purpose: KeyPurpose,
    },
    /// Revoke a key: every signature by it fails verification from now on.
    Revoke {
        key_id: String,
        #[arg(long, value_enum, default_value_t = KeyPurpose::Verdict)]
        purpose: KeyPurpose,
    },
    /// List keys with their status.
    List {
        /// Only this purpose (default: both).
        #[arg(long, value_enum)]
        purpose: Option<KeyPurpose>,
    },
    /// Print (or write) the public keyset JSON for offline verifiers.
    Export {
        #[arg(long, value_enum, default_value_t = KeyPurpose::Verdict)]
        purpose: KeyPurpose,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `forge bundle ...`
#[derive(Debug, Clone, Subcommand)]
pub enum BundleCommand {
    /// Verify an evidence bundle in a directory or under an http(s) base URL.
    Verify {
        /// Bundle directory (or one of its files), or `http(s)://…/scn-…` base URL.
        target: String,
        /// A PEM public key or an exported keyset JSON (default: the local verdict keyring).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

/// `forge audit ...`
#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Verify the audit log's signatures, hash chain and head checkpoint.
    Verify {
        /// The log file (default: `<data-dir>/audit/audit.jsonl`).
        #[arg(long)]
        log: Option<PathBuf>,
        /// A PEM public key or an exported keyset JSON (default: the local audit keyring).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

fn key_source(
    data_dir: &Path,
    purpose: KeyPurpose,
    file: Option<&Path>,
) -> anyhow::Result<KeySource> {
    if let Some(path) = file {
        return KeySource::from_file(path)
            .with_context(|| format!("loading keys from {}", path.display()));
    }
    if !keyring_exists(data_dir, purpose) {
        bail!(
            "no {} keyring in {}; pass --public-key with a PEM key or keyset json",
            purpose.as_str(),
            Keyring::dir_for(data_dir, purpose).display()
        );
    }
    let ring = Keyring::open(data_dir, purpose)?;
    Ok(KeySource::from_keyring(&ring)?)
}

/// Runs `forge keys ...`.
pub fn run_keys(
    data_dir: &Path,
    cmd: KeysCommand,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    match cmd {
        KeysCommand::Rotate { purpose } => {
            let mut ring = Keyring::open(data_dir, purpose)?;
            let old = ring.active().map(|k| k.key_id.clone());
            let new = ring.rotate()?;
            match old {
                Some(old) => writeln!(
                    out,
                    "rotated {} key: {} is active, {old} is retired",
                    purpose.as_str(),
                    new.key_id
                )?,
                None => writeln!(out, "created {} key {}", purpose.as_str(), new.key_id)?,
            }
        }
        KeysCommand::Revoke { key_id, purpose } => {
            let mut ring = Keyring::open(data_dir, purpose)?;
            let replacement = ring.revoke(&key_id)?;
            writeln!(out, "revoked {} key {key_id}", purpose.as_str())?;
            if let Some(new) = replacement {
                writeln!(out, "new active {} key {}", purpose.as_str(), new.key_id)?;
            }
        }
        KeysCommand::List { purpose } => {
            let purposes =
                purpose.map_or(vec![KeyPurpose::Verdict, KeyPurpose::Audit], |p| vec![p]);
            writeln!(
                out,
                "{:<8} {:<25} {:<8} {:<26} CHANGED",
                "PURPOSE", "KEY_ID", "STATUS", "CREATED"
            )?;
            for p in purposes {
                let ring = Keyring::open(data_dir, p)?;
                for k in ring.keys() {
                    let changed = k
                        .revoked_at
                        .or(k.retired_at)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{:<8} {:<25} {:<8} {:<26} {changed}",
                        p.as_str(),
                        k.key_id,
                        k.status.as_str(),
                        k.created_at.to_rfc3339()
                    )?;
                }
            }
        }
        KeysCommand::Export { purpose, out: file } => {
            let ring = Keyring::open(data_dir, purpose)?;
            let mut json = serde_json::to_vec_pretty(&ring.export_public()?)?;
            json.push(b'\n');
            match file {
                Some(path) => {
                    std::fs::write(&path, &json)
                        .with_context(|| format!("writing {}", path.display()))?;
                    writeln!(
                        out,
                        "wrote {} public keys to {}",
                        purpose.as_str(),
                        path.display()
                    )?;
                }
                None => out.write_all(&json)?,
            }
        }
    }
    Ok(0)
}

fn report(
    out: &mut (dyn Write + Send),
    result: Result<VerifiedBundle, VerifyError>,
) -> anyhow::Result<i32> {
    match result {
        Ok(v) => {
            let s = &v.score;
            writeln!(
                out,
                "OK {} run {} track {} score {} ({}/{}) signed by {} ({}) at {}",
                v.manifest.scenario_id,
                v.manifest.run_id,
                v.manifest.track,
                s.score,
                s.passed,
                s.total,
                v.key_id,
                v.key_status.as_str(),
                v.manifest.timestamp.to_rfc3339()
            )?;
            Ok(0)
        }
        Err(e) => {
            for p in e.problems() {
                writeln!(out, "FAIL {p}")?;
            }
            Ok(1)
        }
    }
}

/// Runs `forge bundle ...` (async: it may fetch over HTTP).
pub async fn run_bundle(
    data_dir: &Path,
    cmd: BundleCommand,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let BundleCommand::Verify { target, public_key } = cmd;
    let keys = key_source(data_dir, KeyPurpose::Verdict, public_key.as_deref())?;
    if target.starts_with("http://") || target.starts_with("https://") {
        return report(out, verify_bundle_url(&target, &keys).await);
    }
    let mut dir = PathBuf::from(&target);
    if dir.is_file()
        && dir
            .file_name()
            .is_some_and(|n| BundleFiles::NAMES.iter().any(|f| n == *f))
    {
        dir.pop();
    }
    if !dir.is_dir() {
        bail!("{target}: not a bundle directory or http(s) url");
    }
    report(out, verify_bundle(&dir, &keys))
}

/// Runs `forge audit ...`.
pub fn run_audit(
    data_dir: &Path,
    cmd: AuditCommand,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let AuditCommand::Verify { log, public_key } = cmd;
    let log = log.unwrap_or_else(|| AuditLog::default_path(data_dir));
    if !log.exists() {
        bail!("{}: no audit log", log.display());
    }
    let keys = key_source(data_dir, KeyPurpose::Audit, public_key.as_deref())?;
    match verify_log(&log, &keys) {
        Ok(r) => {
            writeln!(
                out,
                "OK {}: {} events, {} checkpoints, last seq {}, head {}, keys {}",
                log.display(),
                r.events,
                r.checkpoints,
                r.last_seq,
                r.head_hash,
                r.key_ids.into_iter().collect::<Vec<_>>().join(",")
            )?;
            Ok(0)
        }
        Err(e) => {
            writeln!(out, "FAIL {}: {e}", log.display())?;
            Ok(1)
        }
    }
}
