//! Why a request is not authenticated (401) or not authorised (403), answered through
//! [`forge_http::ApiError`] like every other error of a Forge API.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use forge_http::{ApiError, Kind};

/// A request's credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("an `Authorization: Bearer <token>` header is required")]
    MissingToken,
    #[error("malformed authorization header: {0}")]
    MalformedHeader(String),
    #[error("token is not a well-formed JWT: {0}")]
    MalformedToken(String),
    #[error("token algorithm {0} is not accepted: {1}")]
    UnsupportedAlgorithm(String, String),
    #[error("token has no `kid` header; tokens verified against the JWKS must name their key")]
    MissingKeyId,
    #[error("token key id `{0}` is not in the JWKS")]
    UnknownKey(String),
    #[error("token algorithm {alg} does not match key `{kid}` ({expected})")]
    AlgorithmMismatch {
        alg: String,
        kid: String,
        expected: String,
    },
    #[error("token signature is invalid")]
    InvalidSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("token issuer is not `{0}`")]
    InvalidIssuer(String),
    #[error("token audience does not include `{0}`")]
    InvalidAudience(String),
    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
    #[error("token has no `tenant_id` claim; every call must be bound to one tenant")]
    MissingTenant,
    #[error("token roles do not include `{0}`")]
    MissingRole(String),
    #[error("signing keys are unavailable: {0}")]
    KeysUnavailable(String),
}

impl AuthError {
    /// 401 for anything wrong with the token, 403 for a valid token that may not do this,
    /// 502 when the identity provider's keys cannot be fetched.
    pub fn kind(&self) -> Kind {
        match self {
            Self::MissingTenant | Self::MissingRole(_) => Kind::Forbidden,
            Self::KeysUnavailable(_) => Kind::BadGateway,
            _ => Kind::Unauthorized,
        }
    }

    /// The status of [`AuthError::kind`].
    pub fn status(&self) -> StatusCode {
        self.kind().status()
    }

    /// Stable machine-readable code for the error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedHeader(_) => "malformed_authorization",
            Self::MalformedToken(_) => "malformed_token",
            Self::UnsupportedAlgorithm(..) => "unsupported_algorithm",
            Self::MissingKeyId => "missing_kid",
            Self::UnknownKey(_) => "unknown_kid",
            Self::AlgorithmMismatch { .. } => "algorithm_mismatch",
            Self::InvalidSignature => "invalid_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::InvalidIssuer(_) => "invalid_issuer",
            Self::InvalidAudience(_) => "invalid_audience",
            Self::InvalidClaims(_) => "invalid_claims",
            Self::MissingTenant => "missing_tenant",
            Self::MissingRole(_) => "missing_role",
            Self::KeysUnavailable(_) => "jwks_unavailable",
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let kind = e.kind();
        let message = e.to_string();
        let mut api = ApiError::new(kind, e.code(), message.as_str());
        if kind == Kind::Unauthorized {
            // RFC 6750 §3: tell the client which scheme and why, without echoing the token.
            let challenge = if matches!(e, AuthError::MissingToken) {
                "Bearer realm=\"forge\"".to_owned()
            } else {
                format!(
                    "Bearer realm=\"forge\", error=\"invalid_token\", error_description=\"{}\"",
                    message.replace(['"', '\\'], "'")
                )
            };
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                api = api.with_header(header::WWW_AUTHENTICATE, v);
            }
        }
        api
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// Setting up authentication failed (unreadable secret, bad JWKS configuration).
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("cannot use the HS256 secret {path}: {reason}")]
    Secret { path: String, reason: String },
    #[error("invalid auth configuration: {0}")]
    Config(String),
    #[error("cannot sign token: {0}")]
    Sign(String),
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use serde_json::{Value, json};

    use super::*;

    async fn answer(e: AuthError) -> (StatusCode, Option<String>, Value) {
        let resp = e.into_response();
        let status = resp.status();
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, challenge, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn rejections_are_envelopes_with_a_bearer_challenge_on_401() {
        let (status, challenge, body) = answer(AuthError::MissingToken).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(challenge.as_deref(), Some("Bearer realm=\"forge\""));
        assert_eq!(
            body,
            json!({"error": {
                "code": "missing_token",
                "message": "an `Authorization: Bearer <token>` header is required",
                "details": {},
            }})
        );

        let (status, challenge, body) =
            answer(AuthError::MalformedToken("bad \"part\"".into())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            challenge.as_deref(),
            Some(
                "Bearer realm=\"forge\", error=\"invalid_token\", error_description=\"token is \
                 not a well-formed JWT: bad 'part'\""
            )
        );
        assert_eq!(body["error"]["code"], "malformed_token");

        let (status, challenge, body) = answer(AuthError::MissingRole("forge.spawn".into())).await;
        assert_eq!((status, challenge), (StatusCode::FORBIDDEN, None));
        assert_eq!(body["error"]["code"], "missing_role");

        let (status, challenge, _) = answer(AuthError::KeysUnavailable("down".into())).await;
        assert_eq!((status, challenge), (StatusCode::BAD_GATEWAY, None));
    }

    #[test]
    fn api_error_keeps_status_code_and_message() {
        let e = ApiError::from(AuthError::Expired);
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(e.code(), "token_expired");
        assert_eq!(e.message(), "token has expired");
        assert!(e.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
