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
//!
//! Who may query ([`ServerConfig`]): `/v1/data` and `/v1/policies` answer a caller whose bearer
//! token the platform's verifier accepts and who holds one of [`QUERY_ROLES`] (the platform's
//! own processes mint such tokens; operators and instructors use theirs), and anonymous callers
//! only where the configuration allows them: a listener bound to loopback in local mode, where
//! every caller is on this host. A refused request (401, 403) costs no evaluation and no audit
//! record; an anonymous decision is counted but not audited, so nobody can grow the signed audit
//! log by asking; an authenticated one is audited with the caller as actor. `/health`,
//! `/ready`, `/metrics` and `/openapi.json` stay open.
//!
//! Evaluation is CPU work of up to the engine's own time limit, so it never runs on the async
//! workers: queries run on the blocking pool, at most [`ServerConfig::max_evaluations`] at once,
//! and a query that has no answer within [`ServerConfig::deadline`] (waiting for a slot
//! included) is answered 503 `evaluation_timeout` (or `engine_busy`) in OPA's shape, with
//! `Retry-After`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Extension, Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use forge_auth::{AuthError, Caller, Verifier, roles};
use forge_http::{ApiError, Kind, Service};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use utoipa::{OpenApi, ToSchema};

use crate::{DecisionContext, EmbeddedEngine, PolicyEngine, PolicyError, PolicyName};

/// Response header carrying the decision id of a gate decision.
pub const DECISION_ID_HEADER: &str = "x-forge-decision-id";

/// Largest request body: inputs are templates and gate inputs, far below this.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Roles that may query the Data API: the platform itself and operators' automation
/// (`forge.orchestrator`, which the platform's processes mint for themselves), operators who
/// watch the platform (`forge.observer`) and instructors trying a template against the gates
/// (`forge.instructor`). A learner's token (`forge.spawn`, `forge.score.read`) is refused 403.
pub const QUERY_ROLES: [&str; 3] = [roles::ORCHESTRATOR, roles::OBSERVER, roles::INSTRUCTOR];

/// How long one query may take unless configured otherwise, waiting for a slot included: the
/// engine's own evaluation time limit.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(1);

/// Who may query the Data API and how long a query may take.
#[derive(Clone)]
pub struct ServerConfig {
    verifier: Option<Arc<Verifier>>,
    anonymous: bool,
    deadline: Duration,
    max_evaluations: usize,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("verifies_tokens", &self.verifier.is_some())
            .field("anonymous", &self.anonymous)
            .field("deadline", &self.deadline)
            .field("max_evaluations", &self.max_evaluations)
            .finish()
    }
}

impl ServerConfig {
    /// Answers callers whose bearer token `verifier` accepts with one of [`QUERY_ROLES`]; with
    /// `None`, no token is accepted and only anonymous callers can be answered (see
    /// [`Self::anonymous`]).
    pub fn new(verifier: Option<Arc<Verifier>>) -> Self {
        Self {
            verifier,
            anonymous: false,
            deadline: DEFAULT_DEADLINE,
            max_evaluations: std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
        }
    }

    /// Whether callers without a token are answered too. Only for a listener bound to a
    /// loopback address in local mode (`forge up`, `forge serve opa --listen 127.0.0.1:…`):
    /// every caller is then a process of this host.
    pub fn anonymous(self, allow: bool) -> Self {
        Self {
            anonymous: allow,
            ..self
        }
    }

    /// How long a query may take, waiting for an evaluation slot included.
    pub fn deadline(self, deadline: Duration) -> Self {
        Self { deadline, ..self }
    }

    /// How many evaluations run at once on the blocking pool (at least 1).
    pub fn max_evaluations(self, n: usize) -> Self {
        Self {
            max_evaluations: n.max(1),
            ..self
        }
    }
}

/// Router state: the engine, who may ask, and the evaluation slots.
#[derive(Clone)]
struct Server {
    engine: Arc<EmbeddedEngine>,
    config: ServerConfig,
    evaluations: Evaluations,
}

/// Who asked: an authenticated caller (audited as the actor), or an anonymous one on loopback.
#[derive(Debug, Clone)]
enum Querier {
    Caller(Caller),
    Anonymous,
}

/// The OPA-compatible HTTP API over `engine`, finished like every service's router but with
/// OPA-shaped errors; `config` says who may query.
pub fn router(engine: Arc<EmbeddedEngine>, config: ServerConfig) -> Router {
    let probed = engine.clone();
    let readiness = forge_http::Readiness::new().check("policy", move || {
        let engine = probed.clone();
        async move { PolicyEngine::check(engine.as_ref()).await }
    });
    let server_anonymous = config.anonymous;
    let server = Server {
        evaluations: Evaluations::new(config.max_evaluations, config.deadline),
        engine,
        config,
    };
    let queries = Router::new()
        .route("/v1/data", get(data_get_root).post(data_post_root))
        .route("/v1/data/", get(data_get_root).post(data_post_root))
        .route("/v1/data/{*path}", get(data_get).post(data_post))
        .route("/v1/policies", get(policies))
        .route_layer(axum::middleware::from_fn_with_state(
            server.clone(),
            authenticate,
        ))
        .with_state(server);
    let mut doc = openapi();
    if server_anonymous {
        allow_anonymous(&mut doc);
    }
    let routes = queries.merge(forge_http::common_routes(Service::Opa, doc));
    readiness.install(forge_http::finish_opa(routes, BODY_LIMIT))
}

/// Serves [`router`] on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<EmbeddedEngine>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    forge_http::serve(listener, router(engine, config), shutdown).await
}

/// Decides who is asking before any body is read or anything evaluated; a refusal is answered
/// here, in OPA's shape, and never audited.
async fn authenticate(State(s): State<Server>, mut req: Request, next: Next) -> Response {
    let header = req.headers().get(AUTHORIZATION).cloned();
    match querier(&s.config, header).await {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(refused) => refused.into_opa_response(),
    }
}

async fn querier(
    config: &ServerConfig,
    header: Option<axum::http::HeaderValue>,
) -> Result<Querier, ApiError> {
    if header.is_none() && config.anonymous {
        return Ok(Querier::Anonymous);
    }
    let Some(verifier) = &config.verifier else {
        return Err(ApiError::new(
            Kind::Unauthorized,
            "unauthorized",
            "this endpoint verifies no bearer tokens; query it from this host without one",
        ));
    };
    let header = header
        .as_ref()
        .map(|v| {
            v.to_str()
                .map_err(|_| AuthError::MalformedHeader("the header is not visible ASCII".into()))
        })
        .transpose()?;
    let caller = verifier.authenticate(header).await?;
    if !QUERY_ROLES.iter().any(|r| caller.has_role(r)) {
        return Err(ApiError::forbidden(
            "missing_role",
            format!(
                "querying the policy engine needs role {}",
                QUERY_ROLES.join(", ")
            ),
        ));
    }
    Ok(Querier::Caller(caller))
}

type Body = Result<Bytes, BytesRejection>;
type DataPath = Result<Path<String>, PathRejection>;
type Asker = Extension<Querier>;

async fn data_get_root(State(s): State<Server>, Extension(who): Asker) -> Response {
    s.answer(String::new(), Ok(None), who).await
}

async fn data_post_root(State(s): State<Server>, Extension(who): Asker, body: Body) -> Response {
    s.answer(String::new(), parse_input(body), who).await
}

async fn data_get(State(s): State<Server>, Extension(who): Asker, path: DataPath) -> Response {
    match data_path(path) {
        Ok(path) => s.answer(path, Ok(None), who).await,
        Err(e) => e.into_opa_response(),
    }
}

async fn data_post(
    State(s): State<Server>,
    Extension(who): Asker,
    path: DataPath,
    body: Body,
) -> Response {
    match data_path(path) {
        Ok(path) => s.answer(path, parse_input(body), who).await,
        Err(e) => e.into_opa_response(),
    }
}

async fn policies(State(s): State<Server>) -> Json<Policies> {
    let result = s
        .engine
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

impl Server {
    /// The document at `path` for `input`, evaluated on the blocking pool within the deadline.
    async fn answer(
        &self,
        path: String,
        input: Result<Option<Value>, ApiError>,
        who: Querier,
    ) -> Response {
        let input = match input {
            Ok(input) => input,
            Err(e) => return e.into_opa_response(),
        };
        let engine = self.engine.clone();
        self.evaluations
            .run(move || answer(&engine, &path, input, &who))
            .await
            .and_then(|answered| answered)
            .unwrap_or_else(ApiError::into_opa_response)
    }
}

/// Evaluation slots on the blocking pool, and the deadline of one query.
#[derive(Clone)]
struct Evaluations {
    slots: Arc<Semaphore>,
    deadline: Duration,
}

impl Evaluations {
    fn new(slots: usize, deadline: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            deadline,
        }
    }

    /// Runs `work` on the blocking pool once a slot is free, or the 503 that says why not
    /// within the deadline. Work that outlives its deadline keeps its slot until it ends (the
    /// engine's time limit ends it), so abandoned evaluations still count against the bound.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let slot = tokio::time::timeout(self.deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| self.busy())?
            .map_err(|_| self.busy())?;
        let left = self.deadline.saturating_sub(started.elapsed());
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        });
        match tokio::time::timeout(left, task).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(ApiError::new(
                Kind::Internal,
                "internal_error",
                format!("policy evaluation failed: {e}"),
            )),
            Err(_) => Err(timed_out(self.deadline)),
        }
    }

    fn busy(&self) -> ApiError {
        ApiError::new(
            Kind::ServiceUnavailable,
            "engine_busy",
            format!(
                "every evaluation slot stayed busy for {} ms; retry later",
                self.deadline.as_millis()
            ),
        )
        .with_retry_after(1)
    }
}

/// The answer to a query that did not finish within `deadline`.
fn timed_out(deadline: Duration) -> ApiError {
    ApiError::new(
        Kind::ServiceUnavailable,
        "evaluation_timeout",
        format!(
            "policy evaluation did not finish within {} ms",
            deadline.as_millis()
        ),
    )
    .with_retry_after(1)
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
/// a body is unusable. A body of whitespace alone is not empty: it is not the JSON object the
/// schema describes, so it is refused like any other malformed body.
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
    if body.is_empty() {
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

fn answer(
    engine: &EmbeddedEngine,
    path: &str,
    input: Option<Value>,
    who: &Querier,
) -> Result<Response, ApiError> {
    let path = path.trim_matches('/');
    if let Some(input) = &input
        && let Some((gate, rule)) = gate_query(engine, path)
    {
        let decided = match who {
            Querier::Caller(caller) => {
                let ctx = DecisionContext {
                    actor: Some(caller.sub.clone()),
                    resource_id: None,
                };
                engine.decide_with(gate, input, &ctx)
            }
            Querier::Anonymous => engine.decide_unaudited(gate, input),
        };
        let d = decided.map_err(policy_error)?;
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

/// The caller's fault is OPA's `invalid_parameter`; the engine's own time limit is the same
/// 503 as the server's deadline; anything else is OPA's `internal_error`, which (as in OPA)
/// names the cause.
fn policy_error(e: PolicyError) -> ApiError {
    if e.is_client_error() {
        bad_request(e.to_string())
    } else if e.is_timeout() {
        ApiError::new(
            Kind::ServiceUnavailable,
            "evaluation_timeout",
            e.to_string(),
        )
        .with_retry_after(1)
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

/// Body of `POST /v1/data/...` (documentation only: the handler reads any content type, and an
/// empty body is a query without input).
#[derive(ToSchema)]
#[allow(dead_code)]
struct DataRequest {
    /// The input document, any JSON value (an object for a gate's package or one of its
    /// outputs); without it, the query is a plain read.
    #[schema(value_type = utoipa::openapi::schema::Value, required = false)]
    input: Option<Value>,
}

/// A Data API answer: `{"result": ...}`, or `{}` when the document is undefined (documentation
/// only).
#[derive(ToSchema)]
#[allow(dead_code)]
struct DataResponse {
    /// The document, any JSON value; absent when it is undefined.
    #[schema(value_type = utoipa::openapi::schema::Value, required = false)]
    result: Option<Value>,
}

/// Callers without a token are answered too (a loopback listener in local mode): every
/// operation that takes a bearer token also takes none.
fn allow_anonymous(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::SecurityRequirement;
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post].into_iter().flatten() {
            if let Some(security) = op.security.as_mut() {
                security.push(SecurityRequirement::default());
            }
        }
    }
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
    request_body(content = DataRequest, content_type = "application/json", description = "Optional: no body is a query without input"),
    responses(
        (status = 200, description = "The document (`{}` when undefined); a gate query carries its decision id in `x-forge-decision-id`", body = DataResponse,
         headers(("x-forge-decision-id" = String, description = "Decision id of a gate decision"))),
        (status = 400, description = "Body is not a JSON object, the path is not valid percent-encoded UTF-8, or a gate query's input is not an object", body = OpaError),
        (status = 401, description = "No bearer token (where anonymous callers are not answered), or one that does not verify", body = OpaError),
        (status = 403, description = "The token has none of forge.orchestrator, forge.observer, forge.instructor", body = OpaError),
        (status = 413, description = "Body too large", body = OpaError),
        (status = 500, description = "Evaluation failed", body = OpaError),
        (status = 503, description = "No answer within the deadline (`evaluation_timeout`) or no free evaluation slot (`engine_busy`); see Retry-After", body = OpaError),
    ),
    security(("bearer" = []))
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
        (status = 400, description = "The path is not valid percent-encoded UTF-8", body = OpaError),
        (status = 401, description = "No bearer token (where anonymous callers are not answered), or one that does not verify", body = OpaError),
        (status = 403, description = "The token has none of forge.orchestrator, forge.observer, forge.instructor", body = OpaError),
        (status = 500, description = "Evaluation failed", body = OpaError),
        (status = 503, description = "No answer within the deadline (`evaluation_timeout`) or no free evaluation slot (`engine_busy`); see Retry-After", body = OpaError),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn data_get_doc() {}

/// Documentation of `POST /v1/data`.
#[utoipa::path(
    post,
    path = "/v1/data",
    tag = "data",
    request_body(content = DataRequest, content_type = "application/json", description = "Optional: no body is a query without input"),
    responses(
        (status = 200, description = "The whole data tree", body = DataResponse),
        (status = 400, description = "Body is not a JSON object", body = OpaError),
        (status = 401, description = "No bearer token (where anonymous callers are not answered), or one that does not verify", body = OpaError),
        (status = 403, description = "The token has none of forge.orchestrator, forge.observer, forge.instructor", body = OpaError),
        (status = 413, description = "Body too large", body = OpaError),
        (status = 500, description = "Evaluation failed", body = OpaError),
        (status = 503, description = "No answer within the deadline (`evaluation_timeout`) or no free evaluation slot (`engine_busy`); see Retry-After", body = OpaError),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn data_root_post_doc() {}

/// Documentation of `GET /v1/data`.
#[utoipa::path(
    get,
    path = "/v1/data",
    tag = "data",
    responses(
        (status = 200, description = "The whole data tree", body = DataResponse),
        (status = 401, description = "No bearer token (where anonymous callers are not answered), or one that does not verify", body = OpaError),
        (status = 403, description = "The token has none of forge.orchestrator, forge.observer, forge.instructor", body = OpaError),
        (status = 500, description = "Evaluation failed", body = OpaError),
        (status = 503, description = "No answer within the deadline (`evaluation_timeout`) or no free evaluation slot (`engine_busy`); see Retry-After", body = OpaError),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn data_root_get_doc() {}

/// Documentation of `GET /v1/policies`.
#[utoipa::path(
    get,
    path = "/v1/policies",
    tag = "policies",
    responses(
        (status = 200, description = "The loaded modules", body = Policies),
        (status = 401, description = "No bearer token (where anonymous callers are not answered), or one that does not verify", body = OpaError),
        (status = 403, description = "The token has none of forge.orchestrator, forge.observer, forge.instructor", body = OpaError),
    ),
    security(("bearer" = []))
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

/// The OpenAPI document of `forge serve opa`, served at `/openapi.json`. A query's body is
/// optional (an empty one is a query without input).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for item in doc.paths.paths.values_mut() {
        if let Some(utoipa::openapi::RefOr::T(body)) =
            item.post.as_mut().and_then(|op| op.request_body.as_mut())
        {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use tower::ServiceExt;

    use super::*;

    fn open() -> ServerConfig {
        ServerConfig::new(None).anonymous(true)
    }

    async fn post(path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let app = router(Arc::new(EmbeddedEngine::bundled().unwrap()), open());
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

    #[tokio::test]
    async fn work_past_the_deadline_is_a_503_and_keeps_its_slot() {
        let slots = Evaluations::new(1, Duration::from_millis(50));
        assert_eq!(slots.run(|| 7).await.unwrap(), 7);
        let started = Instant::now();
        let late = slots
            .run(|| std::thread::sleep(Duration::from_millis(400)))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(late.code(), "evaluation_timeout");
        assert!(late.headers().contains_key("retry-after"));
        // The abandoned work still holds the only slot: the next query cannot start.
        let busy = slots.run(|| 1).await.unwrap_err();
        assert_eq!(busy.code(), "engine_busy");
        let resp = busy.into_opa_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "engine_busy");
        assert!(body["message"].is_string() && body.get("error").is_none());
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(slots.run(|| 2).await.unwrap(), 2, "the slot came back");
    }

    #[tokio::test]
    async fn without_a_verifier_only_anonymous_callers_are_answered() {
        let app = router(
            Arc::new(EmbeddedEngine::bundled().unwrap()),
            ServerConfig::new(None),
        );
        let req = Request::get("/v1/data/frostgate")
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let req = Request::get("/health").body(Body::empty()).unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
    }
}
