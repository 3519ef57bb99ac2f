//! The behaviour every [`EvidenceStore`] backend must have, as async checks that panic on the
//! first deviation. Run them all against a backend with [`crate::evidence_store_conformance`]:
//!
//! ```ignore
//! forge_evidence::evidence_store_conformance!({
//!     let dir = tempfile::tempdir().unwrap();
//!     (forge_evidence::LocalStore::new(dir.path(), "forge-evidence").unwrap(), dir)
//! });
//! ```
//!
//! The expression is evaluated inside each generated `#[tokio::test]` (so it may `.await`) and
//! must give `(store, guard)`; the guard (e.g. a temp dir or a bucket cleaner) is dropped when the
//! test ends. The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use forge_core::{ArtifactType, CriterionResult, Track};

use super::{EvidenceStore, ObjectKey, StoreError, fetch_bundle, publish_bundle};
use crate::bundle::{ArtifactInput, Bundle, BundleInput, BundleMeta};
use crate::keyring::{KeySource, Signer};

/// Generates one `#[tokio::test]` per conformance check for the backend made by `$make`.
#[macro_export]
macro_rules! evidence_store_conformance {
    ($make:expr) => {
        $crate::evidence_store_conformance!(@cases $make;
            put_then_get_round_trips,
            put_is_write_once,
            concurrent_puts_have_one_winner,
            missing_objects_are_not_found,
            exists_follows_puts,
            list_filters_by_prefix_and_sorts,
            empty_and_large_objects_round_trip,
            keys_are_validated,
            url_names_bucket_and_key,
            publish_bundle_is_write_once_and_verifiable,
            ping_answers,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make;
                let store: ::std::sync::Arc<dyn $crate::store::EvidenceStore> = ::std::sync::Arc::new(store);
                $crate::store::conformance::$case(store).await;
            }
        )*
    };
}

/// A working store answers its readiness ping, within its timeout.
pub async fn ping_answers(store: Arc<dyn EvidenceStore>) {
    let start = std::time::Instant::now();
    store
        .ping()
        .await
        .expect("a working store answers the ping");
    assert!(start.elapsed() < super::PING_TIMEOUT);
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).expect("valid test key")
}

pub async fn put_then_get_round_trips(store: Arc<dyn EvidenceStore>) {
    let k = key("scn-000000000001/score.json");
    store
        .put(&k, b"{\"score\":1}".to_vec())
        .await
        .expect("first put succeeds");
    assert_eq!(
        store.get(&k).await.expect("get after put"),
        b"{\"score\":1}"
    );
}

pub async fn put_is_write_once(store: Arc<dyn EvidenceStore>) {
    let k = key("scn-000000000002/verdict.sig");
    store
        .put(&k, b"original".to_vec())
        .await
        .expect("first put succeeds");
    for again in [b"tampered".to_vec(), b"original".to_vec()] {
        match store.put(&k, again).await {
            Err(StoreError::AlreadyExists(existing)) => assert_eq!(existing, k),
            other => panic!("second put must fail with AlreadyExists, got {other:?}"),
        }
    }
    assert_eq!(
        store.get(&k).await.expect("get"),
        b"original",
        "object must never be overwritten"
    );
}

pub async fn concurrent_puts_have_one_winner(store: Arc<dyn EvidenceStore>) {
    let k = key("scn-000000000003/evidence.tar.zst");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8u8 {
        let (store, k) = (store.clone(), k.clone());
        tasks.spawn(async move { (i, store.put(&k, vec![i; 4096]).await) });
    }
    let mut winners = vec![];
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task does not panic") {
            (i, Ok(())) => winners.push(i),
            (_, Err(StoreError::AlreadyExists(_))) => {}
            (_, Err(e)) => panic!("concurrent put failed with {e}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent put wins, got {winners:?}"
    );
    assert_eq!(
        store.get(&k).await.expect("get"),
        vec![winners[0]; 4096],
        "the winner's bytes, untorn"
    );
}

pub async fn missing_objects_are_not_found(store: Arc<dyn EvidenceStore>) {
    let k = key("scn-000000000004/score.json");
    assert!(matches!(store.get(&k).await, Err(StoreError::NotFound(ref m)) if *m == k));
    store
        .put(&key("scn-000000000004/x/y"), b"1".to_vec())
        .await
        .expect("put");
    // A key prefix is not an object.
    assert!(matches!(
        store.get(&key("scn-000000000004/x")).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn exists_follows_puts(store: Arc<dyn EvidenceStore>) {
    let k = key("scn-000000000005/manifest.json");
    assert!(!store.exists(&k).await.expect("exists"));
    store.put(&k, b"{}".to_vec()).await.expect("put");
    assert!(store.exists(&k).await.expect("exists"));
    assert!(
        !store
            .exists(&key("scn-000000000005"))
            .await
            .expect("prefix is not an object")
    );
}

pub async fn list_filters_by_prefix_and_sorts(store: Arc<dyn EvidenceStore>) {
    for k in ["b/2", "a/2", "a/1", "ab/1", "a/sub/3"] {
        store
            .put(&key(k), k.as_bytes().to_vec())
            .await
            .expect("put");
    }
    let names = |v: Vec<ObjectKey>| {
        v.into_iter()
            .map(|k| k.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.list("a/").await.expect("list")),
        ["a/1", "a/2", "a/sub/3"]
    );
    assert_eq!(
        names(store.list("a").await.expect("list")),
        ["a/1", "a/2", "a/sub/3", "ab/1"]
    );
    assert_eq!(
        names(store.list("").await.expect("list")),
        ["a/1", "a/2", "a/sub/3", "ab/1", "b/2"]
    );
    assert!(store.list("zzz/").await.expect("list").is_empty());
}

pub async fn empty_and_large_objects_round_trip(store: Arc<dyn EvidenceStore>) {
    let empty = key("scn-000000000006/empty");
    store.put(&empty, vec![]).await.expect("put empty");
    assert!(store.get(&empty).await.expect("get").is_empty());
    let large = key("scn-000000000006/large");
    let bytes: Vec<u8> = (0..(3u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    store.put(&large, bytes.clone()).await.expect("put large");
    assert!(
        store.get(&large).await.expect("get large") == bytes,
        "large object round trips"
    );
}

pub async fn keys_are_validated(store: Arc<dyn EvidenceStore>) {
    for bad in [
        "", "/abs", "../up", "a/../b", "a//b", "a/", ".hidden", "a/.tmp", "a\\b", "a b", "a\0b",
    ] {
        assert!(
            matches!(ObjectKey::new(bad), Err(StoreError::InvalidKey { .. })),
            "key {bad:?} must be refused"
        );
    }
    assert!(ObjectKey::new("x".repeat(1025)).is_err());
    // Nothing was written by the refused keys.
    assert!(store.list("").await.expect("list").is_empty());
}

pub async fn url_names_bucket_and_key(store: Arc<dyn EvidenceStore>) {
    let k = key("scn-def456789012/evidence.tar.zst");
    let url = store.url_for(&k);
    assert!(url.contains("://"), "{url} has a scheme");
    assert!(
        url.ends_with("/scn-def456789012/evidence.tar.zst"),
        "{url} ends with the key"
    );
}

fn small_bundle(signer: &Signer, output: &[u8]) -> Bundle {
    let at = Utc
        .with_ymd_and_hms(2025, 1, 2, 3, 4, 5)
        .single()
        .expect("valid time");
    let artifact = ArtifactInput::new(
        ArtifactType::CommandOutput,
        "check.0.command_output",
        output.to_vec(),
    );
    let criteria = vec![CriterionResult {
        criterion_id: "check".into(),
        passed: true,
        evidence_refs: vec![artifact.artifact.name.clone()],
        message: None,
        weight: 1.0,
    }];
    let meta = BundleMeta {
        scenario_id: "scn-0000000000aa".parse().expect("id"),
        run_id: "run-0000000000aa".parse().expect("id"),
        track: Track::Netplus,
        collected_at: at,
        computed_at: at,
    };
    Bundle::build(
        BundleInput {
            meta,
            criteria,
            artifacts: vec![artifact],
        },
        signer,
    )
    .expect("bundle builds")
}

pub async fn publish_bundle_is_write_once_and_verifiable(store: Arc<dyn EvidenceStore>) {
    let signer = Signer::generate();
    let bundle = small_bundle(&signer, b"ok\n");
    let urls = publish_bundle(store.as_ref(), &bundle)
        .await
        .expect("publish");
    assert!(
        urls.verdict_url.ends_with("scn-0000000000aa/verdict.sig"),
        "{}",
        urls.verdict_url
    );
    assert!(
        urls.evidence_url
            .ends_with("scn-0000000000aa/evidence.tar.zst"),
        "{}",
        urls.evidence_url
    );
    publish_bundle(store.as_ref(), &bundle)
        .await
        .expect("re-publishing identical bytes is a no-op");
    let other = small_bundle(&signer, b"different\n");
    assert!(matches!(
        publish_bundle(store.as_ref(), &other).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let files = fetch_bundle(store.as_ref(), &bundle.manifest.scenario_id)
        .await
        .expect("fetch");
    let keys = KeySource::PublicKey {
        key_id: signer.key_id().into(),
        key: signer.verifying_key(),
    };
    let verified =
        crate::verify::verify_files(&files, &keys, Utc::now()).expect("published bundle verifies");
    assert_eq!(verified.score.score, 1.0);
}
