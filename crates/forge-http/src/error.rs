//! The one error type of every Forge HTTP API, its status mapping and the error envelope.
//!
//! Every error leaves as `{"error": {"code", "message", "details"}}` ([`error_response`]), except
//! on the OPA-compatible endpoint, which answers OPA's own `{"code", "message"}`
//! ([`ApiError::into_opa_response`]); the status comes from [`Kind::status`] either way. Messages
//! are lowercase, say what is wrong, and never carry internals: a 500 says "internal error" and
//! the cause goes to the log.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Error classes; [`Kind::status`] is the single status mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    TooManyRequests,
    Internal,
    BadGateway,
    ServiceUnavailable,
}

impl Kind {
    pub fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::BadGateway => StatusCode::BAD_GATEWAY,
            Kind::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error response (boxed: it travels in every handler's `Result`).
#[derive(Debug)]
pub struct ApiError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    kind: Kind,
    code: Cow<'static, str>,
    message: String,
    details: Value,
    headers: HeaderMap,
}

impl ApiError {
    pub fn new(kind: Kind, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            kind,
            code: code.into(),
            message: message.into(),
            details: json!({}),
            headers: HeaderMap::new(),
        }))
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Unprocessable, code, message)
    }

    /// 429 with `Retry-After` in whole seconds (at least 1), also in `details`.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let secs = retry_after_secs.max(1);
        Self::new(Kind::TooManyRequests, "rate_limited", message)
            .with_details(json!({ "retry_after_seconds": secs }))
            .with_retry_after(secs)
    }

    /// A real fault: logged with its cause, answered without it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            Kind::Internal,
            "internal",
            "internal error; see the service log",
        )
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.0.details = details;
        self
    }

    /// Adds a response header (`WWW-Authenticate` of an auth rejection, for instance); a later
    /// value for the same name replaces the earlier one.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.insert(name, value);
        self
    }

    /// `Retry-After` in whole seconds (at least 1).
    pub fn with_retry_after(self, secs: u64) -> Self {
        self.with_header(header::RETRY_AFTER, HeaderValue::from(secs.max(1)))
    }

    pub fn kind(&self) -> Kind {
        self.0.kind
    }

    pub fn status(&self) -> StatusCode {
        self.0.kind.status()
    }

    pub fn code(&self) -> &str {
        &self.0.code
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn details(&self) -> &Value {
        &self.0.details
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// The error in OPA's own shape, `{"code", "message"}` (no `details`), for the OPA Data API
    /// of `forge serve opa`; status and headers as in [`IntoResponse`].
    pub fn into_opa_response(self) -> Response {
        let e = *self.0;
        let body = json!({ "code": e.code, "message": e.message });
        (e.kind.status(), e.headers, Json(body)).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status().as_u16(),
            self.0.code,
            self.0.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = *self.0;
        let mut resp = error_response(e.kind.status(), &e.code, &e.message, e.details);
        resp.headers_mut().extend(e.headers);
        resp
    }
}

/// The error envelope of every Forge API (its OpenAPI schema; [`error_response`] writes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `rate_limited`, `policy_denied`.
    pub code: String,
    /// What is wrong, for humans.
    pub message: String,
    /// Structured extras: `deny_reasons`, `supported_tracks`, `retry_after_seconds`, ...
    #[schema(value_type = Object)]
    pub details: Value,
}

/// Writes the one JSON error envelope of every Forge HTTP API:
/// `{"error": {"code": "...", "message": "...", "details": {...}}}`.
pub fn error_response(status: StatusCode, code: &str, message: &str, details: Value) -> Response {
    let body = json!({
        "error": { "code": code, "message": message, "details": details }
    });
    (status, Json(body)).into_response()
}

/// Middleware of [`crate::finish`]: a 4xx that an axum extractor wrote as plain text (a query
/// string or path parameter that does not parse, …) leaves in the error envelope, its text as
/// the message, so every error of a route has the one documented shape.
pub(crate) async fn plain_rejections(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    rewrite_plain_rejection(next.run(req).await, |status, message| {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            _ => "invalid_request",
        };
        error_response(status, code, &message, json!({}))
    })
    .await
}

/// [`plain_rejections`] in OPA's error shape, with OPA's code for a bad request.
pub(crate) async fn opa_plain_rejections(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    rewrite_plain_rejection(next.run(req).await, |status, message| {
        let body = json!({ "code": "invalid_parameter", "message": message });
        (status, Json(body)).into_response()
    })
    .await
}

/// Longest plain-text rejection that is rewritten (axum's are a line).
const MAX_REJECTION_TEXT: usize = 16 * 1024;

async fn rewrite_plain_rejection(
    resp: Response,
    answer: impl FnOnce(StatusCode, String) -> Response,
) -> Response {
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/plain"));
    if !resp.status().is_client_error() || !plain {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REJECTION_TEXT).await else {
        return answer(parts.status, "the request was refused".into());
    };
    let message = String::from_utf8_lossy(&bytes).trim().to_owned();
    let mut out = answer(parts.status, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name, value.clone());
        }
    }
    out
}

/// Fallback for unknown paths.
pub(crate) async fn not_found_fallback(uri: Uri) -> ApiError {
    ApiError::not_found("not_found", format!("no route for {}", uri.path()))
}

/// Fallback for known paths with the wrong method.
pub(crate) async fn method_not_allowed_fallback(method: Method) -> ApiError {
    ApiError::new(
        Kind::MethodNotAllowed,
        "method_not_allowed",
        format!("method {method} is not allowed here"),
    )
}

/// [`not_found_fallback`] in OPA's error shape, with OPA's code.
pub(crate) async fn opa_not_found_fallback(uri: Uri) -> Response {
    ApiError::not_found("resource_not_found", format!("no route for {}", uri.path()))
        .into_opa_response()
}

/// [`method_not_allowed_fallback`] in OPA's error shape.
pub(crate) async fn opa_method_not_allowed_fallback(method: Method) -> Response {
    method_not_allowed_fallback(method)
        .await
        .into_opa_response()
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    async fn parts(resp: Response) -> (StatusCode, HeaderMap, Value) {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn envelope_carries_code_message_details_and_headers() {
        let e = ApiError::forbidden("policy_denied", "the spawn gate denied this request")
            .with_details(json!({ "deny_reasons": ["quota"] }))
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        assert_eq!(
            e.to_string(),
            "403 policy_denied: the spawn gate denied this request"
        );
        let (status, headers, body) = parts(e.into_response()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body,
            json!({"error": {
                "code": "policy_denied",
                "message": "the spawn gate denied this request",
                "details": {"deny_reasons": ["quota"]},
            }})
        );
    }

    #[tokio::test]
    async fn rate_limits_say_when_to_retry() {
        let (status, headers, body) =
            parts(ApiError::too_many_requests("slow down", 0).into_response()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(body["error"]["details"]["retry_after_seconds"], 1);
        assert_eq!(body["error"]["code"], "rate_limited");
    }

    #[tokio::test]
    async fn internal_errors_hide_the_cause() {
        let e = ApiError::internal("disk on fire at /var/lib/forge");
        assert_eq!(e.kind(), Kind::Internal);
        let (status, _, body) = parts(e.into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("disk"), "{body}");
    }

    #[tokio::test]
    async fn opa_shape_has_no_envelope_and_the_same_status() {
        let e = ApiError::bad_request("invalid_parameter", "input must be an object")
            .with_details(json!({ "ignored": true }))
            .with_retry_after(3);
        let (status, headers, body) = parts(e.into_opa_response()).await;
        assert_eq!(status, Kind::BadRequest.status());
        assert_eq!(headers[header::RETRY_AFTER], "3");
        assert_eq!(
            body,
            json!({"code": "invalid_parameter", "message": "input must be an object"})
        );
    }

    #[test]
    fn the_envelope_schema_matches_what_is_written() {
        let body: ErrorEnvelope = serde_json::from_value(json!({
            "error": {"code": "x", "message": "y", "details": {}}
        }))
        .unwrap();
        assert_eq!(body.error.code, "x");
    }
}
