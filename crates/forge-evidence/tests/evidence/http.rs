//! The `/audit/...` routes served by the real router on an ephemeral loopback port.

use std::sync::Arc;

use forge_core::audit::{AuditEvent, Outcome};
use forge_evidence::audit_log::{AuditLog, AuditLogConfig};
use forge_evidence::http::{AuditHttpState, audit_router};
use forge_evidence::keyring::{KeyPurpose, Keyring, key_id_for};
use serde_json::Value;

use crate::common::{Keys, at};

async fn serve(state: AuditHttpState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, audit_router(state)).await.unwrap() });
    format!("http://{addr}")
}

async fn get(url: String) -> (u16, Value) {
    let resp = reqwest::get(&url).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

fn assert_error(resp: &(u16, Value), status: u16, code: &str) {
    assert_eq!(resp.0, status, "{resp:?}");
    assert_eq!(resp.1["error"]["code"], code, "{resp:?}");
    assert!(
        resp.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{resp:?}"
    );
}

#[tokio::test]
async fn audit_key_and_signature_routes() {
    let keys = Keys::new(KeyPurpose::Audit);
    let log_path = AuditLog::default_path(keys.dir.path());
    let log = Arc::new(
        AuditLog::open(
            &log_path,
            keys.signer.clone(),
            &keys.source(),
            AuditLogConfig::default(),
        )
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
    let base = serve(AuditHttpState {
        data_dir: keys.dir.path().to_owned(),
        log: log.clone(),
    })
    .await;

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
    let (status, retired) = get(format!("{base}/audit/keys/{old}")).await;
    assert_eq!(
        (status, &retired["status"]),
        (200, &Value::from("retired")),
        "{retired}"
    );
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
    let (status, revoked) = get(format!("{base}/audit/keys/{}", new.key_id)).await;
    assert_eq!(
        (status, &revoked["status"]),
        (200, &Value::from("revoked")),
        "{revoked}"
    );
    assert!(revoked["revoked_at"].is_string());

    assert_error(
        &get(format!("{base}/audit/keys/ed25519-0000000000000000")).await,
        404,
        "unknown_key",
    );
    assert_error(
        &get(format!("{base}/audit/keys/not-a-key")).await,
        400,
        "invalid_key_id",
    );
    assert_error(
        &get(format!("{base}/audit/keys/ED25519-%20x")).await,
        400,
        "invalid_key_id",
    );
    assert_error(
        &get(format!("{base}/audit/events/nope/signature")).await,
        404,
        "unknown_event",
    );
}

#[tokio::test]
async fn no_active_key_is_a_json_404() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = Keyring::open(dir.path(), KeyPurpose::Audit).unwrap();
    let signer = ring.signer().unwrap();
    let keys = forge_evidence::KeySource::from_keyring(&ring).unwrap();
    let log = Arc::new(
        AuditLog::open(
            &dir.path().join("a.jsonl"),
            signer,
            &keys,
            AuditLogConfig::default(),
        )
        .unwrap(),
    );
    // An empty audit keyring directory elsewhere: nothing is active.
    let empty = tempfile::tempdir().unwrap();
    let base = serve(AuditHttpState {
        data_dir: empty.path().to_owned(),
        log,
    })
    .await;
    assert_error(
        &get(format!("{base}/audit/keys/current")).await,
        404,
        "no_active_key",
    );
}

#[tokio::test]
async fn undecodable_path_segments_are_json_400s() {
    let keys = Keys::new(KeyPurpose::Audit);
    let log_path = keys.dir.path().join("audit.jsonl");
    let log = AuditLog::open(
        &log_path,
        keys.signer.clone(),
        &keys.source(),
        AuditLogConfig::default(),
    )
    .unwrap();
    let base = serve(AuditHttpState {
        data_dir: keys.dir.path().to_owned(),
        log: Arc::new(log),
    })
    .await;
    assert_error(
        &get(format!("{base}/audit/keys/%FF%FE")).await,
        400,
        "invalid_key_id",
    );
    assert_error(
        &get(format!("{base}/audit/events/%C3%28/signature")).await,
        400,
        "invalid_event_id",
    );
}
