//! The axum extractor: any handler that takes a [`Caller`] is authenticated.
//!
//! The verifier travels as a request extension, added once per router with
//! `.layer(axum::Extension(verifier))`, so services need no state plumbing for it and every
//! router of a process can share one verifier (and its JWKS cache).
//!
//! A layer in front of the handlers (the lifecycle services' per-tenant rate limit) may have
//! verified the token already; it leaves the outcome as an [`Authenticated`] extension and the
//! extractor uses that instead of verifying the same token twice.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::{AuthError, Caller, Verifier};

/// The outcome of verifying a request's `Authorization` header, left in the request's
/// extensions by whoever verified it first (a middleware). Only server code can put it there,
/// so the [`Caller`] extractor trusts it.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Result<Caller, AuthError>);

impl Authenticated {
    /// Verifies `parts`' `Authorization` header with `verifier`.
    pub async fn verify(verifier: &Verifier, parts: &Parts) -> Self {
        Self(authenticate(verifier, parts).await)
    }
}

async fn authenticate(verifier: &Verifier, parts: &Parts) -> Result<Caller, AuthError> {
    let header =
        match parts.headers.get(AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| {
                AuthError::MalformedHeader("the header is not visible ASCII".into())
            })?),
        };
    verifier.authenticate(header).await
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(Authenticated(done)) = parts.extensions.get::<Authenticated>() {
            return done.clone();
        }
        let Some(verifier) = parts.extensions.get::<Arc<Verifier>>().cloned() else {
            tracing::error!(path = %parts.uri.path(), "route takes a caller but its router has no verifier layer");
            return Err(AuthError::KeysUnavailable(
                "this service has no token verifier configured".into(),
            ));
        };
        authenticate(&verifier, parts).await
    }
}
