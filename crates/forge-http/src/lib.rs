//! The HTTP plumbing every FrostGate Forge service shares, below the services themselves:
//!
//! - [`ApiError`] and [`Kind`]: the one error type and the one status mapping
//!   ([`Kind::status`]), written as the envelope `{"error": {"code", "message", "details"}}`
//!   ([`error_response`]) or, on the OPA-compatible endpoint, as OPA's `{"code", "message"}`;
//! - [`ApiJson`] / [`parse_json`]: JSON bodies whose every flaw is a 4xx naming the problem;
//! - [`common_routes`]: `/health`, `/ready`, `/metrics`, `/openapi.json`; [`metrics_handle`];
//!   [`openapi`]: edits of a document for what the derive cannot say (enums known at start-up,
//!   closed variants of tagged enums);
//! - [`Readiness`]: the named dependency checks behind a service's `/ready` (liveness stays
//!   `/health`), run concurrently, bounded and cached;
//! - [`finish`] / [`finish_opa`]: body limit, JSON 404/405 fallbacks and request ids
//!   ([`RequestId`]) on a service's router;
//! - [`Service`]: the registry of services, their names and default ports;
//! - [`serve`]: the one way a service serves its router, with graceful shutdown.
//!
//! Invariant: an HTTP API never answers 500 to a bad request; status codes are mapped in one
//! place.

mod error;
mod json;
pub mod openapi;
mod ready;
mod request_id;
mod routes;
mod service;

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;

pub use error::{ApiError, ErrorBody, ErrorEnvelope, Kind, error_response};
pub use json::{ApiJson, parse_json};
pub use ready::{CACHE_FOR, CHECK_OK, CHECK_TIMEOUT, NOT_READY, Readiness, ReadyReport};
pub use request_id::{MAX_REQUEST_ID_LEN, REQUEST_ID_HEADER, RequestId};
pub use routes::{Health, common_routes, metrics_handle, with_common_docs};
pub use service::{Service, UnknownService};

/// Body limit of JSON APIs unless a service sets its own: spawn requests are tiny.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Applies what every service router needs last: the body limit (rejections flow through
/// [`ApiJson`] as JSON 413s), JSON 404/405 fallbacks in the error envelope, request ids, and
/// the envelope around any 4xx an extractor wrote as plain text (a query string that does not
/// parse, for instance).
pub fn finish(router: Router, body_limit: usize) -> Router {
    finish_with(
        router,
        body_limit,
        error::not_found_fallback,
        error::method_not_allowed_fallback,
    )
    .layer(axum::middleware::from_fn(error::plain_rejections))
}

/// [`finish`] for the OPA-compatible endpoint: the 404/405 fallbacks answer in OPA's error shape
/// (`{"code", "message"}`).
pub fn finish_opa(router: Router, body_limit: usize) -> Router {
    finish_with(
        router,
        body_limit,
        error::opa_not_found_fallback,
        error::opa_method_not_allowed_fallback,
    )
    .layer(axum::middleware::from_fn(error::opa_plain_rejections))
}

fn finish_with<N, NT, M, MT>(
    router: Router,
    body_limit: usize,
    not_found: N,
    wrong_method: M,
) -> Router
where
    N: Handler<NT, ()>,
    NT: 'static,
    M: Handler<MT, ()>,
    MT: 'static,
{
    router
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(request_id::layer))
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::debug!(%addr, "serving http");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::http::{Method, StatusCode, header};
    use axum::routing::{get, post};
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;

    async fn call(app: Router, req: Request) -> (StatusCode, Value) {
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        assert!(resp.headers().contains_key(REQUEST_ID_HEADER));
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[derive(serde::Deserialize)]
    struct Limit {
        #[allow(dead_code)]
        limit: Option<u32>,
    }

    fn routes() -> Router {
        Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route(
                "/echo",
                post(|ApiJson(v): ApiJson<Value>| async move { axum::Json(v) }),
            )
            .route(
                "/list",
                get(|axum::extract::Query(_): axum::extract::Query<Limit>| async { "listed" }),
            )
    }

    fn req(method: Method, path: &str, body: &'static str) -> Request {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    }

    #[tokio::test]
    async fn fallbacks_and_body_limit_answer_json_envelopes() {
        let app = finish(routes(), 16);
        let (status, body) = call(app.clone(), req(Method::GET, "/nope", "")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(body["error"]["message"], "no route for /nope");
        assert_eq!(body["error"]["details"], json!({}));

        let (status, body) = call(app.clone(), req(Method::DELETE, "/ok", "")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"]["code"], "method_not_allowed");

        let (status, body) = call(app.clone(), req(Method::POST, "/echo", "{\"a\": 1}")).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"a": 1})));
        let big = "{\"a\": \"0123456789abcdef\"}";
        let (status, body) = call(app, req(Method::POST, "/echo", big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "payload_too_large");
    }

    #[tokio::test]
    async fn extractor_rejections_answer_in_the_envelope() {
        let (status, body) = call(
            finish(routes(), DEFAULT_BODY_LIMIT),
            req(Method::GET, "/list?limit=null", ""),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("query string"), "{message}");
        let (status, body) = call(
            finish_opa(routes(), DEFAULT_BODY_LIMIT),
            req(Method::GET, "/list?limit=-1", ""),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["code"], "invalid_parameter", "{body}");
        let resp = finish(routes(), DEFAULT_BODY_LIMIT)
            .oneshot(req(Method::GET, "/list?limit=7", ""))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "answers pass unchanged");
        assert!(
            resp.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
    }

    #[tokio::test]
    async fn opa_fallbacks_answer_in_opa_shape() {
        let app = finish_opa(routes(), DEFAULT_BODY_LIMIT);
        let (status, body) = call(app.clone(), req(Method::GET, "/v1/nope", "")).await;
        assert_eq!(status, Kind::NotFound.status());
        assert_eq!(
            body,
            json!({"code": "resource_not_found", "message": "no route for /v1/nope"})
        );
        let (status, body) = call(app, req(Method::PUT, "/ok", "")).await;
        assert_eq!(status, Kind::MethodNotAllowed.status());
        assert_eq!(body["code"], "method_not_allowed");
        assert!(body.get("error").is_none());
    }

    #[tokio::test]
    async fn serve_drains_and_stops_on_shutdown() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, finish(routes(), 1024), async move {
            let _ = stopped.await;
        }));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("x-request-id: "), "{answer}");
        stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}
