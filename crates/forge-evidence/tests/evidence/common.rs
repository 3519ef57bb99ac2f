//! Shared fixtures: a realistic bundle input, keyrings in temp dirs, and the checks several
//! test modules make. The bundle bench borrows [`noise`] from here too.

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use forge_core::{ArtifactType, CriterionResult, Track};
use forge_evidence::audit_log::{AuditLog, AuditLogConfig, AuditLogError};
use forge_evidence::bundle::{ArtifactInput, Bundle, BundleInput, BundleMeta, seal};
use forge_evidence::keyring::{KeyPurpose, KeySource, Keyring, Signer};
use forge_evidence::verify::{BundleFiles, VerifyError, verify_files};

pub fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_735_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

/// Deterministic pseudo-random bytes (xorshift), so fixtures are reproducible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `n` criteria, one artifact each: command outputs (text) and file captures (partly random).
pub fn input(n: usize, bytes_per_artifact: usize) -> BundleInput {
    let mut artifacts = Vec::new();
    let mut criteria = Vec::new();
    for i in 0..n {
        let artifact = if i % 2 == 0 {
            let mut text = String::new();
            while text.len() < bytes_per_artifact {
                text.push_str(&format!(
                    "64 bytes from 10.20.0.{i}: icmp_seq={} ttl=64 time=0.0{i} ms\n",
                    text.len()
                ));
            }
            text.truncate(bytes_per_artifact);
            ArtifactInput::new(
                ArtifactType::CommandOutput,
                format!("crit-{i:02}.0.command_output"),
                text.into_bytes(),
            )
        } else {
            let mut bytes = noise(i as u64 + 1, bytes_per_artifact / 2);
            bytes.extend(std::iter::repeat_n(b'#', bytes_per_artifact - bytes.len()));
            ArtifactInput::new(
                ArtifactType::FileCapture,
                format!("crit-{i:02}.0.file_capture"),
                bytes,
            )
        };
        criteria.push(CriterionResult {
            criterion_id: format!("crit-{i:02}"),
            passed: i % 5 != 3,
            evidence_refs: vec![artifact.artifact.name.clone()],
            message: (i % 5 == 3).then(|| "expected route not present".to_owned()),
            weight: 1.0 + (i % 3) as f64,
        });
        artifacts.push(artifact);
    }
    BundleInput {
        meta: BundleMeta {
            scenario_id: "scn-def456789012".parse().expect("id"),
            run_id: "run-0123456789ab".parse().expect("id"),
            track: Track::Netplus,
            collected_at: at(0),
            computed_at: at(5),
        },
        criteria,
        artifacts,
    }
}

/// A verdict keyring in a fresh temp dir, with its first key.
pub struct Keys {
    pub dir: tempfile::TempDir,
    pub ring: Keyring,
    pub signer: Signer,
}

impl Keys {
    pub fn new(purpose: KeyPurpose) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ring = Keyring::open(dir.path(), purpose).expect("open keyring");
        let signer = ring.signer().expect("first key");
        Self { dir, ring, signer }
    }

    pub fn source(&self) -> KeySource {
        let ring = Keyring::open(self.dir.path(), self.ring.purpose()).expect("reopen keyring");
        KeySource::from_keyring(&ring).expect("export keys")
    }

    /// Opens (or creates) the audit log at `path`, signed with this keyring's key and trusting
    /// its keys, with the default checkpoints: the way the services open theirs.
    pub fn open_log(&self, path: &Path) -> Result<AuditLog, AuditLogError> {
        AuditLog::open(
            path,
            self.signer.clone(),
            &self.source(),
            AuditLogConfig::default(),
        )
    }
}

pub fn bundle(keys: &Keys) -> Bundle {
    Bundle::build(input(20, 2048), &keys.signer).expect("bundle builds")
}

/// The meta `b` was built with, for sealing altered contents under it.
pub fn meta(b: &Bundle) -> BundleMeta {
    BundleMeta {
        scenario_id: b.manifest.scenario_id.clone(),
        run_id: b.manifest.run_id.clone(),
        track: b.manifest.track,
        collected_at: b.manifest.collected_at,
        computed_at: b.manifest.timestamp,
    }
}

/// `b` with `evidence` as its archive, re-signed by `signer`: what an insider with the signing
/// key could produce.
pub fn with_evidence(b: &Bundle, evidence: Vec<u8>, signer: &Signer) -> Bundle {
    seal(
        &meta(b),
        b.score.clone(),
        b.score_json.clone(),
        evidence,
        signer,
    )
    .expect("reseal")
}

/// Why `files` fail verification against `keys` now.
#[track_caller]
pub fn refusal(files: &BundleFiles, keys: &KeySource) -> VerifyError {
    verify_files(files, keys, Utc::now()).expect_err("verification must fail")
}
