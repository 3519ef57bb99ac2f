//! The identity provider's public keys: a JWKS document from a file or URL, cached for a TTL,
//! refetched on an unknown `kid` at most once per `min_refresh_interval`.
//!
//! Symmetric (`oct`) keys in a JWKS are ignored: a JWKS is public, and accepting an HMAC key
//! from it would let anyone sign tokens.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use tokio::sync::{Mutex, RwLock};

use crate::{AuthError, JwksConfig, JwksSource};

/// One usable key of the set.
pub(crate) struct KeyEntry {
    pub key: DecodingKey,
    pub family: AlgorithmFamily,
    /// The key's declared `alg`, when the JWK has one; tokens must then use exactly it.
    pub alg: Option<Algorithm>,
}

struct Loaded {
    keys: HashMap<String, Arc<KeyEntry>>,
    fetched_at: Instant,
}

pub(crate) struct JwksCache {
    config: JwksConfig,
    client: Option<reqwest::Client>,
    loaded: RwLock<Option<Loaded>>,
    /// When the last fetch was attempted (successful or not) and why it failed, if it did.
    last_attempt: Mutex<Option<(Instant, Option<String>)>>,
    fetches: std::sync::atomic::AtomicU64,
}

impl JwksCache {
    pub fn new(config: JwksConfig) -> Self {
        let client = match &config.source {
            JwksSource::Url(_) => {
                crate::install_crypto_provider();
                Some(
                    reqwest::Client::builder()
                        .timeout(config.fetch_timeout)
                        .build()
                        .expect("http client builds"),
                )
            }
            JwksSource::File(_) => None,
        };
        Self {
            config,
            client,
            loaded: RwLock::new(None),
            last_attempt: Mutex::new(None),
            fetches: Default::default(),
        }
    }

    /// How many times the document was fetched (for tests and diagnostics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key named `kid`, fetching or refetching the set when needed.
    pub async fn key(&self, kid: &str) -> Result<Arc<KeyEntry>, AuthError> {
        {
            let loaded = self.loaded.read().await;
            if let Some(l) = loaded.as_ref()
                && l.fetched_at.elapsed() < self.config.ttl
                && let Some(k) = l.keys.get(kid)
            {
                return Ok(k.clone());
            }
        }
        self.refresh().await;
        let loaded = self.loaded.read().await;
        match loaded.as_ref() {
            Some(l) => l
                .keys
                .get(kid)
                .cloned()
                .ok_or_else(|| AuthError::UnknownKey(kid.to_owned())),
            None => {
                let why = self
                    .last_attempt
                    .lock()
                    .await
                    .as_ref()
                    .and_then(|(_, e)| e.clone());
                Err(AuthError::KeysUnavailable(why.unwrap_or_else(|| {
                    "the JWKS has not been fetched yet".into()
                })))
            }
        }
    }

    /// Refetches unless another fetch happened within `min_refresh_interval` (the one in
    /// progress included: callers queue on the lock and then see it was just done).
    async fn refresh(&self) {
        let mut last = self.last_attempt.lock().await;
        if let Some((at, _)) = last.as_ref()
            && at.elapsed() < self.config.min_refresh_interval
        {
            return;
        }
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = self.fetch().await;
        let now = Instant::now();
        match result {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "jwks fetched");
                *self.loaded.write().await = Some(Loaded {
                    keys,
                    fetched_at: now,
                });
                *last = Some((now, None));
            }
            Err(e) => {
                // Keep serving the keys we have: an IdP outage must not lock everyone out.
                tracing::warn!(error = %e, "jwks fetch failed");
                *last = Some((now, Some(e)));
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<KeyEntry>>, String> {
        let text = match &self.config.source {
            JwksSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            JwksSource::Url(url) => {
                let client = self.client.as_ref().expect("url source has a client");
                let resp = client
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| format!("cannot fetch {url}: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("{url} answered {}", resp.status()));
                }
                resp.text()
                    .await
                    .map_err(|e| format!("cannot read {url}: {e}"))?
            }
        };
        parse_jwks(&text)
    }
}

/// Parses a JWKS document, keeping every usable asymmetric key that has a `kid`.
pub(crate) fn parse_jwks(text: &str) -> Result<HashMap<String, Arc<KeyEntry>>, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = HashMap::new();
    for raw in doc.keys {
        // One odd key must not take the whole set down; skip it and say so.
        let jwk: Jwk = match serde_json::from_value(raw) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "skipping unparsable JWKS key");
                continue;
            }
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            tracing::warn!("skipping JWKS key without kid");
            continue;
        };
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            _ => {
                tracing::warn!(kid, "skipping symmetric or unknown JWKS key");
                continue;
            }
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(ka) => match Algorithm::try_from(ka) {
                Ok(a) => Some(a),
                Err(_) => {
                    tracing::warn!(kid, "skipping JWKS key with an unsupported alg");
                    continue;
                }
            },
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => {
                keys.insert(kid, Arc::new(KeyEntry { key, family, alg }));
            }
            Err(e) => tracing::warn!(kid, error = %e, "skipping unusable JWKS key"),
        }
    }
    Ok(keys)
}
