//! The routes every service has, without authentication: `GET /health` (liveness), `GET /ready`
//! (its dependencies, [`crate::Readiness`]), `GET /metrics` (Prometheus text) and
//! `GET /openapi.json`, and the process-wide metrics recorder behind them.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use crate::Service;
use crate::ready::ReadyReport;

/// Buckets of every `*_seconds` histogram without buckets of its own: 1 ms to 60 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Policy decisions: microseconds when cached, milliseconds through a remote OPA.
const DECISION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Lab builds: a fraction of a second to the launch timeout.
const LAUNCH_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0,
];
/// Evidence bundles: 1 KiB to 64 MiB.
const SIZE_BUCKETS: &[f64] = &[
    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

/// The process-wide Prometheus recorder, installed on first use. If another recorder was
/// installed first (a test's, or the binary's own), this one still renders, just empty: metrics
/// must never stop a service from starting.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Every histogram gets buckets that fit its unit (without, it would be a summary,
        // which cannot be aggregated across instances). Full names win over the suffix.
        let full = |name: &str| Matcher::Full(name.into());
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(full("forge_opa_decision_seconds"), DECISION_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(full("forge_lab_launch_seconds"), LAUNCH_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(full("forge_runtime_launch_seconds"), LAUNCH_BUCKETS)
            })
            .and_then(|b| b.set_buckets_for_metric(full("forge_evidence_size_bytes"), SIZE_BUCKETS))
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

/// Body of `GET /health`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
    /// [`Service::name`], e.g. `forge_spawn_service`.
    #[schema(example = "forge_spawn_service")]
    pub service: &'static str,
}

/// `GET /health` → `{"status":"ok","service":NAME}` ([`Service::name`]), `GET /ready` (the
/// checks a [`crate::Readiness`] installed on the finished router brings; none without one),
/// `GET /metrics` (Prometheus text) and `GET /openapi.json` (`openapi`).
pub fn common_routes<S>(service: Service, openapi: utoipa::openapi::OpenApi) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    metrics_handle();
    let doc = with_common_docs(service, openapi)
        .to_json()
        .expect("openapi document serializes");
    let health = Health {
        status: "ok",
        service: service.name(),
    };
    Router::new()
        .route("/health", get(move || async move { Json(health) }))
        .route("/ready", get(crate::ready::ready))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(CONTENT_TYPE, "application/json")], doc) }
            }),
        )
}

/// Documentation of `GET /health`.
#[utoipa::path(
    get,
    path = "/health",
    tag = "ops",
    responses((status = 200, description = "Service is up", body = Health))
)]
#[allow(dead_code)]
fn health_doc() {}

/// Documentation of `GET /ready`.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "ops",
    responses(
        (status = 200, description = "Every dependency of the service answers", body = ReadyReport),
        (status = 503, description = "A dependency does not answer: `checks` says which and why; \
            `error.code` is `not_ready`", body = ReadyReport),
    )
)]
#[allow(dead_code)]
fn ready_doc() {}

/// Documentation of `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain"))
)]
#[allow(dead_code)]
fn metrics_doc() {}

/// The bearer-token scheme every service's `security(("bearer" = []))` refers to.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(health_doc, ready_doc, metrics_doc),
    components(schemas(Health, ReadyReport, crate::ErrorEnvelope, crate::ErrorBody)),
    modifiers(&BearerAuth)
)]
struct CommonApiDoc;

/// `openapi` plus what every service has: its title and description from the registry,
/// `/health`, `/ready`, `/metrics`, the error envelope's schema and the bearer scheme, documented
/// here once.
pub fn with_common_docs(
    service: Service,
    mut openapi: utoipa::openapi::OpenApi,
) -> utoipa::openapi::OpenApi {
    use utoipa::{Modify as _, OpenApi as _};
    openapi.info.title = service.name().to_owned();
    openapi.info.description = Some(service.description().to_owned());
    openapi.merge(CommonApiDoc::openapi());
    // `merge` leaves security schemes alone; the modifier adds the one every route names.
    BearerAuth.modify(&mut openapi);
    // The OPA Data API answers in OPA's own error shape and documents its errors itself.
    if service != Service::Opa {
        document_common_errors(&mut openapi);
    }
    openapi
}

/// Every operation documents the errors any route of its kind can answer, in the one error
/// envelope, so a client (and schemathesis) meets no undocumented status: routes with a bearer
/// token 401, 403 (a token without a tenant, or without a role the route needs), 429 (every
/// authenticated route is rate limited per tenant) and 500 (a fault of the platform, never the
/// answer to a bad request); routes with a body 400, 413 and 415; routes with path parameters
/// 400 (a parameter that is not valid percent-encoded UTF-8). What a route documents itself is
/// kept.
fn document_common_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |what: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .build(),
                )
                .build(),
        )
    };
    for item in openapi.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let mut add = |code: &str, what: &str| {
                op.responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| error(what));
            };
            if secured {
                add("401", "Missing or invalid bearer token");
                add(
                    "403",
                    "The token has no tenant, or lacks a role this route needs",
                );
                add("429", "Tenant rate limit; see Retry-After");
                add(
                    "500",
                    "Internal error of the platform (logged); never the answer to a bad request",
                );
            }
            let path_params = op.parameters.iter().flatten().any(|p| {
                matches!(p, RefOr::T(p) if p.parameter_in == utoipa::openapi::path::ParameterIn::Path)
            });
            if path_params {
                add("400", "A path parameter is not valid percent-encoded UTF-8");
            }
            if op.request_body.is_some() {
                add(
                    "400",
                    "Malformed or invalid body; the message names the field",
                );
                add("413", "Body too large");
                add("415", "Content-Type is not application/json");
            }
        }
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::http::StatusCode;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;

    async fn get(app: &Router, path: &str) -> (StatusCode, String, Vec<u8>) {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, ct, body.to_vec())
    }

    #[tokio::test]
    async fn health_metrics_and_openapi() {
        let mut doc = utoipa::openapi::OpenApi::default();
        doc.info.title = "test api".into();
        let app: Router = common_routes(Service::Observer, doc);

        let (status, ct, body) = get(&app, "/health").await;
        assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/json"));
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"status": "ok", "service": "forge_observer_hub"})
        );

        let (status, ct, _) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ct.starts_with("text/plain"), "{ct}");

        let (status, _, body) = get(&app, "/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        let doc: Value = serde_json::from_slice(&body).unwrap();
        // Title and description come from the registry; the common routes, the error envelope
        // and the bearer scheme are documented for every service.
        assert_eq!(doc["info"]["title"], "forge_observer_hub");
        assert_eq!(doc["info"]["description"], Service::Observer.description());
        assert!(doc["paths"]["/health"]["get"].is_object(), "{doc}");
        assert!(doc["paths"]["/metrics"]["get"].is_object(), "{doc}");
        let ready = &doc["paths"]["/ready"]["get"]["responses"];
        assert!(
            ready["200"].is_object() && ready["503"].is_object(),
            "{doc}"
        );
        assert!(
            doc["components"]["schemas"]["ReadyReport"].is_object(),
            "{doc}"
        );
        assert!(
            doc["components"]["schemas"]["ErrorEnvelope"].is_object(),
            "{doc}"
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn every_operation_documents_the_errors_of_its_kind() {
        #[derive(utoipa::ToSchema, serde::Deserialize)]
        #[allow(dead_code)]
        struct Body {
            x: u32,
        }
        #[utoipa::path(post, path = "/things", request_body = Body,
            responses((status = 200), (status = 400, description = "our own words")),
            security(("bearer" = [])))]
        #[allow(dead_code)]
        fn post_thing() {}
        #[utoipa::path(get, path = "/things/{id}", params(("id" = String, Path)),
            responses((status = 200)))]
        #[allow(dead_code)]
        fn get_thing() {}
        #[derive(utoipa::OpenApi)]
        #[openapi(paths(post_thing, get_thing))]
        struct Doc;
        let doc = with_common_docs(Service::Runner, <Doc as utoipa::OpenApi>::openapi());
        let v = serde_json::to_value(&doc).unwrap();
        let posted = &v["paths"]["/things"]["post"]["responses"];
        for code in ["200", "400", "401", "403", "413", "415", "429", "500"] {
            assert!(posted[code].is_object(), "{code} missing: {posted}");
        }
        let got = &v["paths"]["/things/{id}"]["get"]["responses"];
        assert!(
            got["400"].is_object(),
            "a path parameter may not decode: {got}"
        );
        assert!(got["401"].is_null(), "an open route: {got}");
        // The OPA Data API documents its own errors, in OPA's shape.
        let opa = with_common_docs(Service::Opa, <Doc as utoipa::OpenApi>::openapi());
        let opa = serde_json::to_value(&opa).unwrap();
        assert!(
            opa["paths"]["/things"]["post"]["responses"]["401"].is_null(),
            "{opa}"
        );
        assert_eq!(
            posted["400"]["description"], "our own words",
            "a route's own text stays"
        );
        let health = &v["paths"]["/health"]["get"]["responses"];
        assert!(
            health["401"].is_null(),
            "open routes need no token: {health}"
        );
    }
}
