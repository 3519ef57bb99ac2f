//! The axum extractor: any handler that takes a [`Caller`] is authenticated.
//!
//! The verifier travels as a request extension, added once per router with
//! `.layer(axum::Extension(verifier))`, so services need no state plumbing for it and every
//! router of a process can share one verifier (and its JWKS cache).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::{AuthError, Caller, Verifier};

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(verifier) = parts.extensions.get::<Arc<Verifier>>().cloned() else {
            tracing::error!(path = %parts.uri.path(), "route takes a caller but its router has no verifier layer");
            return Err(AuthError::KeysUnavailable(
                "this service has no token verifier configured".into(),
            ));
        };
        let header = match parts.headers.get(AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| {
                AuthError::MalformedHeader("the header is not visible ASCII".into())
            })?),
        };
        verifier.authenticate(header).await
    }
}
