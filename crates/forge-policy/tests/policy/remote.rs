//! `forge serve opa` over HTTP, and the remote client against it. Loopback only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::{MethodRouter, post as post_answer};
use forge_policy::{EmbeddedEngine, PolicyEngine, PolicyError, PolicyName, RemoteEngine, server};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::common::gate_cases;

/// A running server; shuts down when dropped.
pub struct Running {
    pub url: String,
    _stop: oneshot::Sender<()>,
}

/// Resolves when the [`Running`] that handed it out is dropped.
type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Binds a loopback port and runs `serve(listener, shutdown)` on it.
async fn start_with<F, Fut>(serve: F) -> Running
where
    F: FnOnce(TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        Box::pin(async move {
            let _ = stopped.await;
        }),
    ));
    Running { url, _stop: stop }
}

/// A stand-in for OPA whose Data API answers every POST with `answer`.
async fn fake_opa(answer: MethodRouter) -> Running {
    let router = axum::Router::new().route("/v1/data/{*path}", answer);
    start_with(|listener, shutdown| async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    })
    .await
}

/// `forge serve opa` as `forge up` runs it on loopback: anonymous callers are answered.
async fn start_opa(engine: Arc<EmbeddedEngine>) -> Running {
    start_served(engine, server::ServerConfig::new(None).anonymous(true)).await
}

/// The Data API over `engine`, answering whom `config` allows.
pub async fn start_served(engine: Arc<EmbeddedEngine>, config: server::ServerConfig) -> Running {
    start_with(|listener, shutdown| server::serve(listener, engine, config, shutdown)).await
}

/// `forge serve opa` with the bundled gates.
async fn start_bundled() -> Running {
    start_opa(Arc::new(EmbeddedEngine::bundled().unwrap())).await
}

/// The error `remote` answers a decision on `input` with.
async fn refusal(remote: &RemoteEngine, policy: PolicyName, input: Value) -> PolicyError {
    remote.decide(policy, &input).await.unwrap_err()
}

/// Asserts that a decision against `remote` is unavailable within `limit`.
async fn assert_unavailable_within(
    remote: &RemoteEngine,
    policy: PolicyName,
    limit: Duration,
) -> PolicyError {
    let started = Instant::now();
    let err = refusal(remote, policy, json!({})).await;
    assert!(matches!(err, PolicyError::Unavailable { .. }), "{err}");
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());
    err
}

async fn post(url: &str, body: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

async fn get(url: &str) -> (StatusCode, Value) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn runbook_check_answers_true() {
    let opa = start_bundled().await;
    // Verbatim from the spec's Operations Runbook ("Check OPA Policy").
    let body = r#"{"input": {"metadata": {"labels": ["class:netplus"]}, "limits": {"attacker_max_exploits": 0}, "network": {"egress": "deny"}}}"#;
    let url = format!("{}/v1/data/frostgate/forge/training/allow", opa.url);
    let (status, answer) = post(&url, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"result": true}));

    // curl -d without -H sends a form content type; the API does not care.
    let resp = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"result": true}));

    let denied = body.replace("\"deny\"", "\"allowlist\"");
    assert_eq!(post(&url, &denied).await.1, json!({"result": false}));
}

#[tokio::test]
async fn data_api_shapes() {
    let opa = start_bundled().await;
    let base = &opa.url;

    // A package query is a decision: the outputs, with reasons.
    let (status, answer) = post(
        &format!("{base}/v1/data/frostgate/forge/training"),
        r#"{"input": {"metadata": {"labels": ["class:netplus"]}, "limits": {"attacker_max_exploits": 2}, "network": {"egress": "deny"}}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["result"]["allow"], json!(false));
    assert_eq!(
        answer["result"]["deny_reasons"],
        json!(["limits.attacker_max_exploits 2 exceeds the netplus limit of 0"])
    );

    // Any other document is a plain query; GET has no input.
    let (status, answer) = get(&format!(
        "{base}/v1/data/frostgate/forge/training/track_rules/netplus/cpu"
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"result": 2}));

    // Undefined is an empty object, as in OPA.
    assert_eq!(
        get(&format!("{base}/v1/data/no/such/doc")).await.1,
        json!({})
    );

    // The whole data tree hides the generated helper modules.
    let (_, answer) = post(&format!("{base}/v1/data"), r#"{"input": {}}"#).await;
    assert!(answer["result"]["frostgate"]["forge"]["training"].is_object());
    assert!(answer["result"].get("forge_internal").is_none());

    let (status, answer) = get(&format!("{base}/v1/policies")).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = answer["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert!(ids.contains(&"policies/training_gate.rego"));
    assert!(
        answer["result"][0]["raw"]
            .as_str()
            .unwrap()
            .contains("package frostgate.forge")
    );

    assert_eq!(
        get(&format!("{base}/health")).await,
        (
            StatusCode::OK,
            json!({"status": "ok", "service": "forge_opa"})
        )
    );
}

#[tokio::test]
async fn bad_requests_are_400_never_500() {
    let opa = start_bundled().await;
    let url = format!("{}/v1/data/frostgate/forge/training/allow", opa.url);
    for body in [
        "{not json",
        // Only an empty body is a query without input: whitespace alone is not a JSON body.
        " ",
        "\n\t",
        "[1, 2]",
        "\"input\"",
        r#"{"input": 5}"#,
        r#"{"input": [1]}"#,
    ] {
        let (status, answer) = post(&url, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["code"], "invalid_parameter", "{body}");
        assert!(!answer["message"].as_str().unwrap().is_empty());
    }
    // Hostile but well-formed input is a deny with reasons, not an error.
    let (status, answer) = post(
        &format!("{}/v1/data/frostgate/forge/training", opa.url),
        r#"{"input": {"metadata": 1, "limits": "x", "network": [], "assets": {"containers": {"a": 1}}}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"]["allow"], json!(false));
}

#[tokio::test]
async fn remote_decides_like_embedded() {
    let embedded = Arc::new(EmbeddedEngine::bundled().unwrap());
    let opa = start_opa(embedded.clone()).await;
    let remote = RemoteEngine::new(&opa.url).unwrap();
    remote.check().await.unwrap();
    let as_trait: Arc<dyn PolicyEngine> = Arc::new(remote.clone());
    assert_eq!(as_trait.backend(), "remote");
    let via_trait = as_trait
        .decide(PolicyName::TrainingGate, &crate::common::netplus_template())
        .await
        .unwrap();
    assert!(via_trait.allow);
    for (policy, input) in gate_cases() {
        let local = embedded.decide(policy, &input).unwrap();
        let far = remote.decide(policy, &input).await.unwrap();
        assert_eq!(far.allow, local.allow, "{policy} {input}");
        assert_eq!(far.deny_reasons, local.deny_reasons, "{policy} {input}");
        assert_eq!(far.extra, local.extra, "{policy} {input}");
        assert_eq!(far.input_hash, local.input_hash);
        assert_eq!(far.policy, local.policy);
        assert!(uuid::Uuid::parse_str(&far.decision_id).is_ok());
    }
}

#[tokio::test]
async fn remote_reports_a_missing_package_and_bad_input() {
    let spec_only = EmbeddedEngine::builder()
        .without_bundled()
        .policy(
            "t.rego",
            "package frostgate.forge.training\nimport rego.v1\nallow if true\n",
        )
        .build()
        .unwrap();
    let opa = start_opa(Arc::new(spec_only)).await;
    let remote = RemoteEngine::new(&format!("{}/", opa.url)).unwrap();
    let err = refusal(&remote, PolicyName::SpawnGate, json!({})).await;
    assert!(matches!(err, PolicyError::NotLoaded { .. }), "{err}");
    let ok = remote
        .decide(PolicyName::TrainingGate, &json!({}))
        .await
        .unwrap();
    assert!(ok.allow && ok.deny_reasons.is_empty());
    let err = refusal(&remote, PolicyName::TrainingGate, json!([])).await;
    assert!(matches!(err, PolicyError::InvalidInput(_)), "{err}");
    // The endpoint is live but not ready: the services' gates are missing.
    let (status, ready) = get(&format!("{}/ready", opa.url)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["error"]["code"], "not_ready", "{ready}");
    let why = ready["checks"]["policy"].as_str().unwrap();
    assert!(why.contains("spawn_gate is not loaded"), "{ready}");
}

#[tokio::test]
async fn unreachable_opa_is_unavailable_quickly() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let remote = RemoteEngine::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let err =
        assert_unavailable_within(&remote, PolicyName::TrainingGate, Duration::from_secs(1)).await;
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn slow_and_failing_opa_is_unavailable() {
    let slow = fake_opa(post_answer(|| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        "{}"
    }))
    .await;
    let remote = RemoteEngine::new(&slow.url)
        .unwrap()
        .with_timeout(Duration::from_millis(200));
    assert_unavailable_within(&remote, PolicyName::SpawnGate, Duration::from_secs(2)).await;

    // A server error or a body that is not a decision: OPA is as good as down.
    // (its answer, what the error must say)
    for (answer, says) in [
        (
            post_answer(|| async { (StatusCode::SERVICE_UNAVAILABLE, "overloaded") }),
            Some("overloaded"),
        ),
        (post_answer(|| async { "<html>proxy error</html>" }), None),
    ] {
        let failing = fake_opa(answer).await;
        let remote = RemoteEngine::new(&failing.url).unwrap();
        let err = refusal(&remote, PolicyName::SpawnGate, json!({})).await;
        assert!(matches!(err, PolicyError::Unavailable { .. }), "{err}");
        if let Some(says) = says {
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    let refusing = fake_opa(post_answer(|| async {
        (StatusCode::BAD_REQUEST, r#"{"code":"invalid_parameter"}"#)
    }))
    .await;
    let remote = RemoteEngine::new(&refusing.url).unwrap();
    let err = refusal(&remote, PolicyName::SpawnGate, json!({})).await;
    assert!(
        matches!(err, PolicyError::Rejected { status: 400, .. }),
        "{err}"
    );
}

#[test]
fn invalid_opa_urls_are_rejected() {
    for url in ["", "not a url", "ftp://opa:8181"] {
        let err = RemoteEngine::new(url).unwrap_err();
        assert!(
            matches!(err, PolicyError::InvalidUrl { .. }),
            "{url}: {err}"
        );
    }
}

#[tokio::test]
async fn policy_config_builds_either_backend() {
    use forge_core::audit::NullAuditSink;
    use forge_policy::PolicyConfig;

    let embedded = PolicyConfig::default()
        .build(Arc::new(NullAuditSink), "test")
        .unwrap();
    assert_eq!(embedded.backend(), "embedded");
    embedded.check().await.unwrap();
    let d = embedded
        .decide(PolicyName::TrainingGate, &crate::common::netplus_template())
        .await
        .unwrap();
    assert!(d.allow);

    let remote = PolicyConfig {
        opa_url: Some("http://127.0.0.1:9".into()),
        ..PolicyConfig::default()
    }
    .build(Arc::new(NullAuditSink), "test")
    .unwrap();
    assert_eq!(remote.backend(), "remote");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_opa_shape() {
    let opa = start_bundled().await;
    let (status, answer) = get(&format!("{}/v2/nothing", opa.url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["code"], "resource_not_found", "{answer}");
    assert!(answer.get("error").is_none(), "{answer}");

    let resp = reqwest::Client::new()
        .delete(format!("{}/v1/policies", opa.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["code"], "method_not_allowed", "{answer}");
    assert!(answer["message"].is_string(), "{answer}");
}

#[tokio::test]
async fn common_routes_and_request_ids() {
    let opa = start_bundled().await;
    let (status, doc) = get(&format!("{}/openapi.json", opa.url)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/v1/data/{path}"]["post"].is_object(), "{doc}");
    let resp = reqwest::get(format!("{}/metrics", opa.url)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, ready) = get(&format!("{}/ready", opa.url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ready,
        json!({"status": "ready", "checks": {"policy": "ok"}})
    );

    let resp = reqwest::Client::new()
        .get(format!("{}/v1/data/no/such/doc", opa.url))
        .header("x-request-id", "opa-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "opa-req-1");
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({}));
}
