//! Bearer-token authentication of FrostGate Forge (spec: Tenant Boundaries and Claims).
//!
//! - **Local** deployments sign HS256 tokens with a secret generated into the data dir
//!   (`<data_dir>/auth/hs256.secret`, mode 0600); `forge token mint` issues them
//!   ([`LocalIssuer`], [`cli`]).
//! - **Production** deployments verify RS256/EdDSA tokens of their identity provider against a
//!   JWKS document (file or URL), cached and looked up by `kid` ([`JwksConfig`]).
//!
//! Every token must carry `exp`, `iss`, `aud`, `sub`; `exp`/`nbf` are checked with a small
//! leeway. `alg: none`, any algorithm the deployment has no key family for (HS256 when only a
//! JWKS is configured and vice versa: the HS/RS confusion attack), unknown `kid`s and bad
//! signatures are refused. Failures are 401; a valid token without a tenant or without the
//! required role is 403 ([`AuthError::status`]).
//!
//! Services take a [`Caller`] in their handlers (an axum extractor reading an
//! `Arc<Verifier>` from the router state through `FromRef`).

mod claims;
pub mod cli;
mod config;
mod error;
mod extract;
mod jwks;
mod mint;
mod secret;
mod verifier;

use std::path::PathBuf;

pub use claims::{Caller, Claims};
pub use config::{
    AuthConfig, DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_LEEWAY, JwksConfig, JwksSource,
};
pub use error::{AuthError, AuthSetupError, error_response};
pub use mint::{LocalIssuer, parse_ttl};
pub use secret::{SECRET_FILE, load_or_create_hs256_secret, secret_path};
pub use verifier::Verifier;

/// Role names the services require (spec: Tenant Boundaries and Claims).
pub mod roles {
    pub const SPAWN: &str = "forge.spawn";
    pub const ORCHESTRATOR: &str = "forge.orchestrator";
    pub const SCORE_READ: &str = "forge.score.read";
}

/// Installs aws-lc-rs as rustls' process-wide crypto provider, once; later calls (and a
/// provider someone else installed first) are fine. Call it at process start, before any
/// HTTPS client (JWKS, OPA, billing gateway) is built.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only means another provider is already installed, which is what we want anyway.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// `$FORGE_DATA_DIR` is read by clap; this is the fallback: `$HOME/.local/share/forge`, or
/// `.forge-data` in the working directory when there is no home (same as forge-evidence).
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/share/forge"),
        _ => PathBuf::from(".forge-data"),
    }
}
