//! How a deployment verifies tokens: [`AuthSettings`] are its choices (issuer, audience, JWKS,
//! whether local HS256 tokens count), [`AuthConfig`] those choices with the keys loaded. Nothing
//! here reads the environment; the `forge` binary builds the settings from its flags and
//! variables (README.md, Configuration).

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
        AuthSettings::default().resolve(data_dir)
    }
}

/// A deployment's choices, before any key is loaded; [`AuthSettings::resolve`] loads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of).
    pub audience: String,
    /// The identity provider's keys (RS256/EdDSA tokens).
    pub jwks: Option<JwksConfig>,
    /// Accept tokens signed with the data dir's HS256 secret; `None` accepts them only when no
    /// JWKS is configured.
    pub local_hs256: Option<bool>,
}

impl Default for AuthSettings {
    /// Local mode: default issuer and audience, no JWKS, the data dir's HS256 secret.
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            jwks: None,
            local_hs256: None,
        }
    }
}

impl AuthSettings {
    /// Whether local HS256 tokens are accepted: as asked, else only without a JWKS.
    pub fn accepts_local_tokens(&self) -> bool {
        self.local_hs256.unwrap_or(self.jwks.is_none())
    }

    /// The verifier configuration: loads (creating it on first use) the HS256 secret in
    /// `data_dir` when local tokens are accepted.
    pub fn resolve(self, data_dir: &Path) -> Result<AuthConfig, AuthSetupError> {
        let hs256_secret = if self.accepts_local_tokens() {
            Some(load_or_create_hs256_secret(data_dir)?)
        } else {
            None
        };
        Ok(AuthConfig {
            issuer: self.issuer,
            audience: self.audience,
            leeway: DEFAULT_LEEWAY,
            hs256_secret,
            jwks: self.jwks,
        })
    }
}
