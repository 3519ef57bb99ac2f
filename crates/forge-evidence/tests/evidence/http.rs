//! The `/audit/...` routes served by the real router on an ephemeral loopback port.

use std::path::Path;
use std::sync::Arc;

use forge_core::audit::{AuditEvent, Outcome};
use forge_evidence::audit_log::AuditLog;
use forge_evidence::http::{AuditHttpState, audit_router};
use forge_evidence::keyring::{KeyPurpose, Keyring, key_id_for};
use serde_json::Value;

use crate::common::{Keys, at};

/// Serves the audit routes over `log`, with the keyrings of `data_dir`; returns the base URL.
async fn serve(data_dir: &Path, log: Arc<AuditLog>) -> String {
    let state = AuditHttpState {
        data_dir: data_dir.to_owned(),
        log,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, audit_router(state)).await.unwrap() });
    format!("http://{addr}")
}

/// Serves a fresh audit log whose routes read the keyrings under `keyrings` (not the log's own);
/// returns the log's keys, whose temp dir must outlive the test, and the base URL.
async fn serve_fresh_log(keyrings: &Path) -> (Keys, String) {
    let keys = Keys::new(KeyPurpose::Audit);
    let log = keys.open_log(&keys.dir.path().join("audit.jsonl")).unwrap();
    let base = serve(keyrings, Arc::new(log)).await;
    (keys, base)
}

async fn get(url: String) -> (u16, Value) {
    let resp = reqwest::get(&url).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Asserts an error answer: `status`, the JSON error `code`, empty details and some message.
fn assert_error(resp: &(u16, Value), status: u16, code: &str) {
    assert_eq!(resp.0, status, "{resp:?}");
    assert_eq!(resp.1["error"]["code"], code, "{resp:?}");
    assert_eq!(
        resp.1["error"]["details"],
        serde_json::json!({}),
        "{resp:?}"
    );
    assert!(
        resp.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{resp:?}"
    );
}

/// Asserts the error answer of each `(path, status, code)` under `base`.
async fn assert_errors(base: &str, cases: &[(&str, u16, &str)]) {
    for &(path, status, code) in cases {
        assert_error(&get(format!("{base}/{path}")).await, status, code);
    }
}

/// The record of key `id`, which must be `status`.
async fn key_with_status(base: &str, id: &str, status: &str) -> Value {
    let (code, key) = get(format!("{base}/audit/keys/{id}")).await;
    assert_eq!((code, &key["status"]), (200, &Value::from(status)), "{key}");
    key
}

#[tokio::test]
async fn audit_key_and_signature_routes() {
    let keys = Keys::new(KeyPurpose::Audit);
    let log = Arc::new(
        keys.open_log(&AuditLog::default_path(keys.dir.path()))
            .unwrap(),
    );
    let event = AuditEvent::new(
        at(0),
        "spawn.request",
        "forge_spawn_service",
        "scn-000000000001",
        "create",
        Outcome::Success,
    );
    let logged = log.append(event.clone()).unwrap();
    let base = serve(keys.dir.path(), log.clone()).await;

    let (status, current) = get(format!("{base}/audit/keys/current")).await;
    assert_eq!(status, 200, "{current}");
    assert_eq!(current["key_id"], keys.signer.key_id());
    assert_eq!(current["algorithm"], "ed25519");
    assert!(current["created_at"].is_string());
    let pem = current["public_key_pem"].as_str().unwrap();
    let source = forge_evidence::KeySource::from_pem(pem).unwrap();
    assert_eq!(source.key_ids(), [keys.signer.key_id().to_owned()]);

    let (status, sig) = get(format!("{base}/audit/events/{}/signature", event.event_id)).await;
    assert_eq!(status, 200, "{sig}");
    assert_eq!(
        sig,
        serde_json::json!({"event_id": event.event_id, "key_id": logged.key_id, "signature": logged.signature})
    );

    // Rotate and revoke in "another process": the routes see it at once.
    let old = keys.signer.key_id().to_owned();
    let mut ring = Keyring::open(keys.dir.path(), KeyPurpose::Audit).unwrap();
    let new = ring.rotate().unwrap();
    let (_, current) = get(format!("{base}/audit/keys/current")).await;
    assert_eq!(current["key_id"], new.key_id);
    let retired = key_with_status(&base, &old, "retired").await;
    assert!(retired["valid_until"].is_string(), "{retired}");
    let retired_pem = retired["public_key_pem"].as_str().unwrap();
    let retired_key =
        ed25519_dalek::pkcs8::DecodePublicKey::from_public_key_pem(retired_pem).unwrap();
    assert_eq!(key_id_for(&retired_key), old);

    ring.revoke(&new.key_id).unwrap();
    let (_, current) = get(format!("{base}/audit/keys/current")).await;
    assert_ne!(
        current["key_id"], new.key_id,
        "a revoked key is never current"
    );
    let revoked = key_with_status(&base, &new.key_id, "revoked").await;
    assert!(revoked["revoked_at"].is_string());

    assert_errors(
        &base,
        &[
            ("audit/keys/ed25519-0000000000000000", 404, "unknown_key"),
            ("audit/keys/not-a-key", 400, "invalid_key_id"),
            ("audit/keys/ED25519-%20x", 400, "invalid_key_id"),
            ("audit/events/nope/signature", 404, "unknown_event"),
            // Segments that do not decode to UTF-8 are bad ids too, not routing failures.
            ("audit/keys/%FF%FE", 400, "invalid_key_id"),
            ("audit/events/%C3%28/signature", 400, "invalid_event_id"),
        ],
    )
    .await;
    // An event id is 1-256 characters, as documented, not bytes.
    let e256 = "%C3%A9".repeat(256);
    let e257 = "%C3%A9".repeat(257);
    assert_errors(
        &base,
        &[
            (
                &format!("audit/events/{e256}/signature"),
                404,
                "unknown_event",
            ),
            (
                &format!("audit/events/{e257}/signature"),
                400,
                "invalid_event_id",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn no_active_key_is_a_json_404() {
    // An empty audit keyring directory elsewhere: nothing is active.
    let empty = tempfile::tempdir().unwrap();
    let (_keys, base) = serve_fresh_log(empty.path()).await;
    assert_errors(&base, &[("audit/keys/current", 404, "no_active_key")]).await;
}

#[tokio::test]
async fn an_unreadable_keyring_is_a_json_500_without_the_cause() {
    // A corrupt index elsewhere: reading the keyring fails, which is the platform's fault.
    let broken = tempfile::tempdir().unwrap();
    let dir = Keyring::dir_for(broken.path(), KeyPurpose::Audit);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keyring.json"), "{not json").unwrap();
    let (_keys, base) = serve_fresh_log(broken.path()).await;
    let resp = get(format!("{base}/audit/keys/current")).await;
    assert_error(&resp, 500, "internal");
    assert!(
        !resp.1.to_string().contains("keyring.json"),
        "the cause goes to the log, not the client: {resp:?}"
    );
}
