//! Why a request is not authenticated (401) or not authorised (403), and the JSON error
//! envelope every Forge service answers with.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

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
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingTenant | Self::MissingRole(_) => StatusCode::FORBIDDEN,
            Self::KeysUnavailable(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::UNAUTHORIZED,
        }
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

/// The one JSON error envelope of every Forge HTTP API:
/// `{"error": {"code": "...", "message": "...", "details": {...}}}`.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    details: serde_json::Value,
) -> Response {
    let body = serde_json::json!({
        "error": { "code": code, "message": message, "details": details }
    });
    (status, Json(body)).into_response()
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let mut resp = error_response(status, self.code(), &message, serde_json::json!({}));
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: tell the client which scheme and why, without echoing the token.
            let error = if matches!(self, Self::MissingToken) {
                "Bearer realm=\"forge\"".to_owned()
            } else {
                format!(
                    "Bearer realm=\"forge\", error=\"invalid_token\", error_description=\"{}\"",
                    message.replace(['"', '\\'], "'")
                )
            };
            if let Ok(v) = HeaderValue::from_str(&error) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
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
