//! Keyring life cycle and what it means for verification.

use std::os::unix::fs::PermissionsExt;

use chrono::{Duration, Utc};
use forge_evidence::bundle::Bundle;
use forge_evidence::keyring::{KeyPurpose, KeySource, KeyStatus, Keyring, key_id_for};
use forge_evidence::verify::{BundleFiles, ProblemKind, VerifyError, verify_files};

use crate::common::{Keys, bundle, input, refusal};

/// Asserts that verification failed on the verdict signature's key, saying `why`.
#[track_caller]
fn assert_key_problem(err: &VerifyError, why: &str) {
    assert_eq!(
        (err.file(), err.first().kind),
        ("verdict.sig", ProblemKind::Key),
        "{err}"
    );
    assert!(err.to_string().contains(why), "{err}");
}

#[test]
fn first_use_creates_a_key_with_private_file_mode_0600() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let id = keys.signer.key_id();
    assert!(id.starts_with("ed25519-") && id.len() == 24, "{id}");
    assert_eq!(key_id_for(&keys.signer.verifying_key()), id);
    let dir = Keyring::dir_for(keys.dir.path(), KeyPurpose::Verdict);
    let mode = std::fs::metadata(dir.join(format!("{id}.key.pem")))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let private = std::fs::read_to_string(dir.join(format!("{id}.key.pem"))).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
    let public = std::fs::read_to_string(dir.join(format!("{id}.pub.pem"))).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("keyring.json")).unwrap()).unwrap();
    assert_eq!(index["keys"][0]["status"], "active");
    // Opening again finds the same key instead of making another.
    let mut again = Keyring::open(keys.dir.path(), KeyPurpose::Verdict).unwrap();
    assert_eq!(again.signer().unwrap().key_id(), id);
    assert_eq!(again.keys().len(), 1);
}

#[test]
fn purposes_have_separate_keys() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let mut audit = Keyring::open(keys.dir.path(), KeyPurpose::Audit).unwrap();
    assert_ne!(audit.signer().unwrap().key_id(), keys.signer.key_id());
    let err = Keyring::open_dir(
        &Keyring::dir_for(keys.dir.path(), KeyPurpose::Audit),
        KeyPurpose::Verdict,
    );
    assert!(err.unwrap_err().to_string().contains("purpose `audit`"));
}

#[test]
fn a_bundle_signed_with_a_rotated_out_key_still_verifies_within_retention() {
    let mut keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    let new = keys.ring.rotate().unwrap();
    assert_ne!(new.key_id, keys.signer.key_id());
    let old = keys.ring.get(keys.signer.key_id()).unwrap();
    assert_eq!(old.status, KeyStatus::Retired);
    assert!(old.retired_at.is_some());
    // The retired key's private half is gone; only the active key can sign.
    let dir = Keyring::dir_for(keys.dir.path(), KeyPurpose::Verdict);
    assert!(
        !dir.join(format!("{}.key.pem", keys.signer.key_id()))
            .exists()
    );
    assert_eq!(keys.ring.signer().unwrap().key_id(), new.key_id);

    let v = verify_files(&BundleFiles::from(&b), &keys.source(), Utc::now())
        .expect("retired key verifies");
    assert_eq!(v.key_status, KeyStatus::Retired);
    // After the retention window (365 days by default) it no longer does.
    let later = Utc::now() + Duration::days(366);
    let err = verify_files(&BundleFiles::from(&b), &keys.source(), later).unwrap_err();
    assert_key_problem(&err, "retention window ended");
}

#[test]
fn a_bundle_signed_with_a_revoked_key_fails() {
    let mut keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    let replacement = keys
        .ring
        .revoke(keys.signer.key_id())
        .unwrap()
        .expect("active key is replaced");
    assert_eq!(keys.ring.active().unwrap().key_id, replacement.key_id);
    assert_key_problem(&refusal(&BundleFiles::from(&b), &keys.source()), "revoked");
    // A bundle by the replacement key verifies; revoking twice is refused.
    let fresh = Bundle::build(input(3, 100), &keys.ring.signer().unwrap()).unwrap();
    verify_files(&BundleFiles::from(&fresh), &keys.source(), Utc::now()).expect("new key verifies");
    assert!(
        keys.ring
            .revoke(keys.signer.key_id())
            .unwrap_err()
            .to_string()
            .contains("already revoked")
    );
    assert!(
        keys.ring
            .revoke("ed25519-0000000000000000")
            .unwrap_err()
            .to_string()
            .contains("not in the keyring")
    );
}

#[test]
fn revoking_a_retired_key_keeps_the_active_one() {
    let mut keys = Keys::new(KeyPurpose::Verdict);
    let active = keys.ring.rotate().unwrap();
    assert!(keys.ring.revoke(keys.signer.key_id()).unwrap().is_none());
    assert_eq!(keys.ring.active().unwrap().key_id, active.key_id);
}

#[test]
fn a_single_pem_public_key_or_exported_keyset_is_enough_offline() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    let files = BundleFiles::from(&b);
    let out = tempfile::tempdir().unwrap();

    let pem = keys.ring.public_key_pem(keys.signer.key_id()).unwrap();
    let pem_path = out.path().join("verdict.pub.pem");
    std::fs::write(&pem_path, &pem).unwrap();
    let from_pem = KeySource::from_file(&pem_path).unwrap();
    verify_files(&files, &from_pem, Utc::now()).expect("pem key verifies");

    let set_path = out.path().join("keys.json");
    std::fs::write(
        &set_path,
        serde_json::to_vec(&keys.ring.export_public().unwrap()).unwrap(),
    )
    .unwrap();
    verify_files(
        &files,
        &KeySource::from_file(&set_path).unwrap(),
        Utc::now(),
    )
    .expect("keyset verifies");

    let other = Keys::new(KeyPurpose::Verdict);
    let wrong =
        KeySource::from_pem(&other.ring.public_key_pem(other.signer.key_id()).unwrap()).unwrap();
    assert_key_problem(&refusal(&files, &wrong), "not known");
}

#[test]
fn a_keyset_entry_whose_pem_was_swapped_is_refused() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let other = Keys::new(KeyPurpose::Verdict);
    let mut set = keys.ring.export_public().unwrap();
    set.keys[0].public_key_pem = other.ring.public_key_pem(other.signer.key_id()).unwrap();
    let err = refusal(&BundleFiles::from(&bundle(&keys)), &KeySource::KeySet(set));
    assert!(
        err.to_string().contains("does not hash to its key id"),
        "{err}"
    );
}

#[test]
fn rotate_if_due_only_rotates_keys_past_their_period() {
    use forge_evidence::keyring::ROTATION_CADENCE;
    let mut keys = Keys::new(KeyPurpose::Verdict);
    let created = keys.ring.active().unwrap().created_at;
    let early = created + Duration::days(89);
    assert!(
        keys.ring
            .rotate_if_due(early, ROTATION_CADENCE)
            .unwrap()
            .is_none()
    );
    let due = created + ROTATION_CADENCE;
    let new = keys
        .ring
        .rotate_if_due(due, ROTATION_CADENCE)
        .unwrap()
        .expect("a 90-day-old key rotates");
    assert_eq!(keys.ring.active().unwrap().key_id, new.key_id);
    assert_eq!(new.created_at, due);
    let old = keys.ring.get(keys.signer.key_id()).unwrap();
    assert_eq!(
        (old.status, old.retired_at),
        (KeyStatus::Retired, Some(due))
    );
    // The new key is young at that time: no second rotation.
    assert!(
        keys.ring
            .rotate_if_due(due, ROTATION_CADENCE)
            .unwrap()
            .is_none()
    );

    // A keyring without a key is left for `signer` to start.
    let empty = tempfile::tempdir().unwrap();
    let mut ring = Keyring::open(empty.path(), KeyPurpose::Audit).unwrap();
    assert!(
        ring.rotate_if_due(Utc::now(), Duration::zero())
            .unwrap()
            .is_none()
    );
    assert!(ring.keys().is_empty());
}

#[test]
fn start_up_rotation_rotates_every_due_keyring_and_creates_none() {
    use forge_evidence::keyring::{ROTATION_CADENCE, rotate_due_keys};
    let dir = tempfile::tempdir().unwrap();
    assert!(
        rotate_due_keys(dir.path(), Utc::now(), ROTATION_CADENCE)
            .unwrap()
            .is_empty()
    );
    assert!(!Keyring::dir_for(dir.path(), KeyPurpose::Verdict).exists());
    let verdict = Keyring::open(dir.path(), KeyPurpose::Verdict)
        .unwrap()
        .signer()
        .unwrap();
    let audit = Keyring::open(dir.path(), KeyPurpose::Audit)
        .unwrap()
        .signer()
        .unwrap();
    let now = Utc::now();
    assert!(
        rotate_due_keys(dir.path(), now, ROTATION_CADENCE)
            .unwrap()
            .is_empty(),
        "fresh keys stay"
    );
    let later = now + ROTATION_CADENCE + Duration::days(1);
    let rotated = rotate_due_keys(dir.path(), later, ROTATION_CADENCE).unwrap();
    assert_eq!(rotated.len(), 2);
    for (purpose, old) in [
        (KeyPurpose::Verdict, verdict.key_id()),
        (KeyPurpose::Audit, audit.key_id()),
    ] {
        let ring = Keyring::open(dir.path(), purpose).unwrap();
        assert_eq!(ring.get(old).unwrap().status, KeyStatus::Retired);
        assert_ne!(ring.active().unwrap().key_id, old);
    }
}

#[test]
fn keyring_files_are_0600_in_0700_directories() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let dir = Keyring::dir_for(keys.dir.path(), KeyPurpose::Verdict);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(dir.parent().unwrap()), 0o700, "keys/");
    let id = keys.signer.key_id();
    for file in [
        "keyring.json".to_owned(),
        ".lock".to_owned(),
        format!("{id}.key.pem"),
        format!("{id}.pub.pem"),
    ] {
        assert_eq!(mode(&dir.join(&file)), 0o600, "{file}");
    }
}

#[test]
fn a_private_key_open_to_others_is_refused_with_its_mode_and_the_fix() {
    let keys = Keys::new(KeyPurpose::Audit);
    let path = Keyring::dir_for(keys.dir.path(), KeyPurpose::Audit)
        .join(format!("{}.key.pem", keys.signer.key_id()));
    for loose in [0o640, 0o604, 0o620] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
        let mut ring = Keyring::open(keys.dir.path(), KeyPurpose::Audit).unwrap();
        let err = ring.signer().unwrap_err().to_string();
        let shown = path.display();
        assert!(
            err.starts_with(&format!("{shown}: ")) && err.contains(&format!("(mode 0{loose:o})")),
            "{err}"
        );
        assert!(err.contains(&format!("run `chmod 600 {shown}`")), "{err}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let mut ring = Keyring::open(keys.dir.path(), KeyPurpose::Audit).unwrap();
    assert_eq!(ring.signer().unwrap().key_id(), keys.signer.key_id());
}

#[test]
fn a_verifier_loads_a_key_file_or_the_local_keyring_but_never_an_absent_one() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let files = BundleFiles::from(&bundle(&keys));
    let local = KeySource::load(keys.dir.path(), KeyPurpose::Verdict, None).unwrap();
    verify_files(&files, &local, Utc::now()).expect("local keyring verifies");

    let pem_path = keys.dir.path().join("verdict.pub.pem");
    std::fs::write(
        &pem_path,
        keys.ring.public_key_pem(keys.signer.key_id()).unwrap(),
    )
    .unwrap();
    let empty = tempfile::tempdir().unwrap();
    let from_file = KeySource::load(empty.path(), KeyPurpose::Verdict, Some(&pem_path)).unwrap();
    verify_files(&files, &from_file, Utc::now()).expect("a key file needs no keyring");

    // The verdict keyring exists, the audit one does not: no silent empty trust.
    let err = KeySource::load(keys.dir.path(), KeyPurpose::Audit, None).unwrap_err();
    assert!(
        matches!(
            err,
            forge_evidence::KeyError::NoKeyring {
                purpose: KeyPurpose::Audit,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("no audit keyring in "), "{err}");
    assert!(!Keyring::dir_for(keys.dir.path(), KeyPurpose::Audit).exists());
}
