//! The evidence store conformance suite against the local-directory backend, plus local specifics.

use forge_evidence::store::{DEFAULT_BUCKET, EvidenceStore, LocalStore, ObjectKey};

fn local() -> (LocalStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    (
        LocalStore::new(dir.path(), DEFAULT_BUCKET).expect("store"),
        dir,
    )
}

mod local_backend {
    forge_evidence::evidence_store_conformance!(super::local());
}

/// The readiness ping creates the bucket directory as `put` would, leaves no probe behind, and
/// names the directory when it cannot write there.
#[tokio::test]
async fn local_ping_needs_a_writable_bucket_directory() {
    let (store, dir) = local();
    store.ping().await.unwrap();
    let bucket = dir.path().join(DEFAULT_BUCKET);
    assert_eq!(std::fs::read_dir(&bucket).unwrap().count(), 0);

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let broken = LocalStore::new(&file, DEFAULT_BUCKET).unwrap();
    let e = broken.ping().await.unwrap_err().to_string();
    assert!(
        e.contains("not-a-dir/forge-evidence") && e.contains("not writable"),
        "{e}"
    );
}

#[tokio::test]
async fn local_layout_is_root_bucket_scenario_file_and_leaves_no_temp_files() {
    let (store, dir) = local();
    let key = ObjectKey::new("scn-def456789012/evidence.tar.zst").unwrap();
    store.put(&key, b"zstd".to_vec()).await.unwrap();
    let path = dir
        .path()
        .join("forge-evidence/scn-def456789012/evidence.tar.zst");
    assert_eq!(store.path_for(&key), path);
    assert_eq!(std::fs::read(&path).unwrap(), b"zstd");
    // Where the file really is, not an S3 URL nothing answers.
    assert_eq!(store.url_for(&key), format!("file://{}", path.display()));
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["evidence.tar.zst"]);
    assert!(LocalStore::new(dir.path(), "a/b").is_err());
    assert!(LocalStore::new(dir.path(), "..").is_err());
}
