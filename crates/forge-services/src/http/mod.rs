//! HTTP plumbing shared by every Forge service: the error type, the JSON extractor, `/health`,
//! `/metrics`, `/openapi.json`, the body limit and JSON fallbacks for unknown routes.

pub mod error;
pub mod json;

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

pub use error::{ApiError, Kind};
pub use json::{ApiJson, parse_json};

/// Body limit of JSON APIs unless a service sets its own: spawn requests are tiny.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Buckets of every `*_duration_seconds` histogram: 1 ms to 60 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process-wide Prometheus recorder, installed on first use. If another recorder was
/// installed first (a test's, or the binary's own), this one still renders, just empty: metrics
/// must never stop a service from starting.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), DURATION_BUCKETS)
            .expect("buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        let upkeep = handle.clone();
        // Histograms need periodic upkeep; a plain thread works with or without a runtime.
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .expect("spawn metrics upkeep thread");
        handle
    })
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub service: &'static str,
}

/// `GET /health` → `{"status":"ok","service":NAME}`, `GET /metrics` (Prometheus text) and
/// `GET /openapi.json`: the routes every service has, without authentication.
pub fn common_routes<S>(service: &'static str, openapi: utoipa::openapi::OpenApi) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    metrics_handle();
    let doc = openapi.to_json().expect("openapi document serializes");
    Router::new()
        .route(
            "/health",
            get(move || async move {
                Json(Health {
                    status: "ok",
                    service,
                })
            }),
        )
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(CONTENT_TYPE, "application/json")], doc) }
            }),
        )
}

async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}

/// Applies what every service router needs last: the body limit (rejections flow through
/// [`ApiJson`] as JSON 413s) and JSON 404/405 fallbacks.
pub fn finish(router: Router, body_limit: usize) -> Router {
    router
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(body_limit))
}
