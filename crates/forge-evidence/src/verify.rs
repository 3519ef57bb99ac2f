//! Offline verification of a bundle (spec: verdict.sig Verification steps).
//!
//! Order matters for trust: nothing in `manifest.json` is believed before `verdict.sig` verifies
//! over its exact bytes with a key the [`KeySource`] accepts (revoked fails, retired passes within
//! the retention window). Then every listed file is re-hashed, `score.json` and the archive's
//! `criteria_results.json` are parsed, the score is recomputed from the criteria and compared with
//! both `score.json` and the manifest, and every artifact in the archive is hashed against its
//! `content_hash` in `artifacts.json`. Once the signature holds, all independent problems are
//! collected so an operator sees everything wrong at once; each names the file at fault.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use forge_core::{Artifact, CriterionResult, ScoreResult};

use crate::bundle::{
    ARTIFACTS_ENTRY, CRITERIA_ENTRY, EVIDENCE_FILE, MANIFEST_FILE, MANIFEST_SCHEMA, Manifest,
    SCORE_FILE, VERDICT_FILE, VerdictSig, check_artifact_path,
};
use crate::keyring::{KeySource, KeyStatus, verify_b64};
use crate::util::sha256_hex;

mod files;

pub use files::BundleFiles;

/// Upper bound on the unpacked archive, so a hostile bundle cannot exhaust memory.
pub const MAX_UNPACKED_BYTES: u64 = 1 << 30;
/// Upper bound on any one downloaded file.
pub const MAX_FETCH_BYTES: u64 = 1 << 30;
/// Scores are compared with this tolerance: JSON float parsing may differ by one ulp.
const SCORE_EPSILON: f64 = 1e-9;

/// What kind of problem a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The file is absent.
    Missing,
    /// The file could not be read or downloaded.
    Unreadable,
    /// The file is not what its format says it must be.
    Malformed,
    /// The signing key is unknown, revoked, expired or unusable.
    Key,
    /// The signature does not verify over `manifest.json`.
    Signature,
    /// The file does not hash to what the manifest says.
    HashMismatch,
    /// Scores or criteria disagree between score.json, the archive and the manifest.
    ScoreMismatch,
    /// An artifact does not match its metadata, or the archive's contents and metadata differ.
    ArtifactMismatch,
}

/// One thing wrong with a bundle, naming the file at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct Problem {
    /// `score.json`, `evidence.tar.zst`, `manifest.json`, `verdict.sig` or an artifact path
    /// inside the archive (`artifacts/xyz`).
    pub file: String,
    pub kind: ProblemKind,
    pub reason: String,
}

/// A bundle failed verification; holds at least one [`Problem`], the most fundamental first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    problems: Vec<Problem>,
}

impl VerifyError {
    pub(crate) fn one(file: &str, kind: ProblemKind, reason: impl Into<String>) -> Self {
        Self {
            problems: vec![problem(file, kind, reason)],
        }
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    pub fn first(&self) -> &Problem {
        &self.problems[0]
    }

    /// The file named by the first problem.
    pub fn file(&self) -> &str {
        &self.problems[0].file
    }
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.problems[0])?;
        match self.problems.len() {
            1 => Ok(()),
            n => write!(
                f,
                " (and {} more problem{})",
                n - 1,
                if n == 2 { "" } else { "s" }
            ),
        }
    }
}

impl std::error::Error for VerifyError {}

fn problem(file: &str, kind: ProblemKind, reason: impl Into<String>) -> Problem {
    Problem {
        file: file.to_owned(),
        kind,
        reason: reason.into(),
    }
}

/// A bundle that verified, and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedBundle {
    pub manifest: Manifest,
    pub score: ScoreResult,
    pub artifacts: Vec<Artifact>,
    pub key_id: String,
    /// `active` or `retired` (a single trusted PEM key counts as active).
    pub key_status: KeyStatus,
}

/// Verifies the bundle in directory `dir` now.
pub fn verify_bundle(dir: &Path, keys: &KeySource) -> Result<VerifiedBundle, VerifyError> {
    verify_files(&BundleFiles::from_dir(dir)?, keys, Utc::now())
}

/// Verifies the bundle published under the HTTP(S) base URL `base` now.
pub async fn verify_bundle_url(
    base: &str,
    keys: &KeySource,
    bearer: Option<&str>,
) -> Result<VerifiedBundle, VerifyError> {
    verify_files(
        &BundleFiles::from_url(base, bearer).await?,
        keys,
        Utc::now(),
    )
}

/// Where a bundle is: a directory holding its four files, or the HTTP(S) base URL they are
/// published under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleLocation {
    Dir(PathBuf),
    Url(String),
}

/// A target that names no bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}: not a bundle directory, a file of one, or an http(s) url")]
pub struct NotABundle(pub String);

impl BundleLocation {
    /// Verifies the bundle here now; `bearer` authenticates the download of a URL.
    pub async fn verify(
        &self,
        keys: &KeySource,
        bearer: Option<&str>,
    ) -> Result<VerifiedBundle, VerifyError> {
        match self {
            Self::Dir(dir) => verify_bundle(dir, keys),
            Self::Url(base) => verify_bundle_url(base, keys, bearer).await,
        }
    }
}

impl std::str::FromStr for BundleLocation {
    type Err = NotABundle;

    /// `http(s)://…` is a base URL; a directory is itself; one of a bundle's four files
    /// (`manifest.json`, …) stands for the directory it is in.
    fn from_str(target: &str) -> Result<Self, NotABundle> {
        if target.starts_with("http://") || target.starts_with("https://") {
            return Ok(Self::Url(target.to_owned()));
        }
        let path = Path::new(target);
        if path.is_dir() {
            return Ok(Self::Dir(path.to_owned()));
        }
        let names_a_bundle_file = path
            .file_name()
            .is_some_and(|n| BundleFiles::NAMES.iter().any(|f| n == *f));
        if path.is_file() && names_a_bundle_file {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            return Ok(Self::Dir(dir));
        }
        Err(NotABundle(target.to_owned()))
    }
}

fn require<'a>(files: &'a BundleFiles, name: &str) -> Result<&'a [u8], VerifyError> {
    files
        .get(name)
        .ok_or_else(|| VerifyError::one(name, ProblemKind::Missing, "file is missing"))
}

/// Verifies `files` with `keys` as of `now` (which decides whether a retired key has expired).
pub fn verify_files(
    files: &BundleFiles,
    keys: &KeySource,
    now: DateTime<Utc>,
) -> Result<VerifiedBundle, VerifyError> {
    use ProblemKind::*;
    let sig_bytes = require(files, VERDICT_FILE)?;
    let sig: VerdictSig = serde_json::from_slice(sig_bytes).map_err(|e| {
        VerifyError::one(
            VERDICT_FILE,
            Malformed,
            format!("not a verdict signature json: {e}"),
        )
    })?;
    if sig.algorithm != "ed25519" {
        return Err(VerifyError::one(
            VERDICT_FILE,
            Malformed,
            format!("unsupported algorithm `{}`", sig.algorithm),
        ));
    }
    let manifest_bytes = require(files, MANIFEST_FILE)?;
    let manifest: Manifest = serde_json::from_slice(manifest_bytes).map_err(|e| {
        VerifyError::one(
            MANIFEST_FILE,
            Malformed,
            format!("not a manifest json: {e}"),
        )
    })?;
    let (key, key_status) = keys
        .resolve(&sig.key_id, now)
        .map_err(|e| VerifyError::one(VERDICT_FILE, Key, e.to_string()))?;
    verify_b64(&key, manifest_bytes, &sig.signature).map_err(|reason| {
        VerifyError::one(
            VERDICT_FILE,
            Signature,
            format!("{reason} over manifest.json with key `{}` (verdict.sig or manifest.json was altered)", sig.key_id),
        )
    })?;
    // The manifest is authentic from here on.
    if manifest.schema != MANIFEST_SCHEMA {
        return Err(VerifyError::one(
            MANIFEST_FILE,
            Malformed,
            format!("unsupported schema `{}`", manifest.schema),
        ));
    }
    if manifest.key_id != sig.key_id {
        return Err(VerifyError::one(
            MANIFEST_FILE,
            Key,
            format!(
                "key_id `{}` differs from verdict.sig key_id `{}`",
                manifest.key_id, sig.key_id
            ),
        ));
    }

    let mut problems = Vec::new();
    for name in manifest
        .files
        .keys()
        .filter(|n| !matches!(n.as_str(), SCORE_FILE | EVIDENCE_FILE))
    {
        problems.push(problem(
            MANIFEST_FILE,
            Malformed,
            format!("lists unknown file `{name}`"),
        ));
    }
    let mut hashed_ok = BTreeSet::new();
    for name in [SCORE_FILE, EVIDENCE_FILE] {
        let Some(expected) = manifest.files.get(name) else {
            problems.push(problem(
                MANIFEST_FILE,
                Malformed,
                format!("does not list `{name}`"),
            ));
            continue;
        };
        let Some(bytes) = files.get(name) else {
            problems.push(problem(name, Missing, "file is missing"));
            continue;
        };
        let actual = sha256_hex(bytes);
        if &actual == expected {
            hashed_ok.insert(name);
        } else {
            problems.push(problem(
                name,
                HashMismatch,
                format!("sha256 {actual} does not match {expected} in manifest.json"),
            ));
        }
    }

    let score = hashed_ok
        .contains(SCORE_FILE)
        .then(|| check_score_json(files, &manifest, &mut problems))
        .flatten();
    let evidence = hashed_ok
        .contains(EVIDENCE_FILE)
        .then(|| check_evidence(files.evidence.as_deref().unwrap_or_default(), &mut problems))
        .flatten();

    if let (Some(score), Some((criteria, artifacts))) = (&score, &evidence) {
        let recomputed = forge_core::calculate_score(
            manifest.scenario_id.clone(),
            criteria.clone(),
            score.computed_at,
        );
        if (recomputed.score - score.score).abs() > SCORE_EPSILON
            || (recomputed.passed, recomputed.total) != (score.passed, score.total)
        {
            problems.push(problem(
                SCORE_FILE,
                ScoreMismatch,
                format!(
                    "score {} ({}/{}) does not match {} ({}/{}) recomputed from {CRITERIA_ENTRY} in evidence.tar.zst",
                    score.score, score.passed, score.total, recomputed.score, recomputed.passed, recomputed.total
                ),
            ));
        }
        if &score.criteria != criteria {
            problems.push(problem(
                SCORE_FILE,
                ScoreMismatch,
                format!("criteria differ from {CRITERIA_ENTRY} in evidence.tar.zst"),
            ));
        }
        if problems.is_empty() {
            return Ok(VerifiedBundle {
                manifest,
                score: score.clone(),
                artifacts: artifacts.clone(),
                key_id: sig.key_id,
                key_status,
            });
        }
    }
    debug_assert!(
        !problems.is_empty(),
        "a check failed without recording a problem"
    );
    if problems.is_empty() {
        problems.push(problem(MANIFEST_FILE, Malformed, "bundle is incomplete"));
    }
    Err(VerifyError { problems })
}

/// Parses `score.json` and compares it with the signed manifest.
fn check_score_json(
    files: &BundleFiles,
    manifest: &Manifest,
    problems: &mut Vec<Problem>,
) -> Option<ScoreResult> {
    use ProblemKind::*;
    let bytes = files.score_json.as_deref()?;
    let score: ScoreResult = match serde_json::from_slice(bytes) {
        Ok(s) => s,
        Err(e) => {
            problems.push(problem(
                SCORE_FILE,
                Malformed,
                format!("not a score result json: {e}"),
            ));
            return None;
        }
    };
    if score.scenario_id != manifest.scenario_id {
        problems.push(problem(
            SCORE_FILE,
            ScoreMismatch,
            format!(
                "scenario_id `{}` differs from manifest.json `{}`",
                score.scenario_id, manifest.scenario_id
            ),
        ));
    }
    let m = &manifest.score;
    if (m.value - score.score).abs() > SCORE_EPSILON
        || (m.passed, m.total) != (score.passed, score.total)
    {
        problems.push(problem(
            SCORE_FILE,
            ScoreMismatch,
            format!(
                "score {} ({}/{}) differs from manifest.json score {} ({}/{})",
                score.score, score.passed, score.total, m.value, m.passed, m.total
            ),
        ));
    }
    Some(score)
}

/// Unpacks the archive in memory and checks it against its own `artifacts.json`.
fn check_evidence(
    bytes: &[u8],
    problems: &mut Vec<Problem>,
) -> Option<(Vec<CriterionResult>, Vec<Artifact>)> {
    use ProblemKind::*;
    let entries = match unpack(bytes) {
        Ok(e) => e,
        Err(reason) => {
            problems.push(problem(EVIDENCE_FILE, Malformed, reason));
            return None;
        }
    };
    let criteria: Option<Vec<CriterionResult>> = parse_entry(&entries, CRITERIA_ENTRY, problems);
    let artifacts: Option<Vec<Artifact>> = parse_entry(&entries, ARTIFACTS_ENTRY, problems);
    let (criteria, artifacts) = (criteria?, artifacts?);

    let before = problems.len();
    let mut listed = BTreeSet::new();
    let mut names = BTreeSet::new();
    for a in &artifacts {
        if let Err(reason) = check_artifact_path(&a.path) {
            problems.push(problem(
                EVIDENCE_FILE,
                Malformed,
                format!("{ARTIFACTS_ENTRY}: {reason}"),
            ));
            continue;
        }
        if !listed.insert(a.path.as_str()) || !names.insert(a.name.as_str()) {
            problems.push(problem(
                &a.path,
                ArtifactMismatch,
                format!("listed twice in {ARTIFACTS_ENTRY}"),
            ));
            continue;
        }
        let Some(content) = entries.get(&a.path) else {
            problems.push(problem(
                &a.path,
                Missing,
                format!("listed in {ARTIFACTS_ENTRY} but absent from evidence.tar.zst"),
            ));
            continue;
        };
        let actual = sha256_hex(content);
        if actual != a.content_hash {
            problems.push(problem(
                &a.path,
                ArtifactMismatch,
                format!(
                    "sha256 {actual} does not match content_hash {} in {ARTIFACTS_ENTRY}",
                    a.content_hash
                ),
            ));
        } else if content.len() as u64 != a.size_bytes {
            problems.push(problem(
                &a.path,
                ArtifactMismatch,
                format!(
                    "{} bytes but size_bytes is {} in {ARTIFACTS_ENTRY}",
                    content.len(),
                    a.size_bytes
                ),
            ));
        } else if a.kind == forge_core::ArtifactType::AgentTimeline
            && let Err(reason) = forge_core::timeline::Timeline::verify(content)
        {
            // The hashes hold, so this was edited before it was signed, or by someone who
            // re-hashed it: either way the chain of agent actions is not what happened.
            problems.push(problem(&a.path, ArtifactMismatch, reason));
        }
    }
    for path in entries
        .keys()
        .filter(|p| !listed.contains(p.as_str()) && *p != CRITERIA_ENTRY && *p != ARTIFACTS_ENTRY)
    {
        problems.push(problem(
            EVIDENCE_FILE,
            ArtifactMismatch,
            format!("entry `{path}` is not listed in {ARTIFACTS_ENTRY}"),
        ));
    }
    for c in &criteria {
        for r in c
            .evidence_refs
            .iter()
            .filter(|r| !names.contains(r.as_str()))
        {
            problems.push(problem(
                EVIDENCE_FILE,
                ArtifactMismatch,
                format!(
                    "criterion `{}` cites `{r}`, which is not in {ARTIFACTS_ENTRY}",
                    c.criterion_id
                ),
            ));
        }
    }
    (problems.len() == before).then_some((criteria, artifacts))
}

fn parse_entry<T: serde::de::DeserializeOwned>(
    entries: &BTreeMap<String, Vec<u8>>,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let Some(bytes) = entries.get(name) else {
        problems.push(problem(
            EVIDENCE_FILE,
            ProblemKind::Missing,
            format!("archive has no `{name}`"),
        ));
        return None;
    };
    serde_json::from_slice(bytes)
        .map_err(|e| {
            problems.push(problem(
                EVIDENCE_FILE,
                ProblemKind::Malformed,
                format!("{name}: {e}"),
            ))
        })
        .ok()
}

/// Decompresses and reads the archive's regular files into memory (never onto disk). Directory
/// entries are skipped; any other entry type, a duplicate path or a size over the bound fails.
pub fn unpack(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let decoder =
        zstd::stream::read::Decoder::new(bytes).map_err(|e| format!("not a zstd stream: {e}"))?;
    let mut archive = tar::Archive::new(decoder.take(MAX_UNPACKED_BYTES + 1));
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("corrupt archive: {e}"))?;
        let path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| "archive entry path is not utf-8".to_owned())?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular => {}
            other => return Err(format!("entry `{path}` has unsupported type {other:?}")),
        }
        total += entry.size();
        if total > MAX_UNPACKED_BYTES {
            return Err(format!("unpacks to more than {MAX_UNPACKED_BYTES} bytes"));
        }
        let mut content = Vec::with_capacity(entry.size().min(1 << 24) as usize);
        entry
            .read_to_end(&mut content)
            .map_err(|e| format!("entry `{path}`: {e}"))?;
        if out.insert(path.clone(), content).is_some() {
            return Err(format!("entry `{path}` appears twice"));
        }
    }
    Ok(out)
}
