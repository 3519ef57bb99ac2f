//! Bundle round trip, tamper detection per file and per artifact, determinism, HTTP verification,
//! where a bundle is.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use forge_evidence::bundle::{
    ARTIFACTS_ENTRY, Bundle, EVIDENCE_FILE, MANIFEST_FILE, SCORE_FILE, VERDICT_FILE, seal,
};
use forge_evidence::keyring::{KeyPurpose, KeyStatus};
use forge_evidence::verify::{
    BundleFiles, BundleLocation, ProblemKind, unpack, verify_bundle, verify_bundle_url,
};

use crate::common::{Keys, bundle, input, meta, refusal, with_evidence};

fn flipped(bytes: &[u8], i: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[i] ^= 0x01;
    b
}

/// Byte positions to flip: every position of small files, a spread (plus both ends) of big ones.
fn positions(len: usize) -> Vec<usize> {
    if len <= 1024 {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..len).step_by(len / 97).collect();
    v.extend([0, 1, len / 2, len - 2, len - 1]);
    v
}

#[test]
fn round_trip_verifies_from_a_directory() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    let dir = tempfile::tempdir().unwrap();
    b.write_to_dir(dir.path()).unwrap();
    let v = verify_bundle(dir.path(), &keys.source()).expect("bundle verifies");
    assert_eq!(v.key_id, keys.signer.key_id());
    assert_eq!(v.key_status, KeyStatus::Active);
    assert_eq!(v.score, b.score);
    assert_eq!((v.score.passed, v.score.total), (16, 20));
    assert_eq!(v.manifest.score.value, b.score.score);
    assert_eq!(v.artifacts.len(), 20);
    // Write-once: a second write into the same directory is refused.
    assert!(b.write_to_dir(dir.path()).is_err());
}

#[test]
fn manifest_is_canonical_and_lists_both_files() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    let value: serde_json::Value = serde_json::from_slice(&b.manifest_json).unwrap();
    assert_eq!(
        serde_json_canonicalizer::to_vec(&value).unwrap(),
        b.manifest_json
    );
    assert_eq!(value["schema"], "frostgate.forge/manifest/v1");
    assert_eq!(value["files"].as_object().unwrap().len(), 2);
    assert_eq!(value["files"]["score.json"].as_str().unwrap().len(), 64);
    let sig: serde_json::Value = serde_json::from_slice(&b.verdict_sig).unwrap();
    assert_eq!(sig["algorithm"], "ed25519");
    assert_eq!(sig["key_id"], keys.signer.key_id());
}

#[test]
fn flipping_any_byte_of_a_file_fails_naming_it() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let source = keys.source();
    let b = bundle(&keys);
    let good = BundleFiles::from(&b);
    for name in BundleFiles::NAMES {
        let original = good.get(name).unwrap().to_vec();
        for i in positions(original.len()) {
            let mut files = good.clone();
            *files.slot(name).unwrap() = Some(flipped(&original, i));
            let err = refusal(&files, &source);
            let msg = err.to_string();
            match name {
                // A changed manifest either no longer parses or no longer matches its signature.
                MANIFEST_FILE => assert!(msg.contains(MANIFEST_FILE), "byte {i} of {name}: {msg}"),
                _ => assert_eq!(err.file(), name, "byte {i} of {name}: {msg}"),
            }
        }
    }
}

#[test]
fn missing_files_are_named() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    for name in BundleFiles::NAMES {
        let mut files = BundleFiles::from(&b);
        *files.slot(name).unwrap() = None;
        let err = refusal(&files, &keys.source());
        assert_eq!(err.file(), name, "{err}");
        assert_eq!(err.first().kind, ProblemKind::Missing, "{err}");
    }
}

/// Rebuilds a tar.zst from entries (the tamperer's tool: no validation at all).
fn repack(entries: &std::collections::BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        builder.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    zstd::bulk::compress(&builder.into_inner().unwrap(), 3).unwrap()
}

#[test]
fn a_changed_artifact_fails_naming_it_even_when_resigned() {
    // An insider with the signing key re-signs a bundle whose archive has one artifact altered
    // but the original artifacts.json: the artifact hash check still names the artifact.
    let keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    let entries = unpack(&b.evidence).unwrap();
    let artifact_paths: Vec<String> = entries
        .keys()
        .filter(|p| p.starts_with("artifacts/"))
        .cloned()
        .collect();
    assert_eq!(artifact_paths.len(), 20);
    for path in &artifact_paths {
        let mut tampered = entries.clone();
        let content = tampered.get_mut(path).unwrap();
        let mid = content.len() / 2;
        content[mid] ^= 0x01;
        let resealed = with_evidence(&b, repack(&tampered), &keys.signer);
        let err = refusal(&BundleFiles::from(&resealed), &keys.source());
        assert_eq!(err.file(), path, "{err}");
        assert_eq!(err.first().kind, ProblemKind::ArtifactMismatch, "{err}");
        // Without re-signing, the archive hash itself gives it away.
        let mut files = BundleFiles::from(&b);
        files.evidence = Some(repack(&tampered));
        let err = refusal(&files, &keys.source());
        assert_eq!(err.file(), EVIDENCE_FILE, "{err}");
    }
}

#[test]
fn a_score_that_does_not_follow_from_the_criteria_fails() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    let mut inflated = b.score.clone();
    inflated.score = 1.0;
    inflated.passed = inflated.total;
    let score_json = forge_evidence::bundle::score_json(&inflated).unwrap();
    let resealed = seal(
        &meta(&b),
        inflated,
        score_json,
        b.evidence.clone(),
        &keys.signer,
    )
    .unwrap();
    let err = refusal(&BundleFiles::from(&resealed), &keys.source());
    assert_eq!(err.file(), SCORE_FILE, "{err}");
    assert_eq!(err.first().kind, ProblemKind::ScoreMismatch, "{err}");
    assert!(err.to_string().contains("recomputed"), "{err}");
}

#[test]
fn an_unlisted_archive_entry_fails() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    let mut entries = unpack(&b.evidence).unwrap();
    entries.insert("artifacts/smuggled".into(), b"extra".to_vec());
    let resealed = with_evidence(&b, repack(&entries), &keys.signer);
    let err = refusal(&BundleFiles::from(&resealed), &keys.source());
    assert_eq!(err.file(), EVIDENCE_FILE, "{err}");
    assert!(err.to_string().contains("artifacts/smuggled"), "{err}");
    assert!(err.to_string().contains(ARTIFACTS_ENTRY), "{err}");
}

#[test]
fn same_evidence_gives_byte_identical_archives() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let a = Bundle::build(input(20, 2048), &keys.signer).unwrap();
    let b = Bundle::build(input(20, 2048), &keys.signer).unwrap();
    assert!(
        a.evidence == b.evidence,
        "rebuilding changes evidence.tar.zst"
    );
    assert_eq!(
        a, b,
        "the whole bundle is reproducible (ed25519 signatures are deterministic)"
    );
    let mut shuffled = input(20, 2048);
    shuffled.artifacts.reverse();
    shuffled.artifacts.swap(3, 11);
    let c = Bundle::build(shuffled, &keys.signer).unwrap();
    assert!(
        a.evidence == c.evidence,
        "artifact input order changes evidence.tar.zst"
    );
}

#[test]
fn archive_headers_are_normalised() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    let mut tar_bytes = Vec::new();
    zstd::stream::read::Decoder::new(b.evidence.as_slice())
        .unwrap()
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut paths = vec![];
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let dir = h.entry_type().is_dir();
        assert_eq!(h.mode().unwrap(), if dir { 0o755 } else { 0o644 }, "{path}");
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{path}");
        assert_eq!(
            h.mtime().unwrap(),
            b.manifest.collected_at.timestamp() as u64,
            "{path}"
        );
        assert_eq!(h.username().unwrap(), Some(""), "{path}");
        assert_eq!(h.groupname().unwrap(), Some(""), "{path}");
        paths.push(path);
    }
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert_eq!(
        &paths[..3],
        [
            "artifacts.json",
            "artifacts/",
            "artifacts/crit-00.0.command_output"
        ]
    );
    assert!(paths.contains(&"criteria_results.json".to_owned()));
}

/// Serves `files` under `/bundles/scn-def456789012/<name>` on an ephemeral loopback port.
async fn serve(files: HashMap<String, Vec<u8>>) -> String {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    let app =
        axum::Router::new()
            .route(
                "/bundles/scn-def456789012/{name}",
                axum::routing::get(
                    |State(files): State<Arc<HashMap<String, Vec<u8>>>>,
                     Path(name): Path<String>| async move {
                        files.get(&name).cloned().ok_or(StatusCode::NOT_FOUND)
                    },
                ),
            )
            .with_state(Arc::new(files));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/bundles/scn-def456789012/")
}

#[tokio::test]
async fn verifies_over_http_and_names_tampered_or_missing_files() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    let all: HashMap<String, Vec<u8>> = b
        .files()
        .iter()
        .map(|(n, bytes)| (n.to_string(), bytes.to_vec()))
        .collect();

    let url = serve(all.clone()).await;
    let v = verify_bundle_url(&url, &keys.source(), None)
        .await
        .expect("verifies over http");
    assert_eq!(v.score, b.score);

    let mut tampered = all.clone();
    tampered.insert(SCORE_FILE.into(), flipped(&all[SCORE_FILE], 10));
    let err = verify_bundle_url(&serve(tampered).await, &keys.source(), None)
        .await
        .unwrap_err();
    assert_eq!(err.file(), SCORE_FILE, "{err}");

    let mut missing = all.clone();
    missing.remove(VERDICT_FILE);
    let err = verify_bundle_url(&serve(missing).await, &keys.source(), None)
        .await
        .unwrap_err();
    assert_eq!(
        (err.file(), err.first().kind),
        (VERDICT_FILE, ProblemKind::Missing),
        "{err}"
    );
}

#[tokio::test]
async fn a_location_is_a_directory_one_of_its_files_or_a_url() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    let dir = keys.dir.path().join("bundle");
    b.write_to_dir(&dir).unwrap();
    let as_dir: BundleLocation = dir.to_str().unwrap().parse().unwrap();
    assert_eq!(as_dir, BundleLocation::Dir(dir.clone()));
    let manifest = dir.join("manifest.json");
    let as_file: BundleLocation = manifest.to_str().unwrap().parse().unwrap();
    assert_eq!(as_file, BundleLocation::Dir(dir.clone()));
    let v = as_file
        .verify(&keys.source(), None)
        .await
        .expect("verifies");
    assert_eq!(v.score, b.score);

    let url = "https://scores.example/v1/scores/scn-def456789012";
    assert_eq!(
        url.parse::<BundleLocation>().unwrap(),
        BundleLocation::Url(url.into())
    );
    let other_file = keys.dir.path().join("notes.txt");
    std::fs::write(&other_file, "x").unwrap();
    for target in [
        other_file.to_str().unwrap(),
        "/nonexistent/forge-bundle",
        "ftp://x",
    ] {
        let err = target.parse::<BundleLocation>().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{target}: not a bundle directory, a file of one, or an http(s) url")
        );
    }
}
