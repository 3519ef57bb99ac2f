//! Who the Data API answers, what it audits, and how long it evaluates: anonymous callers are
//! refused (401, no evaluation, no audit record) unless the endpoint is a loopback one in local
//! mode; tokens with a query role are answered and audited; a slow policy is cut off at the
//! deadline in OPA's error shape while the server keeps answering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use forge_auth::{AuthConfig, LocalIssuer, Verifier};
use forge_core::audit::MemoryAuditSink;
use forge_policy::server::ServerConfig;
use forge_policy::{EmbeddedEngine, MintedToken, PolicyError, PolicyName, RemoteEngine};
use serde_json::{Value, json};

use crate::remote::{Running, start_served};

const SECRET: [u8; 32] = [42; 32];
const ALLOW: &str = "/v1/data/frostgate/forge/training/allow";
const RUNBOOK_INPUT: &str = r#"{"input": {"metadata": {"labels": ["class:netplus"]}, "limits": {"attacker_max_exploits": 0}, "network": {"egress": "deny"}}}"#;

fn verifier() -> Arc<Verifier> {
    Arc::new(Verifier::new(&AuthConfig {
        issuer: "forge-local".into(),
        audience: "forge".into(),
        leeway: Duration::from_secs(30),
        hs256_secret: Some(SECRET.to_vec()),
        jwks: None,
    }))
}

fn issuer() -> LocalIssuer {
    LocalIssuer::from_secret(&SECRET, "forge-local", "forge")
}

fn token(roles: &[&str], sub: &str) -> String {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    issuer()
        .mint("demo", &roles, sub, Duration::from_secs(600))
        .unwrap()
}

/// The bundled gates, auditing into the returned sink.
fn audited_engine() -> (Arc<EmbeddedEngine>, Arc<MemoryAuditSink>) {
    let sink = Arc::new(MemoryAuditSink::default());
    let engine = EmbeddedEngine::builder()
        .audit(sink.clone(), "forge_opa")
        .build()
        .unwrap();
    (Arc::new(engine), sink)
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(opa: &Running, path: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
    call(
        reqwest::Method::POST,
        &format!("{}{path}", opa.url),
        token,
        Some(body),
    )
    .await
}

#[tokio::test]
async fn anonymous_and_learner_queries_are_refused_and_not_audited() {
    let (engine, audit) = audited_engine();
    let opa = start_served(engine, ServerConfig::new(Some(verifier()))).await;

    let (status, answer) = post(&opa, ALLOW, None, RUNBOOK_INPUT).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["code"], "missing_token", "OPA's shape: {answer}");
    assert!(answer["message"].is_string() && answer.get("error").is_none());
    let (status, _) = call(
        reqwest::Method::GET,
        &format!("{}/v1/policies", opa.url),
        None,
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "policy sources are not public"
    );

    let (status, answer) = post(&opa, ALLOW, Some("not-a-jwt"), RUNBOOK_INPUT).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let learner = token(&["forge.spawn", "forge.score.read"], "alice");
    let (status, answer) = post(&opa, ALLOW, Some(&learner), RUNBOOK_INPUT).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["code"], "missing_role", "{answer}");

    // A flood of refused queries leaves the signed audit log as it was.
    for _ in 0..50 {
        post(&opa, ALLOW, None, RUNBOOK_INPUT).await;
    }
    assert!(audit.events().is_empty(), "{:?}", audit.events());

    // Probes and scrapes stay open.
    for path in ["/health", "/ready", "/metrics", "/openapi.json"] {
        let resp = reqwest::get(format!("{}{path}", opa.url)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn callers_with_a_query_role_are_answered_and_audited_as_themselves() {
    let (engine, audit) = audited_engine();
    let opa = start_served(engine, ServerConfig::new(Some(verifier()))).await;
    for (role, sub) in [
        ("forge.observer", "grafana"),
        ("forge.instructor", "teacher"),
        ("forge.orchestrator", "automation"),
    ] {
        let t = token(&[role], sub);
        let (status, answer) = post(&opa, ALLOW, Some(&t), RUNBOOK_INPUT).await;
        assert_eq!((status, answer), (StatusCode::OK, json!({"result": true})));
        let decisions = audit.events();
        let last = decisions.last().expect("the decision is audited");
        assert_eq!(last.event_type, "policy.decision");
        assert_eq!(last.actor, sub);
    }
    let t = token(&["forge.observer"], "grafana");
    let (status, answer) = call(
        reqwest::Method::GET,
        &format!("{}/v1/policies", opa.url),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // The platform's remote engine: with its own minted tokens, with a configured token, and
    // without one (no gate can be decided: unavailable, naming the credentials).
    let minted = RemoteEngine::new(&opa.url)
        .unwrap()
        .with_token_source(Arc::new(MintedToken::new(issuer(), "forge_spawn_service")));
    let d = minted
        .decide(PolicyName::TrainingGate, &crate::common::netplus_template())
        .await
        .unwrap();
    assert!(d.allow);
    assert_eq!(audit.events().last().unwrap().actor, "forge_spawn_service");
    let configured = RemoteEngine::new(&opa.url)
        .unwrap()
        .with_token(token(&["forge.orchestrator"], "ops"));
    assert!(
        configured
            .decide(PolicyName::TrainingGate, &crate::common::netplus_template())
            .await
            .unwrap()
            .allow
    );
    let without = RemoteEngine::new(&opa.url).unwrap();
    let err = without
        .decide(PolicyName::TrainingGate, &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, PolicyError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("credentials"), "{err}");
}

#[tokio::test]
async fn anonymous_callers_on_loopback_are_answered_but_not_audited() {
    let (engine, audit) = audited_engine();
    let opa = start_served(engine, ServerConfig::new(Some(verifier())).anonymous(true)).await;
    for _ in 0..20 {
        let (status, answer) = post(&opa, ALLOW, None, RUNBOOK_INPUT).await;
        assert_eq!((status, answer), (StatusCode::OK, json!({"result": true})));
    }
    assert!(audit.events().is_empty(), "{:?}", audit.events());
    // A token is still judged: a bad one is not downgraded to anonymous.
    let (status, _) = post(&opa, ALLOW, Some("garbage"), RUNBOOK_INPUT).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A rule that loops `input.n`² times: milliseconds for small n, far past any deadline for
/// large n.
const SLOW_POLICY: &str = r#"package ops.slow
import rego.v1

answer := count([x |
    some x in numbers.range(1, input.n)
    some y in numbers.range(1, input.n)
    x == y
])
"#;

#[tokio::test]
async fn a_slow_policy_is_cut_off_at_the_deadline_in_opa_shape() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slow.rego"), SLOW_POLICY).unwrap();
    let engine = EmbeddedEngine::builder()
        .operator_dir(dir.path())
        .eval_timeout(Some(Duration::from_secs(3)))
        .build()
        .unwrap();
    let opa = start_served(
        Arc::new(engine),
        ServerConfig::new(None)
            .anonymous(true)
            .deadline(Duration::from_millis(300)),
    )
    .await;

    let (status, answer) = post(
        &opa,
        "/v1/data/ops/slow/answer",
        None,
        r#"{"input": {"n": 5}}"#,
    )
    .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"result": 5})));

    let url = format!("{}/v1/data/ops/slow/answer", opa.url);
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let answer = call(
            reqwest::Method::POST,
            &url,
            None,
            Some(r#"{"input": {"n": 100000}}"#),
        )
        .await;
        (answer, started.elapsed())
    });
    // While it evaluates, the server's async workers are free: probes answer at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let resp = reqwest::get(format!("{}/health", opa.url)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    let ((status, answer), took) = slow.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["code"], "evaluation_timeout", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("300 ms"),
        "{answer}"
    );
    assert!(answer.get("error").is_none(), "OPA's shape: {answer}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// The served document says who may query: a bearer token, and no token at all only where the
/// endpoint answers anonymous callers; a query's body is optional.
#[tokio::test]
async fn the_document_says_whether_a_token_is_needed() {
    for anonymous in [false, true] {
        let (engine, _) = audited_engine();
        let config = ServerConfig::new(Some(verifier())).anonymous(anonymous);
        let opa = start_served(engine, config).await;
        let (status, doc) = call(
            reqwest::Method::GET,
            &format!("{}/openapi.json", opa.url),
            None,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let want = if anonymous {
            json!([{"bearer": []}, {}])
        } else {
            json!([{"bearer": []}])
        };
        for (path, method) in [
            ("/v1/data", "get"),
            ("/v1/data", "post"),
            ("/v1/data/{path}", "get"),
            ("/v1/data/{path}", "post"),
            ("/v1/policies", "get"),
        ] {
            let op = &doc["paths"][path][method];
            assert_eq!(
                op["security"], want,
                "anonymous {anonymous}: {method} {path}"
            );
            if method == "post" {
                assert_eq!(op["requestBody"]["required"], false, "{path}");
            }
        }
        let (status, answer) = call(
            reqwest::Method::POST,
            &format!("{}/v1/data/frostgate/forge/training/allow", opa.url),
            Some(&token(&["forge.observer"], "grafana")),
            None,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "no body is a query without input: {answer}"
        );
    }
}
