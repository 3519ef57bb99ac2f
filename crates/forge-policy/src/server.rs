//! `forge serve opa`: an embedded engine behind OPA's Data API, so other processes (a
//! [`crate::RemoteEngine`]) and operators' tools (`curl`, scripts, dashboards) can query it.
//!
//! Routes: `POST|GET /v1/data[/{path}]` (`{"input": ...}` in the body, whatever its content type;
//! GET has no input), `GET /v1/policies`, and the routes every Forge service has (`GET /health`,
//! `/ready` with the one check `policy`: every gate is loaded, `/metrics`, `/openapi.json`). Answers are `{"result": <value>}`, or `{}` when the document is
//! undefined; errors, unknown routes and wrong methods included, are OPA-shaped
//! `{"code", "message"}` with their status from [`forge_http::Kind`]. Querying a gate's package
//! (or its `allow` / `deny_reasons` / extra rules) with an input is a decision: counted, audited,
//! with its id in the `x-forge-decision-id` header (the body keeps OPA's exact shape). The
//! package answer holds exactly the decision outputs (`allow`, `deny_reasons` and the gate's
//! extras), not the gate's internal helper rules.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use forge_http::{ApiError, Kind, Service};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::{OpenApi, ToSchema};

use crate::{EmbeddedEngine, PolicyEngine, PolicyError, PolicyName};

/// Response header carrying the decision id of a gate decision.
pub const DECISION_ID_HEADER: &str = "x-forge-decision-id";

/// Largest request body: inputs are templates and gate inputs, far below this.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The OPA-compatible HTTP API over `engine`, finished like every service's router but with
/// OPA-shaped errors.
pub fn router(engine: Arc<EmbeddedEngine>) -> Router {
    let probed = engine.clone();
    let readiness = forge_http::Readiness::new().check("policy", move || {
        let engine = probed.clone();
        async move { PolicyEngine::check(engine.as_ref()).await }
    });
    let routes = Router::new()
        .route("/v1/data", get(data_get_root).post(data_post_root))
        .route("/v1/data/", get(data_get_root).post(data_post_root))
        .route("/v1/data/{*path}", get(data_get).post(data_post))
        .route("/v1/policies", get(policies))
        .merge(forge_http::common_routes(Service::Opa, openapi()))
        .with_state(engine);
    readiness.install(forge_http::finish_opa(routes, BODY_LIMIT))
}

/// Serves [`router`] on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<EmbeddedEngine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    forge_http::serve(listener, router(engine), shutdown).await
}

type Engine = State<Arc<EmbeddedEngine>>;
type Body = Result<Bytes, BytesRejection>;
type DataPath = Result<Path<String>, PathRejection>;

async fn data_get_root(State(engine): Engine) -> Response {
    answer(&engine, "", None).unwrap_or_else(ApiError::into_opa_response)
}

async fn data_post_root(State(engine): Engine, body: Body) -> Response {
    parse_input(body)
        .and_then(|input| answer(&engine, "", input))
        .unwrap_or_else(ApiError::into_opa_response)
}

async fn data_get(State(engine): Engine, path: DataPath) -> Response {
    data_path(path)
        .and_then(|path| answer(&engine, &path, None))
        .unwrap_or_else(ApiError::into_opa_response)
}

async fn data_post(State(engine): Engine, path: DataPath, body: Body) -> Response {
    data_path(path)
        .and_then(|path| answer(&engine, &path, parse_input(body)?))
        .unwrap_or_else(ApiError::into_opa_response)
}

async fn policies(State(engine): Engine) -> Json<Policies> {
    let result = engine
        .modules()
        .iter()
        .map(|m| PolicyModule {
            id: m.name.clone(),
            raw: m.text.clone(),
            package: m.package.clone(),
            rego_version: m.version,
        })
        .collect();
    Json(Policies { result })
}

/// OPA's code for anything wrong with the request.
fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(Kind::BadRequest, "invalid_parameter", message)
}

fn data_path(path: DataPath) -> Result<String, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| bad_request(format!("invalid data path: {}", e.body_text())))
}

/// The body's `input`: `Ok(None)` for an empty body or one without `input`; a 400 that says why
/// a body is unusable.
fn parse_input(body: Body) -> Result<Option<Value>, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                Kind::PayloadTooLarge,
                "invalid_parameter",
                format!("body is larger than {BODY_LIMIT} bytes"),
            )
        } else {
            bad_request("body could not be read")
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut obj)) => Ok(obj.remove("input")),
        Ok(other) => Err(bad_request(format!(
            "body must be a JSON object like {{\"input\": ...}}, got {}",
            crate::embedded::json_type(&other)
        ))),
        Err(e) => Err(bad_request(format!("body is not valid JSON: {e}"))),
    }
}

fn answer(engine: &EmbeddedEngine, path: &str, input: Option<Value>) -> Result<Response, ApiError> {
    let path = path.trim_matches('/');
    if let Some(input) = &input
        && let Some((gate, rule)) = gate_query(engine, path)
    {
        let d = engine.decide(gate, input).map_err(policy_error)?;
        let mut doc = Map::new();
        doc.insert("allow".into(), Value::Bool(d.allow));
        doc.insert("deny_reasons".into(), json!(d.deny_reasons));
        doc.extend(d.extra);
        let result = match rule {
            None => Some(Value::Object(doc)),
            Some(rule) => doc.remove(rule),
        };
        let body = match result {
            Some(result) => json!({ "result": result }),
            None => json!({}),
        };
        // The body stays exactly OPA's shape; the id travels in a header.
        return Ok(([(DECISION_ID_HEADER, d.decision_id)], Json(body)).into_response());
    }
    let body = match engine.query(path, input.as_ref()).map_err(policy_error)? {
        Some(result) => json!({ "result": result }),
        None => json!({}),
    };
    Ok(Json(body).into_response())
}

/// Whether `path` is a loaded gate's package or one of its decision outputs.
fn gate_query<'p>(engine: &EmbeddedEngine, path: &'p str) -> Option<(PolicyName, Option<&'p str>)> {
    PolicyName::ALL.into_iter().find_map(|gate| {
        if !engine.has_policy(gate) {
            return None;
        }
        let rest = path.strip_prefix(gate.data_path())?;
        if rest.is_empty() {
            return Some((gate, None));
        }
        let rule = rest.strip_prefix('/')?;
        let is_output =
            rule == "allow" || rule == "deny_reasons" || gate.extra_rules().contains(&rule);
        is_output.then_some((gate, Some(rule)))
    })
}

/// The caller's fault is OPA's `invalid_parameter`; anything else is OPA's `internal_error`,
/// which (as in OPA) names the cause.
fn policy_error(e: PolicyError) -> ApiError {
    if e.is_client_error() {
        bad_request(e.to_string())
    } else {
        tracing::error!(error = %e, "policy evaluation failed");
        ApiError::new(Kind::Internal, "internal_error", e.to_string())
    }
}

/// Body of `GET /v1/policies`.
#[derive(Debug, Serialize, ToSchema)]
struct Policies {
    result: Vec<PolicyModule>,
}

#[derive(Debug, Serialize, ToSchema)]
struct PolicyModule {
    /// The module's file name, e.g. `policies/training_gate.rego`.
    id: String,
    /// The Rego source.
    raw: String,
    /// Dotted, without `data.`, e.g. `frostgate.forge.training`.
    package: String,
    /// `v0` or `v1`.
    #[schema(value_type = String)]
    rego_version: crate::loader::RegoVersion,
}

/// Body of `POST /v1/data/...` (documentation only: the handler reads any content type).
#[derive(ToSchema)]
#[allow(dead_code)]
struct DataRequest {
    /// The input document; without it, the query is a plain read.
    #[schema(value_type = Object)]
    input: Option<Value>,
}

/// A Data API answer: `{"result": ...}`, or `{}` when the document is undefined (documentation
/// only).
#[derive(ToSchema)]
#[allow(dead_code)]
struct DataResponse {
    #[schema(value_type = Object)]
    result: Option<Value>,
}

/// OPA's error shape (documentation only: written by [`ApiError::into_opa_response`]).
#[derive(ToSchema)]
#[allow(dead_code)]
struct OpaError {
    /// `invalid_parameter`, `internal_error`, `resource_not_found`, ...
    code: String,
    message: String,
}

/// Documentation of `POST /v1/data/{path}`.
#[utoipa::path(
    post,
    path = "/v1/data/{path}",
    tag = "data",
    params(("path" = String, Path, description = "Slash-separated document path, e.g. `frostgate/forge/training/allow`")),
    request_body(content = DataRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The document (`{}` when undefined); a gate query carries its decision id in `x-forge-decision-id`", body = DataResponse,
         headers(("x-forge-decision-id" = String, description = "Decision id of a gate decision"))),
        (status = 400, description = "Body is not a JSON object, or input is not an object", body = OpaError),
        (status = 413, description = "Body too large", body = OpaError),
        (status = 500, description = "Evaluation failed", body = OpaError),
    )
)]
#[allow(dead_code)]
fn data_post_doc() {}

/// Documentation of `GET /v1/data/{path}`.
#[utoipa::path(
    get,
    path = "/v1/data/{path}",
    tag = "data",
    params(("path" = String, Path, description = "Slash-separated document path")),
    responses(
        (status = 200, description = "The document without input (`{}` when undefined)", body = DataResponse),
        (status = 500, description = "Evaluation failed", body = OpaError),
    )
)]
#[allow(dead_code)]
fn data_get_doc() {}

/// Documentation of `POST /v1/data`.
#[utoipa::path(
    post,
    path = "/v1/data",
    tag = "data",
    request_body(content = DataRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The whole data tree", body = DataResponse),
        (status = 400, description = "Body is not a JSON object", body = OpaError),
    )
)]
#[allow(dead_code)]
fn data_root_post_doc() {}

/// Documentation of `GET /v1/data`.
#[utoipa::path(
    get,
    path = "/v1/data",
    tag = "data",
    responses((status = 200, description = "The whole data tree", body = DataResponse))
)]
#[allow(dead_code)]
fn data_root_get_doc() {}

/// Documentation of `GET /v1/policies`.
#[utoipa::path(
    get,
    path = "/v1/policies",
    tag = "policies",
    responses((status = 200, description = "The loaded modules", body = Policies))
)]
#[allow(dead_code)]
fn policies_doc() {}

#[derive(OpenApi)]
#[openapi(
    paths(
        data_post_doc,
        data_get_doc,
        data_root_post_doc,
        data_root_get_doc,
        policies_doc
    ),
    components(schemas(DataRequest, DataResponse, OpaError, Policies, PolicyModule))
)]
struct ApiDoc;

/// The OpenAPI document of `forge serve opa`, served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use tower::ServiceExt;

    use super::*;

    async fn post(path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let app = router(Arc::new(EmbeddedEngine::bundled().unwrap()));
        let req = Request::post(path).body(Body::from(body)).unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn oversized_bodies_are_opa_shaped_413s() {
        let mut body = br#"{"input": {"pad": ""#.to_vec();
        body.resize(BODY_LIMIT + 1, b'x');
        let (status, answer) = post("/v1/data/frostgate/forge/training", body).await;
        assert_eq!(status, Kind::PayloadTooLarge.status());
        assert_eq!(answer["code"], "invalid_parameter", "{answer}");
        assert!(answer["message"].as_str().unwrap().contains("larger than"));
    }

    #[tokio::test]
    async fn undecodable_paths_are_opa_shaped_400s() {
        let (status, answer) = post("/v1/data/%FF%FE", b"{}".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["code"], "invalid_parameter", "{answer}");
    }
}
