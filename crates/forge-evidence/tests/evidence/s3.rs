//! The evidence store conformance suite against [`S3Store`] on a real S3 server (SeaweedFS, see
//! `seaweed.rs`), plus what only object lock gives: evidence that the S3 API itself refuses to
//! delete while it is retained, whoever holds the credentials.
//!
//! SeaweedFS 4.x behaves as AWS does where it matters here: a locked version cannot be deleted
//! (403 `AccessDenied`) in either mode before its retain-until date, governance mode yields to
//! `x-amz-bypass-governance-retention`, and a plain PutObject or DeleteObject over a locked key
//! is *accepted*, as a new version or a delete marker, because object lock protects versions,
//! not keys. The tests pin that down, and that `S3Store` still serves the first, locked version.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::ObjectLockRetentionMode;
use forge_evidence::store::{EvidenceStore, ObjectKey, StoreError};
use forge_evidence::{RetentionMode, S3Config, S3Store};

use forge_testkit::servers::seaweed::{self, store_with};

mod s3_backend {
    forge_evidence::evidence_store_conformance!(
        forge_testkit::servers::seaweed::store_with(
            Default::default(),
            forge_evidence::store::DEFAULT_RETENTION,
        )
        .await
    );
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).expect("valid test key")
}

/// The id of the version `S3Store` wrote (the only one, right after a put).
async fn version_of(raw: &aws_sdk_s3::Client, bucket: &str, key: &ObjectKey) -> String {
    let head = raw.head_object().bucket(bucket).key(key.as_str());
    let head = head.send().await.expect("head the object");
    head.version_id().expect("a versioned bucket").to_owned()
}

/// DeleteObject of one version, as anyone with the credentials could send it.
async fn delete_version(
    raw: &aws_sdk_s3::Client,
    bucket: &str,
    key: &ObjectKey,
    version: &str,
    bypass_governance: bool,
) -> Result<(), (u16, String)> {
    let mut delete = raw
        .delete_object()
        .bucket(bucket)
        .key(key.as_str())
        .version_id(version);
    if bypass_governance {
        delete = delete.bypass_governance_retention(true);
    }
    delete.send().await.map(drop).map_err(|e| {
        let status = e.raw_response().map_or(0, |r| r.status().as_u16());
        (status, e.code().unwrap_or_default().to_owned())
    })
}

#[tokio::test]
async fn every_object_is_locked_in_the_configured_mode_until_now_plus_retention() {
    let retention = Duration::from_secs(7 * 24 * 3600);
    let (store, server) = store_with(RetentionMode::Compliance, retention).await;
    let k = key("scn-00000000000a/score.json");
    let before = SystemTime::now();
    store.put(&k, b"{}".to_vec()).await.unwrap();
    let raw = server.raw_client();
    let lock = raw
        .get_object_retention()
        .bucket(store.bucket())
        .key(k.as_str())
        .send()
        .await
        .expect("the object has a retention");
    let lock = lock.retention().expect("retention");
    assert_eq!(lock.mode(), Some(&ObjectLockRetentionMode::Compliance));
    let until = lock.retain_until_date().expect("a retain-until date");
    let until = SystemTime::try_from(*until).unwrap();
    let expected = before + retention;
    let off = until
        .duration_since(expected)
        .unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(60), "retained until {until:?}");
    // The bucket itself was created with object lock.
    let config = raw
        .get_object_lock_configuration()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    assert!(config.object_lock_configuration().is_some());
    assert!(!format!("{store:?}").contains(server.secret()), "{store:?}");
}

#[tokio::test]
async fn locked_evidence_cannot_be_deleted_and_raw_overwrites_do_not_replace_it() {
    let (store, server) = store_with(RetentionMode::Compliance, Duration::from_secs(3600)).await;
    let raw = server.raw_client();
    let bucket = store.bucket().to_owned();
    let k = key("scn-00000000000b/verdict.sig");
    store.put(&k, b"original".to_vec()).await.unwrap();
    let version = version_of(&raw, &bucket, &k).await;

    // Deleting the version itself is what destroys data: refused while retained.
    let refused = delete_version(&raw, &bucket, &k, &version, false).await;
    assert_eq!(refused, Err((403, "AccessDenied".into())));
    // Compliance mode: no bypass, not even for this admin identity.
    let refused = delete_version(&raw, &bucket, &k, &version, true).await;
    assert_eq!(refused, Err((403, "AccessDenied".into())));

    // A conditional overwrite is refused outright.
    let conditional = raw
        .put_object()
        .bucket(&bucket)
        .key(k.as_str())
        .if_none_match("*")
        .body(b"tampered".to_vec().into())
        .send()
        .await;
    let status = conditional.map_err(|e| e.raw_response().map(|r| r.status().as_u16()));
    assert_eq!(status.err(), Some(Some(412)));

    // A plain PutObject over the key, and then a DeleteObject without a version, succeed (as on
    // AWS): they add a version and a delete marker, and leave the locked version alone.
    raw.put_object()
        .bucket(&bucket)
        .key(k.as_str())
        .body(b"tampered".to_vec().into())
        .send()
        .await
        .expect("S3 accepts a new version over a locked key");
    assert_eq!(store.get(&k).await.unwrap(), b"original");
    raw.delete_object()
        .bucket(&bucket)
        .key(k.as_str())
        .send()
        .await
        .expect("S3 accepts a delete marker over a locked key");
    assert_eq!(store.get(&k).await.unwrap(), b"original");
    assert!(store.exists(&k).await.unwrap());
    assert_eq!(
        store.list("scn-00000000000b/").await.unwrap(),
        std::slice::from_ref(&k)
    );
    let locked = raw
        .get_object()
        .bucket(&bucket)
        .key(k.as_str())
        .version_id(&version)
        .send()
        .await
        .expect("the locked version is still there");
    let body = locked.body.collect().await.unwrap().into_bytes();
    assert_eq!(&body[..], b"original");

    // And the store still treats the key as written: `If-None-Match` passes over the delete
    // marker, but the version that wins is the first one.
    match store.put(&k, b"again".to_vec()).await {
        Err(StoreError::AlreadyExists(existing)) => assert_eq!(existing, k),
        other => panic!("put over hidden evidence must fail with AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.get(&k).await.unwrap(), b"original");
    assert_eq!(store.list("scn-00000000000b/").await.unwrap(), [k]);
}

#[tokio::test]
async fn governance_lock_yields_only_to_an_explicit_bypass_and_locks_end_per_object() {
    let (store, server) = store_with(RetentionMode::Governance, Duration::from_secs(2)).await;
    let raw = server.raw_client();
    let bucket = store.bucket().to_owned();
    let (a, b) = (key("scn-00000000000c/a"), key("scn-00000000000c/b"));
    store.put(&a, b"a".to_vec()).await.unwrap();
    let written = SystemTime::now();
    store.put(&b, b"b".to_vec()).await.unwrap();
    let (va, vb) = (
        version_of(&raw, &bucket, &a).await,
        version_of(&raw, &bucket, &b).await,
    );
    assert_eq!(
        delete_version(&raw, &bucket, &a, &va, false).await,
        Err((403, "AccessDenied".into()))
    );
    delete_version(&raw, &bucket, &a, &va, true)
        .await
        .expect("governance mode yields to a bypass by an identity allowed to");
    assert!(!store.exists(&a).await.unwrap());

    // The lock ends at the object's own retain-until date (S3 keeps it to the second).
    let ends = written + Duration::from_secs(2);
    let wait = ends.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(1500)).await;
    delete_version(&raw, &bucket, &b, &vb, false)
        .await
        .expect("deleting is allowed once the retention has passed");
    assert!(!store.exists(&b).await.unwrap());
}

#[tokio::test]
async fn a_wrong_secret_is_refused_without_the_secret_in_the_error() {
    let server = seaweed::shared().await;
    let bucket = seaweed::fresh_bucket();
    let wrong = format!("{}-but-wrong", server.secret());
    let config = S3Config {
        secret_key: wrong.clone(),
        ..server.config(&bucket)
    };
    assert!(!format!("{config:?}").contains(&wrong), "{config:?}");
    let err = S3Store::connect(config).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)), "{message}");
    assert!(!message.contains(&wrong), "{message}");
    assert!(!message.contains(server.secret()), "{message}");
    assert!(message.contains(&bucket), "names the bucket: {message}");
    assert!(message.contains("403"), "gives the status: {message}");
    assert!(message.contains("access key and secret"), "{message}");

    // Nothing was created with the wrong secret.
    let head = server
        .raw_client()
        .head_bucket()
        .bucket(&bucket)
        .send()
        .await;
    assert_eq!(
        head.unwrap_err()
            .raw_response()
            .map(|r| r.status().as_u16()),
        Some(404)
    );
}

#[tokio::test]
async fn a_bucket_without_object_lock_is_refused() {
    let server = seaweed::shared().await;
    let bucket = seaweed::fresh_bucket();
    server
        .raw_client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let err = S3Store::connect(server.config(&bucket)).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&bucket), "{message}");
    assert!(message.contains("without object lock"), "{message}");
    // Outside AWS's first region the bucket's region is part of the request.
    let elsewhere = S3Config {
        region: "eu-central-1".into(),
        ..server.config(&seaweed::fresh_bucket())
    };
    S3Store::connect(elsewhere)
        .await
        .expect("creates a bucket with a location constraint");
    // A bucket that has it is taken as it is, by any number of replicas.
    let (store, _) = store_with(RetentionMode::Compliance, Duration::from_secs(60)).await;
    S3Store::connect(server.config(store.bucket()))
        .await
        .expect("an existing bucket with object lock");
}

#[tokio::test]
async fn bad_configuration_is_named_before_any_request() {
    for bucket in ["ab", "Forge", "-forge", "forge_evidence"] {
        let config = S3Config {
            bucket: bucket.into(),
            endpoint: "http://127.0.0.1:9".into(),
            ..S3Config::default()
        };
        let err = S3Store::connect(config).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidKey { .. }), "{err}");
        assert!(err.to_string().contains(bucket), "{err}");
    }
    let config = S3Config {
        retention: Duration::ZERO,
        endpoint: "http://127.0.0.1:9".into(),
        ..S3Config::default()
    };
    let err = S3Store::connect(config).await.unwrap_err();
    assert!(err.to_string().contains("retention"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_backend_error_naming_the_bucket() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = S3Config {
        endpoint: format!("http://127.0.0.1:{port}"),
        access_key: "forge".into(),
        secret_key: "not-in-errors".into(),
        ..S3Config::default()
    };
    let err = S3Store::connect(config).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)), "{message}");
    assert!(message.contains("forge-evidence"), "{message}");
    assert!(message.contains("cannot reach"), "{message}");
    assert!(!message.contains("not-in-errors"), "{message}");
}
