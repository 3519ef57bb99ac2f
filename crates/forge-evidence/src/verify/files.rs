//! Getting a bundle's four files: from a [`Bundle`] in memory, a directory, or an HTTP(S) base URL.

use std::path::Path;

use super::{MAX_FETCH_BYTES, ProblemKind, VerifyError};
use crate::bundle::{Bundle, EVIDENCE_FILE, MANIFEST_FILE, SCORE_FILE, VERDICT_FILE};

/// The four files of a bundle as fetched; `None` is a missing file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleFiles {
    pub score_json: Option<Vec<u8>>,
    pub evidence: Option<Vec<u8>>,
    pub manifest_json: Option<Vec<u8>>,
    pub verdict_sig: Option<Vec<u8>>,
}

impl From<&Bundle> for BundleFiles {
    fn from(b: &Bundle) -> Self {
        Self {
            score_json: Some(b.score_json.clone()),
            evidence: Some(b.evidence.clone()),
            manifest_json: Some(b.manifest_json.clone()),
            verdict_sig: Some(b.verdict_sig.clone()),
        }
    }
}

impl BundleFiles {
    pub const NAMES: [&'static str; 4] = [SCORE_FILE, EVIDENCE_FILE, MANIFEST_FILE, VERDICT_FILE];

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match name {
            SCORE_FILE => self.score_json.as_deref(),
            EVIDENCE_FILE => self.evidence.as_deref(),
            MANIFEST_FILE => self.manifest_json.as_deref(),
            VERDICT_FILE => self.verdict_sig.as_deref(),
            _ => None,
        }
    }

    pub fn slot(&mut self, name: &str) -> Option<&mut Option<Vec<u8>>> {
        match name {
            SCORE_FILE => Some(&mut self.score_json),
            EVIDENCE_FILE => Some(&mut self.evidence),
            MANIFEST_FILE => Some(&mut self.manifest_json),
            VERDICT_FILE => Some(&mut self.verdict_sig),
            _ => None,
        }
    }

    /// Reads the four files from `dir`; a missing file is `None`, other read errors fail.
    pub fn from_dir(dir: &Path) -> Result<Self, VerifyError> {
        let mut files = Self::default();
        for name in Self::NAMES {
            let bytes = match std::fs::read(dir.join(name)) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(VerifyError::one(
                        name,
                        ProblemKind::Unreadable,
                        e.to_string(),
                    ));
                }
            };
            *files.slot(name).expect("known name") = bytes;
        }
        Ok(files)
    }

    /// Downloads the four files from `<base>/<name>` with HTTP GET; 404 is a missing file.
    /// Fetches the four files under `base`, with `bearer` as the token when the server wants
    /// one (the scoreboard serves them to their owner and to score readers only).
    pub async fn from_url(base: &str, bearer: Option<&str>) -> Result<Self, VerifyError> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| {
                VerifyError::one(
                    MANIFEST_FILE,
                    ProblemKind::Unreadable,
                    format!("http client: {e}"),
                )
            })?;
        let base = base.trim_end_matches('/');
        let fetches = Self::NAMES.map(|name| fetch(&client, format!("{base}/{name}"), bearer));
        let [a, b, c, d] = fetches;
        let (a, b, c, d) = tokio::join!(a, b, c, d);
        let mut files = Self::default();
        for (name, r) in Self::NAMES.into_iter().zip([a, b, c, d]) {
            *files.slot(name).expect("known name") =
                r.map_err(|reason| VerifyError::one(name, ProblemKind::Unreadable, reason))?;
        }
        Ok(files)
    }
}

async fn fetch(
    client: &reqwest::Client,
    url: String,
    bearer: Option<&str>,
) -> Result<Option<Vec<u8>>, String> {
    let mut req = client.get(&url);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let mut resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        let why = if bearer.is_some() {
            "the token was refused"
        } else {
            "the server wants a bearer token"
        };
        return Err(format!("GET {url}: http status 401: {why}"));
    }
    if !resp.status().is_success() {
        return Err(format!("GET {url}: http status {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() as u64 + chunk.len() as u64 > MAX_FETCH_BYTES {
            return Err(format!("GET {url}: larger than {MAX_FETCH_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}
