//! Periodic verification of this process's signed audit log: every interval the whole chain,
//! its signatures and its head are checked, as `forge audit verify` does, and
//! `forge_audit_chain_verified` says whether the last check passed (the AuditChainBroken alert
//! fires on 0). A record being appended while it is read can look cut off; such a check is
//! tried again shortly instead of raising a false alarm.

use std::path::PathBuf;
use std::time::Duration;

use forge_evidence::{AuditVerifyError, KeyPurpose, KeySource, Keyring, verify_log};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Checks the log at `log` (keys from the audit keyring in `data_dir`) every `every`.
pub fn spawn(
    log: PathBuf,
    data_dir: PathBuf,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    crate::spawn_every(every, shutdown, move || {
        let (log, data_dir) = (log.clone(), data_dir.clone());
        async move {
            let verdict = tokio::task::spawn_blocking(move || check(&log, &data_dir)).await;
            match verdict {
                Ok(Some(Ok(()))) => metrics::gauge!("forge_audit_chain_verified").set(1.0),
                Ok(Some(Err(why))) => {
                    tracing::error!(error = %why, "the audit log does not verify");
                    metrics::gauge!("forge_audit_chain_verified").set(0.0);
                }
                // Inconclusive (a record was being written, or the check could not run).
                Ok(None) | Err(_) => {}
            }
        }
    })
}

/// `None` when the check was inconclusive.
fn check(log: &std::path::Path, data_dir: &std::path::Path) -> Option<Result<(), String>> {
    if !log.exists() {
        return None;
    }
    let keys = match Keyring::open(data_dir, KeyPurpose::Audit)
        .map_err(|e| e.to_string())
        .and_then(|ring| KeySource::from_keyring(&ring).map_err(|e| e.to_string()))
    {
        Ok(k) => k,
        Err(e) => return Some(Err(format!("cannot read the audit keys: {e}"))),
    };
    for attempt in 0..3 {
        match verify_log(log, &keys) {
            Ok(_) => return Some(Ok(())),
            Err(AuditVerifyError::PartialRecord { .. }) if attempt < 2 => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(AuditVerifyError::PartialRecord { .. }) => return None,
            Err(e) => return Some(Err(e.to_string())),
        }
    }
    None
}
