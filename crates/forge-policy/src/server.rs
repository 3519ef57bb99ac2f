//! `forge serve opa`: an embedded engine behind OPA's Data API, so other processes (a
//! [`crate::RemoteEngine`]) and operators' tools (`curl`, scripts, dashboards) can query it.
//!
//! Routes: `POST|GET /v1/data[/{path}]` (`{"input": ...}` in the body; GET has no input),
//! `GET /v1/policies`, `GET /health`. Answers are `{"result": <value>}`, or `{}` when the
//! document is undefined; errors are OPA-shaped `{"code", "message"}`. Querying a gate's package
//! (or its `allow` / `deny_reasons` / extra rules) with an input is a decision: counted, audited,
//! with its id in the `x-forge-decision-id` header (the body keeps OPA's exact shape). The
//! package answer holds exactly the decision outputs (`allow`, `deny_reasons` and the gate's
//! extras), not the gate's internal helper rules.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::{EmbeddedEngine, PolicyError, PolicyName};

/// Response header carrying the decision id of a gate decision.
pub const DECISION_ID_HEADER: &str = "x-forge-decision-id";

/// The OPA-compatible HTTP API over `engine`.
pub fn router(engine: Arc<EmbeddedEngine>) -> Router {
    Router::new()
        .route("/v1/data", get(data_get_root).post(data_post_root))
        .route("/v1/data/", get(data_get_root).post(data_post_root))
        .route("/v1/data/{*path}", get(data_get).post(data_post))
        .route("/v1/policies", get(policies))
        .route("/health", get(health))
        .fallback(not_found)
        .with_state(engine)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<EmbeddedEngine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(shutdown)
        .await
}

type Engine = State<Arc<EmbeddedEngine>>;

async fn data_get_root(State(engine): Engine) -> Response {
    answer(&engine, "", None)
}

async fn data_post_root(State(engine): Engine, body: Bytes) -> Response {
    match parse_input(&body) {
        Ok(input) => answer(&engine, "", input),
        Err(message) => bad_request(&message),
    }
}

async fn data_get(State(engine): Engine, Path(path): Path<String>) -> Response {
    answer(&engine, &path, None)
}

async fn data_post(State(engine): Engine, Path(path): Path<String>, body: Bytes) -> Response {
    match parse_input(&body) {
        Ok(input) => answer(&engine, &path, input),
        Err(message) => bad_request(&message),
    }
}

async fn policies(State(engine): Engine) -> Response {
    let result: Vec<Value> = engine
        .modules()
        .iter()
        .map(|m| json!({ "id": m.name, "raw": m.text, "package": m.package, "rego_version": m.version }))
        .collect();
    Json(json!({ "result": result })).into_response()
}

async fn health() -> Response {
    Json(json!({ "status": "ok", "service": "forge_opa" })).into_response()
}

async fn not_found() -> Response {
    opa_error(
        StatusCode::NOT_FOUND,
        "resource_not_found",
        "no such endpoint (try /v1/data/<path>, /v1/policies, /health)",
    )
}

/// The body's `input`: `Ok(None)` for an empty body or one without `input`.
/// Why a body is unusable, as the 400 message.
fn parse_input(body: &[u8]) -> Result<Option<Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut obj)) => Ok(obj.remove("input")),
        Ok(other) => Err(format!(
            "body must be a JSON object like {{\"input\": ...}}, got {}",
            crate::embedded::json_type(&other)
        )),
        Err(e) => Err(format!("body is not valid JSON: {e}")),
    }
}

fn bad_request(message: &str) -> Response {
    opa_error(StatusCode::BAD_REQUEST, "invalid_parameter", message)
}

fn answer(engine: &EmbeddedEngine, path: &str, input: Option<Value>) -> Response {
    let path = path.trim_matches('/');
    if let Some(input) = &input
        && let Some((gate, rule)) = gate_query(engine, path)
    {
        return match engine.decide(gate, input) {
            Ok(d) => {
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
                ([(DECISION_ID_HEADER, d.decision_id)], Json(body)).into_response()
            }
            Err(e) => error_response(&e),
        };
    }
    match engine.query(path, input.as_ref()) {
        Ok(Some(result)) => Json(json!({ "result": result })).into_response(),
        Ok(None) => Json(json!({})).into_response(),
        Err(e) => error_response(&e),
    }
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

fn error_response(e: &PolicyError) -> Response {
    if e.is_client_error() {
        bad_request(&e.to_string())
    } else {
        opa_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            &e.to_string(),
        )
    }
}

fn opa_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}
