//! Building a signed evidence bundle: `score.json`, `evidence.tar.zst`, `manifest.json`,
//! `verdict.sig` (spec: forge_scoreboard outputs).
//!
//! Determinism is a feature: the same evidence always gives byte-identical files, so a bundle can
//! be rebuilt and compared, and re-publishing after a crash writes the same bytes.
//! - `score.json` is pretty JSON of the [`ScoreResult`] (criteria in input order) plus a newline.
//! - `evidence.tar.zst` holds every artifact at its `path`, `criteria_results.json` (input order)
//!   and `artifacts.json` (sorted by path). Entries are sorted by path, parent directories are
//!   explicit entries (mode 0755) before their children, files are mode 0644, uid/gid 0, empty
//!   user/group names, and every mtime is the evidence's `collected_at` (whole seconds, clamped to
//!   the tar range), so listing the archive shows when evidence was taken while the bytes stay
//!   reproducible. The tar is compressed in one shot at zstd level [`ZSTD_LEVEL`], single-threaded,
//!   with the frame checksum on. (Byte identity holds for one build of libzstd; verification never
//!   recompresses, it only hashes what was published.)
//! - `manifest.json` is RFC 8785 canonical JSON of [`Manifest`]; `verdict.sig` is canonical JSON of
//!   [`VerdictSig`], an Ed25519 signature over the exact manifest bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use forge_core::{Artifact, ArtifactType, CriterionResult, RunId, ScenarioId, ScoreResult, Track};
use serde::{Deserialize, Serialize};

use crate::keyring::Signer;
use crate::util::{canonical_json, sha256_hex, write_new};

pub const MANIFEST_SCHEMA: &str = "frostgate.forge/manifest/v1";
pub const SCORE_FILE: &str = "score.json";
pub const EVIDENCE_FILE: &str = "evidence.tar.zst";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const VERDICT_FILE: &str = "verdict.sig";
/// Entry of the evidence archive holding the criteria results.
pub const CRITERIA_ENTRY: &str = "criteria_results.json";
/// Entry of the evidence archive holding the artifact metadata.
pub const ARTIFACTS_ENTRY: &str = "artifacts.json";
/// Pinned so rebuilding gives the same bytes; 9 is well inside the 50 ms budget for 1 MiB.
pub const ZSTD_LEVEL: i32 = 9;

/// One collected artifact: its metadata and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInput {
    pub artifact: Artifact,
    pub content: Vec<u8>,
}

impl ArtifactInput {
    /// Describes and hashes `content` (path `artifacts/<name>`).
    pub fn new(kind: ArtifactType, name: impl Into<String>, content: Vec<u8>) -> Self {
        Self {
            artifact: Artifact::describe(kind, name, &content),
            content,
        }
    }
}

/// Scenario metadata that goes into the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleMeta {
    pub scenario_id: ScenarioId,
    pub run_id: RunId,
    pub track: Track,
    /// When evidence collection finished (the archive's mtime).
    pub collected_at: DateTime<Utc>,
    /// When the score was computed: `computed_at` of `score.json` and the manifest `timestamp`.
    pub computed_at: DateTime<Utc>,
}

/// Everything the scoreboard has after the playbook runner is done.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleInput {
    pub meta: BundleMeta,
    pub criteria: Vec<CriterionResult>,
    pub artifacts: Vec<ArtifactInput>,
}

/// The score as recorded in the manifest, so a verifier can cross-check `score.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestScore {
    pub value: f64,
    pub passed: u32,
    pub total: u32,
}

/// `manifest.json` (schema `frostgate.forge/manifest/v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub scenario_id: ScenarioId,
    pub run_id: RunId,
    pub track: Track,
    /// RFC 3339, UTC: when the score was computed and the bundle signed.
    pub timestamp: DateTime<Utc>,
    pub collected_at: DateTime<Utc>,
    pub key_id: String,
    pub score: ManifestScore,
    /// File name → lowercase hex SHA-256, for `score.json` and `evidence.tar.zst`.
    pub files: BTreeMap<String, String>,
}

/// `verdict.sig`: a detached signature over the exact bytes of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictSig {
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// Standard base64 of the 64-byte signature.
    pub signature: String,
}

impl VerdictSig {
    /// Signs `manifest_bytes` and returns the `verdict.sig` file content.
    pub fn sign(manifest_bytes: &[u8], signer: &Signer) -> Vec<u8> {
        let sig = VerdictSig {
            key_id: signer.key_id().to_owned(),
            algorithm: "ed25519".into(),
            signature: signer.sign(manifest_bytes),
        };
        canonical_json(&sig).expect("verdict.sig serialises")
    }
}

/// Why a bundle cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("artifact `{name}`: {reason}")]
    InvalidArtifact { name: String, reason: String },
    #[error("criterion `{criterion_id}`: {reason}")]
    InvalidCriterion {
        criterion_id: String,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("encoding {what}: {reason}")]
    Encode { what: &'static str, reason: String },
}

/// A complete signed bundle: the four files' bytes and what they say.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub manifest: Manifest,
    pub score: ScoreResult,
    pub score_json: Vec<u8>,
    pub evidence: Vec<u8>,
    pub manifest_json: Vec<u8>,
    pub verdict_sig: Vec<u8>,
}

impl Bundle {
    /// Scores `input`, packs the evidence, writes the manifest and signs it with `signer`.
    pub fn build(input: BundleInput, signer: &Signer) -> Result<Self, BundleError> {
        let BundleInput {
            meta,
            criteria,
            artifacts,
        } = input;
        let evidence = pack_evidence(meta.collected_at, &criteria, &artifacts)?;
        let score =
            forge_core::calculate_score(meta.scenario_id.clone(), criteria, meta.computed_at);
        let score_json = score_json(&score)?;
        seal(&meta, score, score_json, evidence, signer)
    }

    /// The four files in publication order (`verdict.sig` last, so its presence means complete).
    pub fn files(&self) -> [(&'static str, &[u8]); 4] {
        [
            (SCORE_FILE, &self.score_json),
            (EVIDENCE_FILE, &self.evidence),
            (MANIFEST_FILE, &self.manifest_json),
            (VERDICT_FILE, &self.verdict_sig),
        ]
    }

    /// Writes the four files into `dir` (created if needed). Existing files are never
    /// overwritten: a bundle is write-once.
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), BundleError> {
        std::fs::create_dir_all(dir).map_err(|source| BundleError::Io {
            path: dir.into(),
            source,
        })?;
        for (name, bytes) in self.files() {
            let path = dir.join(name);
            write_new(&path, bytes, 0o644).map_err(|source| BundleError::Io { path, source })?;
        }
        Ok(())
    }
}

/// `score.json` bytes: pretty JSON plus a trailing newline.
pub fn score_json(score: &ScoreResult) -> Result<Vec<u8>, BundleError> {
    let mut bytes = serde_json::to_vec_pretty(score).map_err(|e| BundleError::Encode {
        what: SCORE_FILE,
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes the manifest for already-built `score.json` and `evidence.tar.zst` bytes and signs it.
/// [`Bundle::build`] is the normal entry; this is the second half, public so tools (and tests)
/// can seal content they assembled themselves.
pub fn seal(
    meta: &BundleMeta,
    score: ScoreResult,
    score_json: Vec<u8>,
    evidence: Vec<u8>,
    signer: &Signer,
) -> Result<Bundle, BundleError> {
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA.into(),
        scenario_id: meta.scenario_id.clone(),
        run_id: meta.run_id.clone(),
        track: meta.track,
        timestamp: meta.computed_at,
        collected_at: meta.collected_at,
        key_id: signer.key_id().to_owned(),
        score: ManifestScore {
            value: score.score,
            passed: score.passed,
            total: score.total,
        },
        files: BTreeMap::from([
            (SCORE_FILE.to_owned(), sha256_hex(&score_json)),
            (EVIDENCE_FILE.to_owned(), sha256_hex(&evidence)),
        ]),
    };
    let manifest_json = canonical_json(&manifest).map_err(|reason| BundleError::Encode {
        what: MANIFEST_FILE,
        reason,
    })?;
    let verdict_sig = VerdictSig::sign(&manifest_json, signer);
    Ok(Bundle {
        manifest,
        score,
        score_json,
        evidence,
        manifest_json,
        verdict_sig,
    })
}

/// Checks an artifact path: relative, `/`-separated normal segments of safe characters, and not
/// one of the archive's own entries.
pub fn check_artifact_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 1024 {
        return Err("path must be 1 to 1024 bytes".into());
    }
    if path == CRITERIA_ENTRY || path == ARTIFACTS_ENTRY {
        return Err(format!(
            "path `{path}` is reserved for the bundle's own metadata"
        ));
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!(
                "path `{path}` must be relative with no empty, `.` or `..` segments"
            ));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+@=,:".contains(&b))
        {
            return Err(format!(
                "path `{path}` may only use ascii letters, digits and ._-+@=,:"
            ));
        }
    }
    Ok(())
}

enum Entry<'a> {
    Dir,
    File(&'a [u8]),
}

/// Builds the deterministic `evidence.tar.zst` (see the module docs for the exact format).
pub fn pack_evidence(
    collected_at: DateTime<Utc>,
    criteria: &[CriterionResult],
    artifacts: &[ArtifactInput],
) -> Result<Vec<u8>, BundleError> {
    let mut sorted: Vec<&ArtifactInput> = artifacts.iter().collect();
    sorted.sort_by(|a, b| a.artifact.path.cmp(&b.artifact.path));
    let mut names = BTreeSet::new();
    for a in &sorted {
        let invalid = |reason: String| BundleError::InvalidArtifact {
            name: a.artifact.name.clone(),
            reason,
        };
        check_artifact_path(&a.artifact.path).map_err(invalid)?;
        if !names.insert(a.artifact.name.as_str()) {
            return Err(invalid("name is used by more than one artifact".into()));
        }
        if a.artifact.size_bytes != a.content.len() as u64 {
            return Err(invalid(format!(
                "size_bytes {} but content is {} bytes",
                a.artifact.size_bytes,
                a.content.len()
            )));
        }
        let actual = sha256_hex(&a.content);
        if a.artifact.content_hash != actual {
            return Err(invalid(format!(
                "content_hash {} but content hashes to {actual}",
                a.artifact.content_hash
            )));
        }
    }
    let mut ids = BTreeSet::new();
    for c in criteria {
        let invalid = |reason: String| BundleError::InvalidCriterion {
            criterion_id: c.criterion_id.clone(),
            reason,
        };
        if !ids.insert(c.criterion_id.as_str()) {
            return Err(invalid("criterion id is used more than once".into()));
        }
        if let Some(r) = c.evidence_refs.iter().find(|r| !names.contains(r.as_str())) {
            return Err(invalid(format!(
                "evidence_ref `{r}` names no artifact in the bundle"
            )));
        }
    }

    let metadata: Vec<&Artifact> = sorted.iter().map(|a| &a.artifact).collect();
    let encode = |what, r: serde_json::Result<Vec<u8>>| {
        r.map(|mut b| {
            b.push(b'\n');
            b
        })
        .map_err(|e| BundleError::Encode {
            what,
            reason: e.to_string(),
        })
    };
    let criteria_json = encode(CRITERIA_ENTRY, serde_json::to_vec_pretty(criteria))?;
    let artifacts_json = encode(ARTIFACTS_ENTRY, serde_json::to_vec_pretty(&metadata))?;

    // Directory entries carry a trailing `/`, which also sorts them before their children.
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    entries.insert(CRITERIA_ENTRY.into(), Entry::File(&criteria_json));
    entries.insert(ARTIFACTS_ENTRY.into(), Entry::File(&artifacts_json));
    for a in &sorted {
        let path = &a.artifact.path;
        for (i, _) in path.match_indices('/') {
            entries.insert(format!("{}/", &path[..i]), Entry::Dir);
        }
        entries.insert(path.clone(), Entry::File(&a.content));
    }
    // Checked after the loop: `x` sorts before `x/inner`, so its directory appears later.
    if let Some(a) = sorted
        .iter()
        .find(|a| entries.contains_key(&format!("{}/", a.artifact.path)))
    {
        return Err(BundleError::InvalidArtifact {
            name: a.artifact.name.clone(),
            reason: format!(
                "path `{}` is also a directory of another artifact",
                a.artifact.path
            ),
        });
    }

    let mtime = collected_at.timestamp().clamp(0, 0o77_777_777_777) as u64;
    let total: usize = sorted.iter().map(|a| a.content.len() + 1024).sum::<usize>() + 8192;
    let mut builder = tar::Builder::new(Vec::with_capacity(total));
    let io = |source| BundleError::Io {
        path: EVIDENCE_FILE.into(),
        source,
    };
    for (path, entry) in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("").map_err(io)?;
        header.set_groupname("").map_err(io)?;
        let data: &[u8] = match entry {
            Entry::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                &[]
            }
            Entry::File(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                bytes
            }
        };
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, path, data).map_err(io)?;
    }
    let tar = builder.into_inner().map_err(io)?;

    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(io)?;
    compressor
        .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
        .map_err(io)?;
    compressor.compress(&tar).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_are_checked() {
        for ok in ["artifacts/a.json", "artifacts/x/y.0.command_output", "a"] {
            assert!(check_artifact_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "a\\b",
            "artifacts.json",
            "a b",
        ] {
            assert!(check_artifact_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_and_directory_with_one_path_are_refused() {
        let a = ArtifactInput::new(ArtifactType::FileCapture, "x", b"1".to_vec());
        let mut b = ArtifactInput::new(ArtifactType::FileCapture, "y", b"2".to_vec());
        b.artifact.path = "artifacts/x/inner".into();
        let err = pack_evidence(Utc::now(), &[], &[a, b]).unwrap_err();
        assert!(err.to_string().contains("also a directory"), "{err}");
    }

    #[test]
    fn dangling_evidence_ref_is_refused() {
        let c = CriterionResult {
            criterion_id: "c1".into(),
            passed: true,
            evidence_refs: vec!["nope".into()],
            message: None,
            weight: 1.0,
        };
        let err = pack_evidence(Utc::now(), &[c], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "criterion `c1`: evidence_ref `nope` names no artifact in the bundle"
        );
    }
}
