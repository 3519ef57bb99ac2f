//! Who may call the platform: the expected issuer and audience, the identity provider's JWKS,
//! and whether the data dir's HS256 tokens count (docs/spawn-api.md, Authentication).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use clap::builder::BoolishValueParser;
use forge_auth::{AuthSettings, DEFAULT_AUDIENCE, DEFAULT_ISSUER, JwksConfig, JwksSource};

/// The `iss` and `aud` of tokens: what `forge up` requires and what `forge token mint` writes.
#[derive(Args, Debug, Clone)]
pub struct ClaimArgs {
    /// Token issuer (`iss`) the services require and minted tokens carry
    #[arg(long, env = "FORGE_JWT_ISSUER", default_value = DEFAULT_ISSUER, value_name = "ISS")]
    pub issuer: String,
    /// Token audience (`aud`) the services require and minted tokens carry
    #[arg(long, env = "FORGE_JWT_AUDIENCE", default_value = DEFAULT_AUDIENCE, value_name = "AUD")]
    pub audience: String,
}

/// How the services verify bearer tokens.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Authentication")]
pub struct AuthArgs {
    #[command(flatten)]
    pub claims: ClaimArgs,
    /// JWKS of the identity provider (RS256/EdDSA tokens)
    #[arg(long, env = "FORGE_JWKS_URL", value_name = "URL")]
    pub jwks_url: Option<String>,
    /// The identity provider's JWKS from a file instead of a URL
    #[arg(long, env = "FORGE_JWKS_FILE", value_name = "FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Seconds fetched keys are trusted before a refetch
    #[arg(
        long,
        env = "FORGE_JWKS_TTL_SECS",
        default_value_t = 300,
        value_name = "SECS"
    )]
    pub jwks_ttl_secs: u64,
    /// At most one refetch per this many seconds on an unknown `kid`
    #[arg(
        long,
        env = "FORGE_JWKS_REFRESH_MIN_SECS",
        default_value_t = 30,
        value_name = "SECS"
    )]
    pub jwks_refresh_min_secs: u64,
    /// Accept tokens signed with the data dir's HS256 secret [default: true without a JWKS,
    /// else false]
    #[arg(
        long,
        env = "FORGE_AUTH_LOCAL_HS256",
        value_name = "BOOL",
        value_parser = BoolishValueParser::new()
    )]
    pub auth_local_hs256: Option<bool>,
}

impl AuthArgs {
    /// The settings the platform verifies tokens with; errors name the variable at fault.
    pub fn settings(&self) -> anyhow::Result<AuthSettings> {
        let source = match (&self.jwks_url, &self.jwks_file) {
            (Some(_), Some(_)) => bail!(
                "FORGE_JWKS_URL (--jwks-url) and FORGE_JWKS_FILE (--jwks-file) are both set; \
                 set one of them"
            ),
            (Some(url), None) => {
                super::require_http_url("FORGE_JWKS_URL (--jwks-url)", url)?;
                Some(JwksSource::Url(url.clone()))
            }
            (None, Some(file)) => Some(JwksSource::File(file.clone())),
            (None, None) => None,
        };
        for (name, secs) in [
            ("FORGE_JWKS_TTL_SECS (--jwks-ttl-secs)", self.jwks_ttl_secs),
            (
                "FORGE_JWKS_REFRESH_MIN_SECS (--jwks-refresh-min-secs)",
                self.jwks_refresh_min_secs,
            ),
        ] {
            if secs == 0 {
                bail!("{name} must be at least 1 second");
            }
        }
        let jwks = source.map(|source| JwksConfig {
            ttl: Duration::from_secs(self.jwks_ttl_secs),
            min_refresh_interval: Duration::from_secs(self.jwks_refresh_min_secs),
            ..JwksConfig::new(source)
        });
        let settings = AuthSettings {
            issuer: self.claims.issuer.clone(),
            audience: self.claims.audience.clone(),
            jwks,
            local_hs256: self.auth_local_hs256,
        };
        if settings.jwks.is_none() && !settings.accepts_local_tokens() {
            bail!(
                "FORGE_AUTH_LOCAL_HS256 (--auth-local-hs256) is false and no JWKS is set \
                 (FORGE_JWKS_URL or FORGE_JWKS_FILE): no token could ever be accepted"
            );
        }
        Ok(settings)
    }
}
