//! Request ids: every request gets one, taken from its `x-request-id` header or generated (UUID
//! v4) when the header is absent, not visible ASCII or longer than [`MAX_REQUEST_ID_LEN`]. The id
//! goes on the response's `x-request-id` header, into the request's extensions as [`RequestId`],
//! and on the request's tracing span, so every log line of the request carries it.
//!
//! The request's own headers are left as they came: the spawn service reads `x-request-id` as its
//! idempotency key (docs/design.md §7.9), and a generated id must not become one.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header that carries the request id, both ways.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-chosen id that is kept (the spawn API's longest idempotency key).
pub const MAX_REQUEST_ID_LEN: usize = 255;

/// The id of the request being handled, in its extensions (`Extension<RequestId>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The client's id when it is usable, else a new UUID v4.
fn request_id(headers: &HeaderMap) -> (RequestId, HeaderValue) {
    if let Some(value) = headers.get(REQUEST_ID_HEADER) {
        let bytes = value.as_bytes();
        if !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes.iter().all(u8::is_ascii_graphic)
        {
            // Visible ASCII only, so the bytes are UTF-8.
            let id = String::from_utf8_lossy(bytes).into_owned();
            return (RequestId(id), value.clone());
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let value = HeaderValue::from_str(&id).expect("a uuid is a valid header value");
    (RequestId(id), value)
}

/// The middleware [`crate::finish`] applies to every route and fallback.
pub(crate) async fn layer(mut req: Request, next: Next) -> Response {
    let (id, value) = request_id(req.headers());
    // `request_id` is the id of the work the request belongs to: this request's own, until a
    // scenario route learns the scenario's (its spawn's request id, recorded by the access
    // check), so one spawn can be followed through every service. `http_request_id` stays this
    // request's.
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %id,
        http_request_id = %id,
        scenario_id = tracing::field::Empty,
        tenant_id = tracing::field::Empty,
    );
    req.extensions_mut().insert(id);
    let started = std::time::Instant::now();
    let probe = matches!(req.uri().path(), "/health" | "/ready" | "/metrics");
    let mut resp = next.run(req).instrument(span.clone()).await;
    // The access log: one line a request, in its span (probes only at debug level).
    span.in_scope(|| {
        let (status, ms) = (resp.status().as_u16(), started.elapsed().as_millis() as u64);
        if probe {
            tracing::debug!(status, duration_ms = ms, "request");
        } else {
            tracing::info!(status, duration_ms = ms, "request");
        }
    });
    resp.headers_mut().insert(REQUEST_ID_HEADER, value);
    resp
}

#[cfg(test)]
mod tests {

    use axum::body::{Body, to_bytes};
    use axum::routing::get;
    use axum::{Extension, Router};
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        let routes = Router::new().route(
            "/id",
            get(|Extension(id): Extension<RequestId>| async move {
                tracing::info!("handling");
                id.to_string()
            }),
        );
        crate::finish(routes, crate::DEFAULT_BODY_LIMIT)
    }

    async fn call(path: &str, header: Option<HeaderValue>) -> (Option<String>, String) {
        let mut req = Request::get(path);
        if let Some(v) = header {
            req = req.header(REQUEST_ID_HEADER, v);
        }
        let resp = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let echoed = resp
            .headers()
            .get(REQUEST_ID_HEADER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (echoed, String::from_utf8(body.to_vec()).unwrap())
    }

    fn is_uuid_v4(s: &str) -> bool {
        uuid::Uuid::parse_str(s).is_ok_and(|u| u.get_version_num() == 4)
    }

    #[tokio::test]
    async fn a_usable_client_id_is_kept_and_echoed() {
        let (echoed, seen) = call("/id", Some(HeaderValue::from_static("req-abc.123"))).await;
        assert_eq!(echoed.as_deref(), Some("req-abc.123"));
        assert_eq!(seen, "req-abc.123");
    }

    #[tokio::test]
    async fn missing_or_unusable_ids_are_replaced_by_a_uuid() {
        let long = HeaderValue::from_str(&"a".repeat(MAX_REQUEST_ID_LEN + 1)).unwrap();
        for header in [
            None,
            Some(HeaderValue::from_static("")),
            Some(HeaderValue::from_static("has space")),
            Some(HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()),
            Some(long),
        ] {
            let (echoed, seen) = call("/id", header.clone()).await;
            let echoed = echoed.unwrap();
            assert!(is_uuid_v4(&echoed), "{header:?} -> {echoed}");
            assert_eq!(seen, echoed, "the handler sees the id the client gets");
        }
        let longest = "b".repeat(MAX_REQUEST_ID_LEN);
        let (echoed, _) = call("/id", Some(HeaderValue::from_str(&longest).unwrap())).await;
        assert_eq!(echoed.unwrap(), longest);
    }

    #[tokio::test]
    async fn fallback_answers_carry_the_id_too() {
        let (echoed, body) = call("/nowhere", Some(HeaderValue::from_static("r-404"))).await;
        assert_eq!(echoed.as_deref(), Some("r-404"));
        assert!(body.contains("not_found"), "{body}");
    }
}
