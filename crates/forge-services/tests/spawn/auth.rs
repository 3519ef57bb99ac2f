//! The JWT matrix over real HTTP: every way a token can be wrong → 401; valid token without
//! tenant or role → 403; never a 500.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::body;
use crate::support::{ED, Harness, Keys, Options, RSA_A, RSA_A_PUB, RSA_B};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({"sub": "alice", "tenant_id": "demo", "roles": ["forge.spawn"],
           "iss": "forge-local", "aud": "forge", "exp": now() + 600, "iat": now()})
}

fn set(mut c: Value, k: &str, v: Value) -> Value {
    if v.is_null() {
        c.as_object_mut().unwrap().remove(k);
    } else {
        c[k] = v;
    }
    c
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, c: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, c, key).unwrap()
}

async fn status_and_code(h: &Harness, authorization: Option<&str>, rid: &str) -> (u16, String) {
    let mut req = h
        .client
        .post(format!("{}/v1/spawn", h.base))
        .json(&body("netplus", rid));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let r = h.send(req).await;
    let code = if r.status.is_success() {
        "ok".to_owned()
    } else {
        r.code()
    };
    if r.status == 401 {
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "401 must carry WWW-Authenticate: {:?}",
            r.headers
        );
    }
    (r.status.as_u16(), code)
}

#[tokio::test]
async fn local_hs256_matrix() {
    let h = Harness::start(Options::default()).await;
    let secret = forge_auth::load_or_create_hs256_secret(h.dir.path()).unwrap();
    let hs = |c: &Value| {
        sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(&secret),
            c,
        )
    };
    let rs = sign(
        Algorithm::RS256,
        Some("rsa-a"),
        &EncodingKey::from_rsa_pem(RSA_A.as_bytes()).unwrap(),
        &claims(),
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        (
            "valid",
            Some(format!("Bearer {}", hs(&claims()))),
            201,
            "ok",
        ),
        ("no header", None, 401, "missing_token"),
        (
            "basic scheme",
            Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l".into()),
            401,
            "malformed_authorization",
        ),
        (
            "bearer without token",
            Some("Bearer".into()),
            401,
            "malformed_authorization",
        ),
        (
            "garbage token",
            Some("Bearer not.a-jwt".into()),
            401,
            "malformed_token",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                hs(&set(claims(), "exp", json!(now() - 120)))
            )),
            401,
            "token_expired",
        ),
        (
            "nbf in future",
            Some(format!(
                "Bearer {}",
                hs(&set(claims(), "nbf", json!(now() + 300)))
            )),
            401,
            "token_not_yet_valid",
        ),
        (
            "wrong iss",
            Some(format!(
                "Bearer {}",
                hs(&set(claims(), "iss", json!("evil")))
            )),
            401,
            "invalid_issuer",
        ),
        (
            "wrong aud",
            Some(format!(
                "Bearer {}",
                hs(&set(claims(), "aud", json!("other")))
            )),
            401,
            "invalid_audience",
        ),
        (
            "no exp",
            Some(format!("Bearer {}", hs(&set(claims(), "exp", Value::Null)))),
            401,
            "invalid_claims",
        ),
        (
            "roles not a list",
            Some(format!(
                "Bearer {}",
                hs(&set(claims(), "roles", json!("forge.spawn")))
            )),
            401,
            "invalid_claims",
        ),
        (
            "alg none",
            Some(format!("Bearer {none}")),
            401,
            "unsupported_algorithm",
        ),
        (
            "bad signature",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    None,
                    &EncodingKey::from_secret(b"not-the-secret-not-the-secret-!!"),
                    &claims()
                )
            )),
            401,
            "invalid_signature",
        ),
        (
            "rs256 where only hs256 is configured",
            Some(format!("Bearer {rs}")),
            401,
            "unsupported_algorithm",
        ),
        (
            "missing tenant_id",
            Some(format!(
                "Bearer {}",
                hs(&set(claims(), "tenant_id", Value::Null))
            )),
            403,
            "missing_tenant",
        ),
        (
            "missing role",
            Some(format!(
                "Bearer {}",
                hs(&set(claims(), "roles", json!(["forge.score.read"])))
            )),
            403,
            "missing_role",
        ),
        (
            "no roles at all",
            Some(format!(
                "Bearer {}",
                hs(&set(claims(), "roles", Value::Null))
            )),
            403,
            "missing_role",
        ),
        (
            "unknown tenant",
            Some(format!(
                "Bearer {}",
                hs(&set(claims(), "tenant_id", json!("initech")))
            )),
            403,
            "unknown_tenant",
        ),
    ];
    for (i, (name, auth, status, code)) in cases.into_iter().enumerate() {
        let got = status_and_code(&h, auth.as_deref(), &format!("auth-{i}")).await;
        assert_eq!(got, (status, code.to_owned()), "{name}");
    }
    h.stop().await;
}

#[tokio::test]
async fn jwks_matrix_and_hs_rs_confusion() {
    let h = Harness::start(Options {
        keys: Keys::Jwks,
        ..Options::default()
    })
    .await;
    let a = EncodingKey::from_rsa_pem(RSA_A.as_bytes()).unwrap();
    let b = EncodingKey::from_rsa_pem(RSA_B.as_bytes()).unwrap();
    let ed = EncodingKey::from_ed_pem(ED.as_bytes()).unwrap();
    let pub_as_hmac = EncodingKey::from_secret(RSA_A_PUB.as_bytes());
    let local = forge_auth::LocalIssuer::load_or_create(h.dir.path(), "forge-local", "forge")
        .unwrap()
        .mint(
            "demo",
            &["forge.spawn".into()],
            "alice",
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "rs256 valid",
            sign(Algorithm::RS256, Some("rsa-a"), &a, &claims()),
            201,
            "ok",
        ),
        (
            "eddsa valid",
            sign(Algorithm::EdDSA, Some("ed-1"), &ed, &claims()),
            201,
            "ok",
        ),
        (
            "hs256 signed with the rsa public key",
            sign(Algorithm::HS256, Some("rsa-a"), &pub_as_hmac, &claims()),
            401,
            "unsupported_algorithm",
        ),
        (
            "local hs256 token on a jwks-only service",
            local,
            401,
            "unsupported_algorithm",
        ),
        (
            "unknown kid",
            sign(Algorithm::RS256, Some("rotated-away"), &b, &claims()),
            401,
            "unknown_kid",
        ),
        (
            "bad signature",
            sign(Algorithm::RS256, Some("rsa-a"), &b, &claims()),
            401,
            "invalid_signature",
        ),
        (
            "no kid",
            sign(Algorithm::RS256, None, &a, &claims()),
            401,
            "missing_kid",
        ),
        (
            "rsa token naming the ed key",
            sign(Algorithm::RS256, Some("ed-1"), &a, &claims()),
            401,
            "algorithm_mismatch",
        ),
        (
            "expired",
            sign(
                Algorithm::RS256,
                Some("rsa-a"),
                &a,
                &set(claims(), "exp", json!(now() - 100)),
            ),
            401,
            "token_expired",
        ),
        (
            "missing tenant",
            sign(
                Algorithm::RS256,
                Some("rsa-a"),
                &a,
                &set(claims(), "tenant_id", Value::Null),
            ),
            403,
            "missing_tenant",
        ),
    ];
    for (i, (name, token, status, code)) in cases.into_iter().enumerate() {
        let got = status_and_code(&h, Some(&format!("Bearer {token}")), &format!("jwks-{i}")).await;
        assert_eq!(got, (status, code.to_owned()), "{name}");
    }
    h.stop().await;
}

#[tokio::test]
async fn health_metrics_and_openapi_need_no_token() {
    let h = Harness::start(Options::default()).await;
    let r = h.send(h.client.get(format!("{}/health", h.base))).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"status": "ok", "service": "forge_spawn_service"})
    );
    let t = h.spawner("demo");
    assert_eq!(h.spawn(&t, &body("netplus", "m1"), &[]).await.status, 201);
    let m = h.send(h.client.get(format!("{}/metrics", h.base))).await;
    assert_eq!(m.status, 200);
    assert!(m.text.contains("forge_spawn_requests_total"), "{}", m.text);
    assert!(
        m.text.contains("forge_spawn_duration_seconds_bucket"),
        "histogram, not summary"
    );
    let doc = h
        .send(h.client.get(format!("{}/openapi.json", h.base)))
        .await
        .json();
    assert!(doc["paths"]["/v1/spawn"]["post"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    h.stop().await;
}
