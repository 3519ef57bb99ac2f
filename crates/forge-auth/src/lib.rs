//! Bearer-token authentication of FrostGate Forge (spec: Tenant Boundaries and Claims).
//!
//! - **Local** deployments sign HS256 tokens with a secret generated into the data dir
//!   (`<data_dir>/auth/hs256.secret`, mode 0600); [`LocalIssuer`] issues them (`forge token
//!   mint`).
//! - **Production** deployments verify RS256/EdDSA tokens of their identity provider against a
//!   JWKS document (file or URL), cached and looked up by `kid` ([`JwksConfig`]).
//!
//! [`AuthSettings`] are a deployment's choices; the library never reads the environment.
//!
//! Every token must carry `exp`, `iss`, `aud`, `sub`; `exp`/`nbf` are checked with a small
//! leeway. `alg: none`, any algorithm the deployment has no key family for (HS256 when only a
//! JWKS is configured and vice versa: the HS/RS confusion attack), unknown `kid`s and bad
//! signatures are refused. Failures are 401; a valid token without a tenant or without the
//! required role is 403 ([`AuthError::status`]).
//!
//! Services take a [`Caller`] in their handlers (an axum extractor reading an
//! `Arc<Verifier>` from a request extension the router adds).

mod claims;
mod config;
mod error;
mod extract;
mod jwks;
mod mint;
mod secret;
mod verifier;

pub use claims::{Caller, Claims};
pub use config::{
    AuthConfig, AuthSettings, DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_LEEWAY, JwksConfig,
    JwksSource,
};
pub use error::{AuthError, AuthSetupError};
pub use extract::Authenticated;
pub use mint::{LocalIssuer, parse_ttl};
pub use secret::{SECRET_FILE, load_or_create_hs256_secret, secret_path};
pub use verifier::Verifier;

/// The one table of role names (spec: Tenant Boundaries and Claims, plus ours). Every role
/// is scoped to the token's tenant.
pub mod roles {
    /// May spawn labs (`POST /v1/spawn`).
    pub const SPAWN: &str = "forge.spawn";
    /// The platform itself and operators' automation: create scenarios directly, and act on
    /// any lab of the tenant.
    pub const ORCHESTRATOR: &str = "forge.orchestrator";
    /// A learner's score role (the spec's): reads the scores and bundles of the caller's own
    /// scenarios only. The owner of a scenario reads its score with or without it; tenant-wide
    /// reading is [`SCORE_READ_ALL`], an instructor or the orchestrator role.
    pub const SCORE_READ: &str = "forge.score.read";
    /// Reads every score and bundle of the tenant without operating any lab (an auditor, a
    /// reporting integration).
    pub const SCORE_READ_ALL: &str = "forge.score.read_all";
    /// A tenant's instructors: check, submit, exec, open terminals and run playbooks in any lab
    /// of the tenant.
    pub const INSTRUCTOR: &str = "forge.instructor";
    /// Operators who read telemetry and fairness statistics.
    pub const OBSERVER: &str = "forge.observer";
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
