//! Token verification matrix, JWKS caching/refresh, the local secret, the local issuer and the
//! settings that choose between them. The same matrix over real HTTP lives in forge-services'
//! tests; `forge token mint` itself is tested in forge-cli's.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use forge_auth::{
    AuthConfig, AuthError, AuthSettings, JwksConfig, JwksSource, LocalIssuer, Verifier, secret_path,
};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const RSA_A: &str = include_str!("fixtures/rsa-a.pem");
const RSA_A_PUB: &str = include_str!("fixtures/rsa-a.pub.pem");
const RSA_B: &str = include_str!("fixtures/rsa-b.pem");
const ED: &str = include_str!("fixtures/ed25519.pem");
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({"sub": "alice", "tenant_id": "acme", "roles": ["forge.spawn"],
           "iss": "forge-local", "aud": "forge", "exp": now() + 600, "nbf": now() - 5})
}

fn with(mut c: Value, k: &str, v: Value) -> Value {
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

fn hs(c: &Value) -> String {
    sign(Algorithm::HS256, None, &EncodingKey::from_secret(SECRET), c)
}

fn rs_a(c: &Value) -> String {
    let k = EncodingKey::from_rsa_pem(RSA_A.as_bytes()).unwrap();
    sign(Algorithm::RS256, Some("rsa-a"), &k, c)
}

fn jwk(pem: &str, alg: Algorithm, kid: &str) -> Jwk {
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    };
    let mut j = Jwk::from_encoding_key(&key, alg).unwrap();
    j.common.key_id = Some(kid.to_owned());
    j
}

fn jwks_json(keys: Vec<Jwk>) -> String {
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

fn local_verifier() -> Verifier {
    Verifier::new(&AuthConfig {
        issuer: "forge-local".into(),
        audience: "forge".into(),
        leeway: Duration::from_secs(30),
        hs256_secret: Some(SECRET.to_vec()),
        jwks: None,
    })
}

fn jwks_file_verifier(dir: &tempfile::TempDir, extra: Vec<Value>) -> Verifier {
    let mut doc: Value = serde_json::from_str(&jwks_json(vec![
        jwk(RSA_A, Algorithm::RS256, "rsa-a"),
        jwk(ED, Algorithm::EdDSA, "ed-1"),
    ]))
    .unwrap();
    doc["keys"].as_array_mut().unwrap().extend(extra);
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    Verifier::new(&AuthConfig {
        issuer: "forge-local".into(),
        audience: "forge".into(),
        leeway: Duration::from_secs(30),
        hs256_secret: None,
        jwks: Some(JwksConfig::new(JwksSource::File(path))),
    })
}

#[tokio::test]
async fn local_hs256_matrix() {
    let v = local_verifier();
    let ok = v.verify(&hs(&claims())).await.unwrap();
    assert_eq!(
        (ok.sub.as_str(), ok.tenant_id.as_deref()),
        ("alice", Some("acme"))
    );

    let cases: Vec<(&str, String, AuthError)> = vec![
        (
            "expired",
            hs(&with(claims(), "exp", json!(now() - 120))),
            AuthError::Expired,
        ),
        (
            "nbf future",
            hs(&with(claims(), "nbf", json!(now() + 120))),
            AuthError::NotYetValid,
        ),
        (
            "wrong iss",
            hs(&with(claims(), "iss", json!("evil"))),
            AuthError::InvalidIssuer("forge-local".into()),
        ),
        (
            "wrong aud",
            hs(&with(claims(), "aud", json!(["other"]))),
            AuthError::InvalidAudience("forge".into()),
        ),
        (
            "no sub",
            hs(&with(claims(), "sub", Value::Null)),
            AuthError::InvalidClaims("claim `sub` is required".into()),
        ),
        (
            "bad signature",
            sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(b"another-secret-another-secret!!"),
                &claims(),
            ),
            AuthError::InvalidSignature,
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(v.verify(&token).await.unwrap_err(), want, "{name}");
        assert_eq!(want.status(), 401, "{name}");
    }
    // Within the 30 s leeway a just-expired token still passes.
    v.verify(&hs(&with(claims(), "exp", json!(now() - 10))))
        .await
        .unwrap();
    // An RS256 token where only the local secret is configured.
    let err = v.verify(&rs_a(&claims())).await.unwrap_err();
    assert!(
        matches!(err, AuthError::UnsupportedAlgorithm(ref a, _) if a == "RS256"),
        "{err}"
    );
    // Valid token, no tenant: 403.
    let no_tenant = hs(&with(claims(), "tenant_id", Value::Null));
    let err = v
        .authenticate(Some(&format!("Bearer {no_tenant}")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.clone(), err.status().as_u16()),
        (AuthError::MissingTenant, 403)
    );
    let caller = v
        .authenticate(Some(&format!("Bearer {}", hs(&claims()))))
        .await
        .unwrap();
    assert!(caller.require_role("forge.spawn").is_ok());
    assert_eq!(
        caller.require_role("forge.orchestrator"),
        Err(AuthError::MissingRole("forge.orchestrator".into()))
    );
}

#[tokio::test]
async fn jwks_matrix_including_hs_rs_confusion() {
    let dir = tempfile::tempdir().unwrap();
    // An `oct` key in a public JWKS must never become an HMAC secret.
    let oct = json!({"kty": "oct", "kid": "oct-1", "k": "c2VjcmV0", "alg": "HS256"});
    let v = jwks_file_verifier(&dir, vec![oct]);
    assert_eq!(v.verify(&rs_a(&claims())).await.unwrap().sub, "alice");
    let ed = EncodingKey::from_ed_pem(ED.as_bytes()).unwrap();
    v.verify(&sign(Algorithm::EdDSA, Some("ed-1"), &ed, &claims()))
        .await
        .unwrap();

    // The classic confusion: HS256 "signed" with the RSA public key as HMAC secret.
    let pub_as_secret = EncodingKey::from_secret(RSA_A_PUB.as_bytes());
    for kid in [Some("rsa-a"), Some("oct-1"), None] {
        let forged = sign(Algorithm::HS256, kid, &pub_as_secret, &claims());
        let err = v.verify(&forged).await.unwrap_err();
        assert!(
            matches!(err, AuthError::UnsupportedAlgorithm(ref a, _) if a == "HS256"),
            "{err}"
        );
    }
    let b = EncodingKey::from_rsa_pem(RSA_B.as_bytes()).unwrap();
    let cases: Vec<(&str, String, AuthError)> = vec![
        (
            "unknown kid",
            sign(Algorithm::RS256, Some("nope"), &b, &claims()),
            AuthError::UnknownKey("nope".into()),
        ),
        (
            "bad signature",
            sign(Algorithm::RS256, Some("rsa-a"), &b, &claims()),
            AuthError::InvalidSignature,
        ),
        (
            "no kid",
            sign(Algorithm::RS256, None, &b, &claims()),
            AuthError::MissingKeyId,
        ),
        (
            "rsa alg on ed key",
            sign(Algorithm::RS256, Some("ed-1"), &b, &claims()),
            AuthError::AlgorithmMismatch {
                alg: "RS256".into(),
                kid: "ed-1".into(),
                expected: "EdDSA".into(),
            },
        ),
        (
            "other rsa alg than the jwk declares",
            sign(
                Algorithm::PS256,
                Some("rsa-a"),
                &EncodingKey::from_rsa_pem(RSA_A.as_bytes()).unwrap(),
                &claims(),
            ),
            AuthError::AlgorithmMismatch {
                alg: "PS256".into(),
                kid: "rsa-a".into(),
                expected: "RS256".into(),
            },
        ),
        (
            "expired",
            rs_a(&with(claims(), "exp", json!(now() - 300))),
            AuthError::Expired,
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(v.verify(&token).await.unwrap_err(), want, "{name}");
    }
}

/// A JWKS endpoint on loopback whose key set the test can rotate, counting fetches.
async fn jwks_server(doc: Arc<std::sync::Mutex<String>>, hits: Arc<AtomicUsize>) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let doc = doc.clone();
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let body = doc.lock().unwrap().clone();
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/jwks.json")
}

#[tokio::test]
async fn jwks_url_is_cached_and_refreshed_on_unknown_kid_at_most_once_per_interval() {
    let doc = Arc::new(std::sync::Mutex::new(jwks_json(vec![jwk(
        RSA_A,
        Algorithm::RS256,
        "rsa-a",
    )])));
    let hits = Arc::new(AtomicUsize::new(0));
    let url = jwks_server(doc.clone(), hits.clone()).await;
    let mut cfg = JwksConfig::new(JwksSource::Url(url));
    cfg.min_refresh_interval = Duration::from_millis(800);
    let v = Verifier::new(&AuthConfig {
        issuer: "forge-local".into(),
        audience: "forge".into(),
        leeway: Duration::from_secs(30),
        hs256_secret: None,
        jwks: Some(cfg),
    });
    for _ in 0..5 {
        v.verify(&rs_a(&claims())).await.unwrap();
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "cached after the first fetch"
    );

    // The IdP rotates in rsa-b. Right after a fetch, an unknown kid does not refetch...
    *doc.lock().unwrap() = jwks_json(vec![
        jwk(RSA_A, Algorithm::RS256, "rsa-a"),
        jwk(RSA_B, Algorithm::RS256, "rsa-b"),
    ]);
    let b = EncodingKey::from_rsa_pem(RSA_B.as_bytes()).unwrap();
    let token_b = sign(Algorithm::RS256, Some("rsa-b"), &b, &claims());
    assert_eq!(
        v.verify(&token_b).await.unwrap_err(),
        AuthError::UnknownKey("rsa-b".into())
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // ...once the interval passed it refetches once and finds it.
    tokio::time::sleep(Duration::from_millis(900)).await;
    v.verify(&token_b).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // A flood of forged kids costs at most one fetch per interval.
    for i in 0..50 {
        let forged = sign(
            Algorithm::RS256,
            Some(&format!("forged-{i}")),
            &b,
            &claims(),
        );
        assert!(matches!(
            v.verify(&forged).await,
            Err(AuthError::UnknownKey(_))
        ));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(v.jwks_fetches(), 2);
}

#[tokio::test]
async fn unreachable_jwks_is_502_not_401() {
    // Bind then drop a listener: nothing listens on that loopback port afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v = Verifier::new(&AuthConfig {
        issuer: "forge-local".into(),
        audience: "forge".into(),
        leeway: Duration::from_secs(30),
        hs256_secret: None,
        jwks: Some(JwksConfig::new(JwksSource::Url(format!(
            "http://127.0.0.1:{port}/jwks"
        )))),
    });
    let err = v.verify(&rs_a(&claims())).await.unwrap_err();
    assert!(matches!(err, AuthError::KeysUnavailable(_)), "{err}");
    assert_eq!(err.status(), 502);
}

#[test]
fn secret_is_created_private_once_and_shared() {
    let dir = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let d = dir.path().to_owned();
            std::thread::spawn(move || forge_auth::load_or_create_hs256_secret(&d).unwrap())
        })
        .collect();
    let secrets: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        secrets.iter().all(|s| *s == secrets[0] && s.len() == 32),
        "one secret for all"
    );
    let path = secret_path(dir.path());
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1,
        "no temp files left"
    );
    assert_eq!(
        std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    for loose in [0o644, 0o640, 0o602] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
        let err = forge_auth::load_or_create_hs256_secret(dir.path())
            .unwrap_err()
            .to_string();
        let shown = path.display();
        assert!(
            err.contains(&shown.to_string())
                && err.contains(&format!("(mode 0{loose:o})"))
                && err.contains(&format!("run `chmod 600 {shown}`")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn local_issuer_tokens_pass_the_local_verifier_only() {
    let dir = tempfile::tempdir().unwrap();
    let roles = ["forge.spawn".to_owned(), "forge.score.read".to_owned()];
    let token = LocalIssuer::load_or_create(dir.path(), "forge-local", "forge")
        .unwrap()
        .mint(
            "demo",
            &roles,
            "demo-cli",
            forge_auth::parse_ttl("30m").unwrap(),
        )
        .unwrap();
    assert_eq!(token.split('.').count(), 3);
    let v = Verifier::new(&AuthConfig::local(dir.path()).unwrap());
    let caller = v
        .authenticate(Some(&format!("Bearer {token}")))
        .await
        .unwrap();
    assert_eq!(caller.tenant_id, "demo");
    assert_eq!(caller.sub, "demo-cli");
    assert_eq!(caller.roles, vec!["forge.spawn", "forge.score.read"]);
    let c = v.verify(&token).await.unwrap();
    assert!(c.exp - c.iat.unwrap() == 1800);
    // A token from another data dir's secret is refused.
    let other = tempfile::tempdir().unwrap();
    let foreign = LocalIssuer::load_or_create(other.path(), "forge-local", "forge")
        .unwrap()
        .mint(
            "demo",
            &["forge.spawn".into()],
            "x",
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(
        v.verify(&foreign).await.unwrap_err(),
        AuthError::InvalidSignature
    );
    let empty_tenant = LocalIssuer::load_or_create(dir.path(), "forge-local", "forge")
        .unwrap()
        .mint(" ", &roles, "x", Duration::from_secs(60));
    assert!(empty_tenant.unwrap_err().to_string().contains("tenant"));
}

#[test]
fn settings_choose_the_key_families() {
    let dir = tempfile::tempdir().unwrap();
    let local = AuthSettings::default().resolve(dir.path()).unwrap();
    assert!(local.hs256_secret.is_some() && local.jwks.is_none());
    assert_eq!(
        (local.issuer.as_str(), local.audience.as_str()),
        ("forge-local", "forge")
    );
    assert_eq!(local, AuthConfig::local(dir.path()).unwrap());

    let jwks = JwksConfig::new(JwksSource::Url("https://idp.example/jwks".into()));
    let prod = AuthSettings {
        issuer: "https://idp.example/".into(),
        jwks: Some(jwks.clone()),
        ..AuthSettings::default()
    };
    assert!(!prod.accepts_local_tokens());
    let prod = prod.resolve(dir.path()).unwrap();
    assert!(
        prod.hs256_secret.is_none(),
        "JWKS mode refuses local tokens unless asked"
    );
    assert_eq!(prod.issuer, "https://idp.example/");
    assert_eq!(prod.jwks, Some(jwks.clone()));

    let both = AuthSettings {
        jwks: Some(jwks),
        local_hs256: Some(true),
        ..AuthSettings::default()
    }
    .resolve(dir.path())
    .unwrap();
    assert!(both.hs256_secret.is_some() && both.jwks.is_some());
    let neither = AuthSettings {
        local_hs256: Some(false),
        ..AuthSettings::default()
    }
    .resolve(dir.path())
    .unwrap();
    assert!(neither.hs256_secret.is_none() && neither.jwks.is_none());

    assert!(!format!("{local:?}").contains(&hex_of(local.hs256_secret.as_deref().unwrap())));
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
