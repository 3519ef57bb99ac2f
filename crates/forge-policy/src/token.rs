//! The bearer token a [`crate::RemoteEngine`] sends: the Data API of `forge serve opa` (and
//! the platform's :8181) answers only callers it can authenticate (`server::QUERY_ROLES`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use forge_auth::{LocalIssuer, roles};

/// Where a remote engine's bearer token comes from.
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A token for the next request, or why there is none.
    fn token(&self) -> Result<String, String>;
}

/// One token, as configured (`OPA_TOKEN`): the operator's, from their identity provider or
/// `forge token mint`, renewed by the operator.
pub struct StaticToken(String);

impl StaticToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

impl TokenSource for StaticToken {
    fn token(&self) -> Result<String, String> {
        Ok(self.0.clone())
    }
}

/// Short-lived tokens the process signs itself with the data dir's HS256 secret, which every
/// process of a platform shares: the platform's own identity towards its policy endpoint, with
/// nothing to configure or rotate. Each token is good for [`MintedToken::TTL`] and replaced
/// when half of that has passed.
pub struct MintedToken {
    issuer: LocalIssuer,
    sub: String,
    cached: Mutex<Option<(String, Instant)>>,
}

impl MintedToken {
    /// How long one minted token is valid.
    pub const TTL: Duration = Duration::from_secs(600);
    /// The tenant claim of the platform's own tokens: no tenant's, so they reach no tenant's
    /// scenarios anywhere else.
    pub const TENANT: &'static str = "forge-platform";

    /// Tokens for `sub` (the process, e.g. `forge_orchestrator`) with the orchestrator role,
    /// which the role table gives "the platform itself".
    pub fn new(issuer: LocalIssuer, sub: impl Into<String>) -> Self {
        Self {
            issuer,
            sub: sub.into(),
            cached: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("sub", &self.sub)
            .finish_non_exhaustive()
    }
}

impl TokenSource for MintedToken {
    fn token(&self) -> Result<String, String> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, minted)) = cached.as_ref()
            && minted.elapsed() < Self::TTL / 2
        {
            return Ok(token.clone());
        }
        let token = self
            .issuer
            .mint(
                Self::TENANT,
                &[roles::ORCHESTRATOR.to_owned()],
                &self.sub,
                Self::TTL,
            )
            .map_err(|e| e.to_string())?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn minted_tokens_verify_and_are_reused() {
        let secret = [7u8; 32];
        let source = MintedToken::new(
            LocalIssuer::from_secret(&secret, "forge-local", "forge"),
            "forge_orchestrator",
        );
        let first = source.token().unwrap();
        assert_eq!(
            source.token().unwrap(),
            first,
            "reused within its half-life"
        );
        let verifier = forge_auth::Verifier::new(&forge_auth::AuthConfig {
            issuer: "forge-local".into(),
            audience: "forge".into(),
            leeway: Duration::from_secs(30),
            hs256_secret: Some(secret.to_vec()),
            jwks: None,
        });
        let caller = verifier
            .authenticate(Some(&format!("Bearer {first}")))
            .await
            .unwrap();
        assert_eq!(caller.sub, "forge_orchestrator");
        assert_eq!(caller.tenant_id, MintedToken::TENANT);
        assert!(caller.has_role(roles::ORCHESTRATOR));
        assert!(!format!("{source:?}").contains(&first));
        assert_eq!(
            format!("{:?}", StaticToken::new("x")),
            "StaticToken(<redacted>)"
        );
    }
}
