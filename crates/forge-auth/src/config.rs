//! How a deployment verifies tokens, from the environment or built in code.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `FORGE_JWT_ISSUER` | `forge-local` | required `iss` |
//! | `FORGE_JWT_AUDIENCE` | `forge` | required `aud` (one of) |
//! | `FORGE_JWKS_URL` | — | JWKS of the identity provider (RS256/EdDSA) |
//! | `FORGE_JWKS_FILE` | — | the same, from a file |
//! | `FORGE_JWKS_TTL_SECS` | `300` | how long fetched keys are trusted before a refetch |
//! | `FORGE_JWKS_REFRESH_MIN_SECS` | `30` | at most one refetch per this many seconds on an unknown `kid` |
//! | `FORGE_AUTH_LOCAL_HS256` | `true` without a JWKS, else `false` | accept tokens signed with the data dir's HS256 secret |

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::AuthSetupError;
use crate::secret::load_or_create_hs256_secret;

pub const DEFAULT_ISSUER: &str = "forge-local";
pub const DEFAULT_AUDIENCE: &str = "forge";
/// Clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Where the identity provider's public keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    pub source: JwksSource,
    /// Keys older than this are refetched (the old ones stay in use if the refetch fails).
    pub ttl: Duration,
    /// An unknown `kid` triggers a refetch (key rotation), but at most once per this interval,
    /// so a flood of forged kids cannot hammer the identity provider.
    pub min_refresh_interval: Duration,
    pub fetch_timeout: Duration,
}

impl JwksConfig {
    pub fn new(source: JwksSource) -> Self {
        Self {
            source,
            ttl: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything a [`crate::Verifier`] needs.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub leeway: Duration,
    /// The local HS256 secret; `None` refuses every HS256 token.
    pub hs256_secret: Option<Vec<u8>>,
    /// The identity provider's keys; `None` refuses every RS/EdDSA token.
    pub jwks: Option<JwksConfig>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwks", &self.jwks)
            .finish()
    }
}

impl AuthConfig {
    /// Local mode: HS256 with the data dir's secret (created on first use), default iss/aud.
    pub fn local(data_dir: &Path) -> Result<Self, AuthSetupError> {
        Ok(Self {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            leeway: DEFAULT_LEEWAY,
            hs256_secret: Some(load_or_create_hs256_secret(data_dir)?),
            jwks: None,
        })
    }

    /// From the process environment (see the module docs).
    pub fn from_env(data_dir: &Path) -> Result<Self, AuthSetupError> {
        Self::from_lookup(data_dir, |k| std::env::var(k).ok())
    }

    /// From any variable lookup (tests pass a map).
    pub fn from_lookup(
        data_dir: &Path,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AuthSetupError> {
        let var = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let secs = |k: &str, default: u64| -> Result<Duration, AuthSetupError> {
            match var(k) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => v.trim().parse().map(Duration::from_secs).map_err(|_| {
                    AuthSetupError::Config(format!(
                        "{k} must be a whole number of seconds, got `{v}`"
                    ))
                }),
            }
        };
        let source = match (var("FORGE_JWKS_URL"), var("FORGE_JWKS_FILE")) {
            (Some(_), Some(_)) => {
                return Err(AuthSetupError::Config(
                    "set FORGE_JWKS_URL or FORGE_JWKS_FILE, not both".into(),
                ));
            }
            (Some(url), None) => Some(JwksSource::Url(url)),
            (None, Some(file)) => Some(JwksSource::File(file.into())),
            (None, None) => None,
        };
        let jwks = match source {
            None => None,
            Some(source) => Some(JwksConfig {
                ttl: secs("FORGE_JWKS_TTL_SECS", 300)?,
                min_refresh_interval: secs("FORGE_JWKS_REFRESH_MIN_SECS", 30)?,
                ..JwksConfig::new(source)
            }),
        };
        let local = match var("FORGE_AUTH_LOCAL_HS256").as_deref() {
            None => jwks.is_none(),
            Some("true" | "1" | "yes" | "on") => true,
            Some("false" | "0" | "no" | "off") => false,
            Some(other) => {
                return Err(AuthSetupError::Config(format!(
                    "FORGE_AUTH_LOCAL_HS256 must be true or false, got `{other}`"
                )));
            }
        };
        Ok(Self {
            issuer: var("FORGE_JWT_ISSUER").unwrap_or_else(|| DEFAULT_ISSUER.to_owned()),
            audience: var("FORGE_JWT_AUDIENCE").unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned()),
            leeway: DEFAULT_LEEWAY,
            hs256_secret: if local {
                Some(load_or_create_hs256_secret(data_dir)?)
            } else {
                None
            },
            jwks,
        })
    }
}
