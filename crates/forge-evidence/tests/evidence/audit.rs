//! The signed, hash-chained audit log: round trip and every kind of tampering.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use forge_core::audit::{AuditEvent, AuditSink, Outcome};
use forge_evidence::audit_log::{
    AuditLog, AuditLogConfig, AuditLogError, AuditVerifyError, head_path_for, verify_log,
};
use forge_evidence::keyring::{KeyPurpose, KeySource, Keyring};

use crate::common::{Keys, at};

fn event(i: u64) -> AuditEvent {
    AuditEvent::new(
        at(i as i64),
        "scenario.created",
        "forge_orchestrator",
        format!("scn-{i:012x}"),
        "create",
        Outcome::Success,
    )
    .with_detail("track", "netplus")
    .with_detail("n", i)
}

/// A forger's edit of a log's lines.
type Edit = fn(&mut Vec<String>);

struct Fixture {
    keys: Keys,
    path: PathBuf,
}

impl Fixture {
    /// A log with `n` events, checkpoints every 100, closed.
    fn new(n: u64) -> Self {
        let keys = Keys::new(KeyPurpose::Audit);
        let path = keys.dir.path().join("audit").join("audit.jsonl");
        let log = keys.open_log(&path).unwrap();
        for i in 0..n {
            log.record(event(i));
        }
        log.close().unwrap();
        Self { keys, path }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(&self, lines: &[String]) {
        let mut text = lines.join("\n");
        if !lines.is_empty() {
            text.push('\n');
        }
        std::fs::write(&self.path, text).unwrap();
    }

    fn verify(&self) -> Result<forge_evidence::LogReport, AuditVerifyError> {
        verify_log(&self.path, &self.keys.source())
    }

    /// Rewrites the log's lines through `edit` and returns why it no longer verifies.
    fn tamper(&self, edit: impl FnOnce(&mut Vec<String>)) -> AuditVerifyError {
        let mut lines = self.lines();
        edit(&mut lines);
        self.write_lines(&lines);
        self.verify().expect_err("a tampered log must fail")
    }

    /// Opens the log again with its own keys, as a restarted service does.
    fn reopen(&self) -> Result<AuditLog, AuditLogError> {
        self.keys.open_log(&self.path)
    }

    fn event_id(&self, line: usize) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.lines()[line]).unwrap();
        v["event"]["event_id"].as_str().unwrap().to_owned()
    }
}

#[test]
fn a_closed_log_verifies_with_periodic_and_final_checkpoints() {
    let f = Fixture::new(250);
    let r = f.verify().expect("untouched log verifies");
    assert_eq!(
        (r.events, r.checkpoints, r.records, r.last_seq),
        (250, 3, 253, 253)
    );
    assert_eq!(r.key_ids.len(), 1);
    let lines = f.lines();
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["seq"], i as u64 + 1);
    }
    let cp: serde_json::Value = serde_json::from_str(&lines[100]).unwrap();
    assert_eq!(cp["type"], "checkpoint");
    assert_eq!(cp["checkpoint"]["events"], 100);
}

#[test]
fn an_edited_event_is_named_by_seq_and_event_id() {
    let f = Fixture::new(120);
    let id = f.event_id(41);
    let err = f.tamper(|lines| {
        lines[41] = lines[41].replace("\"outcome\":\"success\"", "\"outcome\":\"denied\"");
    });
    assert!(
        matches!(err, AuditVerifyError::BadSignature { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("event seq 42") && msg.contains(&id), "{msg}");
}

#[test]
fn deleted_and_reordered_events_are_named() {
    // (the edit, the seq verification expects where it breaks, the line of the event it finds
    // there instead, named in the error)
    let cases: [(Edit, u64, usize); 2] = [
        (
            |lines| {
                lines.remove(10);
            },
            11,
            11,
        ),
        (|lines| lines.swap(20, 21), 21, 21),
    ];
    for (edit, seq, found) in cases {
        let f = Fixture::new(120);
        let found_id = f.event_id(found);
        let err = f.tamper(edit);
        assert!(
            matches!(err, AuditVerifyError::SeqGap { expected, .. } if expected == seq),
            "{err}"
        );
        assert!(err.to_string().contains(&found_id), "{err}");
    }
}

#[test]
fn a_deleted_and_renumbered_event_breaks_the_hash_chain() {
    let f = Fixture::new(30);
    let err = f.tamper(|lines| {
        lines.remove(10);
        // The forger renumbers the following records so seq has no gap.
        for (i, line) in lines.iter_mut().enumerate().skip(10) {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["seq"] = (i as u64 + 1).into();
            *line = serde_json::to_string(&v).unwrap();
        }
    });
    assert!(matches!(err, AuditVerifyError::BrokenLink { .. }), "{err}");
    assert!(err.to_string().contains("event seq 11"), "{err}");
}

#[test]
fn a_truncated_tail_fails_the_head_checkpoint() {
    let f = Fixture::new(250);
    let lines = f.lines();
    for keep in [lines.len() - 1, 240, 101, 100, 0] {
        f.write_lines(&lines[..keep]);
        let err = f.verify().unwrap_err();
        assert!(
            matches!(err, AuditVerifyError::HeadMismatch { .. }),
            "keeping {keep}: {err}"
        );
        assert!(err.to_string().contains("truncated"), "{err}");
    }
    f.write_lines(&lines);
    f.verify().expect("restored log verifies again");
}

#[test]
fn a_partial_last_line_and_a_missing_head_fail() {
    let f = Fixture::new(10);
    let text = std::fs::read_to_string(&f.path).unwrap();
    std::fs::write(&f.path, &text[..text.len() - 20]).unwrap();
    assert!(matches!(
        f.verify().unwrap_err(),
        AuditVerifyError::PartialRecord { line: 11 }
    ));
    std::fs::write(&f.path, &text).unwrap();
    std::fs::remove_file(head_path_for(&f.path)).unwrap();
    assert!(matches!(
        f.verify().unwrap_err(),
        AuditVerifyError::HeadMissing { .. }
    ));
}

#[test]
fn an_edited_checkpoint_is_named() {
    let f = Fixture::new(150);
    let err = f.tamper(|lines| lines[100] = lines[100].replace("\"events\":100", "\"events\":99"));
    assert!(
        matches!(err, AuditVerifyError::CheckpointMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("checkpoint seq 101"), "{err}");
}

#[test]
fn events_signed_with_a_revoked_key_fail_and_retired_keys_pass() {
    let mut f = Fixture::new(5);
    f.keys.ring.rotate().unwrap();
    f.verify().expect("retired audit key still verifies");
    f.keys.ring.revoke(f.keys.signer.key_id()).unwrap();
    let err = f.verify().unwrap_err();
    assert!(matches!(err, AuditVerifyError::Key { .. }), "{err}");
    assert!(
        err.to_string().contains("revoked") && err.to_string().contains("event seq 1"),
        "{err}"
    );
}

#[test]
fn reopening_continues_the_chain_and_rebuilds_the_signature_index() {
    let f = Fixture::new(7);
    let id = f.event_id(3);
    let log = f.reopen().unwrap();
    let sig = log.signature_of(&id).expect("index rebuilt on open");
    assert_eq!(sig.seq, 4);
    log.record(event(100));
    log.close().unwrap();
    let r = f.verify().unwrap();
    assert_eq!((r.events, r.checkpoints), (8, 2));
}

#[test]
fn signature_lookup_matches_downstream_validation() {
    let keys = Keys::new(KeyPurpose::Audit);
    let path = keys.dir.path().join("audit.jsonl");
    let log = keys.open_log(&path).unwrap();
    let e = event(1);
    log.record(e.clone());
    let sig = log.signature_of(&e.event_id).unwrap();
    assert_eq!(sig.key_id, keys.signer.key_id());
    // A consumer: canonical JSON of the event without `signature`, then Ed25519 verify.
    let mut value = serde_json::to_value(&e).unwrap();
    value.as_object_mut().unwrap().remove("signature");
    let bytes = serde_json_canonicalizer::to_vec(&value).unwrap();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&sig.signature)
        .unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&raw).unwrap();
    keys.signer
        .verifying_key()
        .verify_strict(&bytes, &signature)
        .expect("detached signature verifies");
    assert!(log.signature_of("no-such-event").is_none());
}

#[test]
fn concurrent_writers_produce_a_valid_chain() {
    let keys = Keys::new(KeyPurpose::Audit);
    let path = keys.dir.path().join("audit.jsonl");
    let config = AuditLogConfig {
        checkpoint_every: 7,
    };
    let log = Arc::new(AuditLog::open(&path, keys.signer.clone(), &keys.source(), config).unwrap());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let log = log.clone();
            s.spawn(move || (0..40).for_each(|i| log.record(event(t * 1000 + i))));
        }
    });
    assert_eq!(log.failed_writes(), 0);
    // Appends that found another waiting left the head to it; the last one wrote it, so the
    // head covers the last line without a flush.
    let r = verify_log(&path, &keys.source()).unwrap();
    assert_eq!((r.events, r.past_head), (160, 0));
    log.flush().unwrap();
    let r = verify_log(&path, &keys.source()).unwrap();
    assert_eq!((r.events, r.checkpoints), (160, 23));
}

fn copy(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn crash_recovery_accepts_a_log_ahead_of_its_head_but_not_behind() {
    let f = Fixture::new(5);
    let head = head_path_for(&f.path);
    let (old_head, old_log) = (copy(&head), copy(&f.path));
    let log = f.reopen().unwrap();
    log.append(event(99)).unwrap();
    std::mem::forget(log); // simulate a crash: no final checkpoint
    // Crash between the log append and the head rewrite: the head is one record behind. The
    // extra record is signed and chained, so the log verifies and the report counts it.
    std::fs::write(&head, &old_head).unwrap();
    assert_eq!(f.verify().unwrap().past_head, 1);
    let log = f.reopen().unwrap();
    log.close().unwrap();
    let r = f.verify().unwrap();
    assert_eq!((r.events, r.past_head), (6, 0));
    // A log shorter than its head (truncation) refuses to open.
    std::fs::write(&f.path, &old_log).unwrap();
    let err = f.reopen().unwrap_err();
    assert!(
        err.to_string().contains("head checkpoint mismatch"),
        "{err}"
    );
}

#[test]
fn a_log_is_only_reopened_with_keys_that_know_its_signers() {
    let f = Fixture::new(3);
    let stranger = Keyring::open(tempfile::tempdir().unwrap().path(), KeyPurpose::Audit).unwrap();
    let empty = KeySource::from_keyring(&stranger).unwrap();
    let err = AuditLog::open(
        &f.path,
        f.keys.signer.clone(),
        &empty,
        AuditLogConfig::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("head checkpoint is invalid"),
        "{err}"
    );
}

#[test]
fn events_with_awkward_float_details_verify() {
    let keys = Keys::new(KeyPurpose::Audit);
    let path = keys.dir.path().join("audit.jsonl");
    let log = keys.open_log(&path).unwrap();
    let floats = [
        0.1 + 0.2,
        1e-7,
        5e-324,
        f64::MAX,
        123.456e-3,
        -0.0,
        2.2250738585072014e-308,
        0.85,
    ];
    for (i, x) in floats.into_iter().enumerate() {
        log.record(event(i as u64).with_detail("score", x).with_detail(
            "nested",
            serde_json::json!({"z": [x, 1u64 << 60], "a": null}),
        ));
    }
    log.close().unwrap();
    assert_eq!(
        verify_log(&path, &keys.source()).unwrap().events,
        floats.len() as u64
    );
}

#[test]
fn the_log_and_its_head_are_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let keys = Keys::new(KeyPurpose::Audit);
    let dir = keys.dir.path().join("data").join("audit");
    let path = dir.join("audit.jsonl");
    let log = keys.open_log(&path).unwrap();
    log.record(event(1));
    log.close().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&head_path_for(&path)), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(dir.parent().unwrap()), 0o700);
}

/// The audit key of every record of the log at `path`, in order (checkpoints included).
fn signers(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let kind = v["type"].as_str().unwrap().to_owned();
            let key = match kind.as_str() {
                "event" => v["key_id"].as_str(),
                _ => v["checkpoint"]["key_id"].as_str(),
            };
            (kind, key.unwrap().to_owned())
        })
        .collect()
}

/// `forge keys rotate --purpose audit` is `Keyring::open(data_dir, Audit)?.rotate()` in another
/// process: a log that follows its keyring signs the next record with the new key, and the whole
/// log still verifies.
#[test]
fn a_running_log_follows_a_rotation_without_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let path = AuditLog::default_path(data.path());
    let ring = Keyring::open(data.path(), KeyPurpose::Audit).unwrap();
    let log = AuditLog::open_following(&path, ring, AuditLogConfig::default()).unwrap();
    log.record(event(1));
    log.record(event(2));
    let old = log.key_id();

    // What `forge keys rotate --purpose audit` does (crates/forge-cli/src/cmd/keys.rs).
    let new = Keyring::open(data.path(), KeyPurpose::Audit)
        .unwrap()
        .rotate()
        .unwrap();
    assert_ne!(new.key_id, old);
    let sig = log.append(event(3)).unwrap();
    assert_eq!(
        sig.key_id, new.key_id,
        "the next record is signed by the new key"
    );
    assert_eq!(log.key_id(), new.key_id);
    log.record(event(4));

    let keys = KeySource::load(data.path(), KeyPurpose::Audit, None).unwrap();
    let report = verify_log(&path, &keys).expect("verifies across the rotation");
    assert_eq!(report.events, 4);
    assert_eq!(
        signers(&path),
        [
            ("event", &old),
            ("event", &old),
            ("checkpoint", &old),
            ("event", &new.key_id),
            ("event", &new.key_id),
        ]
        .map(|(k, id)| (k.to_owned(), id.clone())),
        "the retired key seals its records with a checkpoint before the switch"
    );
    log.close().unwrap();
    verify_log(&path, &keys).expect("verifies after close");

    // A restarted service continues with the new key.
    let ring = Keyring::open(data.path(), KeyPurpose::Audit).unwrap();
    let log = AuditLog::open_following(&path, ring, AuditLogConfig::default()).unwrap();
    assert_eq!(log.key_id(), new.key_id);
    log.record(event(5));
    log.close().unwrap();
    assert_eq!(verify_log(&path, &keys).unwrap().events, 5);
}

#[test]
fn a_running_log_stops_signing_with_a_revoked_key_at_once() {
    let data = tempfile::tempdir().unwrap();
    let path = AuditLog::default_path(data.path());
    let ring = Keyring::open(data.path(), KeyPurpose::Audit).unwrap();
    let log = AuditLog::open_following(&path, ring, AuditLogConfig::default()).unwrap();
    log.record(event(1));
    let old = log.key_id();
    let replacement = Keyring::open(data.path(), KeyPurpose::Audit)
        .unwrap()
        .revoke(&old)
        .unwrap()
        .expect("revoking the active key makes a new one");
    let sig = log.append(event(2)).unwrap();
    assert_eq!(sig.key_id, replacement.key_id);
    let kinds: Vec<String> = signers(&path).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        ["event", "event"],
        "no checkpoint by the revoked key"
    );
    log.close().unwrap();
    // The records the revoked key signed fail, as for any revoked key; the new ones do not.
    let keys = KeySource::load(data.path(), KeyPurpose::Audit, None).unwrap();
    let err = verify_log(&path, &keys).unwrap_err().to_string();
    assert!(
        err.contains("event seq 1") && err.contains("revoked"),
        "{err}"
    );
}

#[test]
fn a_log_keeps_signing_when_the_new_key_cannot_be_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let path = AuditLog::default_path(data.path());
    let ring = Keyring::open(data.path(), KeyPurpose::Audit).unwrap();
    let log = AuditLog::open_following(&path, ring, AuditLogConfig::default()).unwrap();
    let old = log.key_id();
    let new = Keyring::open(data.path(), KeyPurpose::Audit)
        .unwrap()
        .rotate()
        .unwrap();
    let key_file =
        Keyring::dir_for(data.path(), KeyPurpose::Audit).join(format!("{}.key.pem", new.key_id));
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Refused (open to others), reported, and the record is still written with the old key.
    let sig = log.append(event(1)).unwrap();
    assert_eq!(sig.key_id, old);
    assert_eq!(log.failed_writes(), 0);
    log.close().unwrap();
    let keys = KeySource::load(data.path(), KeyPurpose::Audit, None).unwrap();
    verify_log(&path, &keys).expect("a retired key's records verify");
}
