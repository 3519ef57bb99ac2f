//! `forge keys|bundle|audit` on a temp data dir.

use std::path::Path;

use chrono::{TimeZone, Utc};
use forge_core::audit::{AuditEvent, AuditSink, Outcome};
use forge_core::{ArtifactType, CriterionResult, Track};
use forge_evidence::bundle::{ArtifactInput, Bundle, BundleInput, BundleMeta};
use forge_evidence::{AuditLog, AuditLogConfig, KeyPurpose, KeySet, KeySource, Keyring};

use crate::{forge, run};

#[test]
fn keys_rotate_revoke_list_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let keys = |args: &[&str]| run(forge(dir.path()).arg("keys").args(args));
    let out = keys(&["rotate", "--purpose", "audit"]).expect(0);
    assert!(
        out.stdout.starts_with("created audit key ed25519-"),
        "{out:?}"
    );

    let out = keys(&["rotate", "--purpose", "audit"]).expect(0);
    assert!(out.stdout.contains("is retired"), "{out:?}");
    let retired = out
        .stdout
        .trim_end()
        .rsplit(", ")
        .next()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();

    let out = keys(&["revoke", &retired, "--purpose", "audit"]).expect(0);
    assert_eq!(out.stdout, format!("revoked audit key {retired}\n"));
    let out = keys(&["revoke", &retired, "--purpose", "audit"]).expect(1);
    assert!(out.stderr.contains("already revoked"), "{out:?}");

    let out = keys(&["list"]).expect(0);
    assert_eq!(out.stdout.lines().count(), 3, "{out:?}");
    assert!(
        out.stdout.contains("revoked") && out.stdout.contains("active"),
        "{out:?}"
    );

    let out = keys(&["export", "--purpose", "audit"]).expect(0);
    let set: KeySet = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(set.keys.len(), 2);
    let file = dir.path().join("audit-keys.json");
    let out = keys(&[
        "export",
        "--purpose",
        "audit",
        "--out",
        file.to_str().unwrap(),
    ])
    .expect(0);
    assert!(
        out.stdout.starts_with("wrote audit public keys to "),
        "{out:?}"
    );
    assert!(file.is_file());

    let out = keys(&["rotate", "--purpose", "billing"]).expect(2);
    assert!(out.stderr.contains("billing"), "{out:?}");
}

fn at(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_735_000_000 + secs, 0).single().unwrap()
}

/// A one-criterion bundle signed with the verdict key of `data_dir`, written to `out`.
fn write_bundle(data_dir: &Path, out: &Path) {
    let signer = Keyring::open(data_dir, KeyPurpose::Verdict)
        .unwrap()
        .signer()
        .unwrap();
    let artifact = ArtifactInput::new(
        ArtifactType::CommandOutput,
        "crit-01.0.command_output",
        b"64 bytes from 10.20.0.1: icmp_seq=1 ttl=64\n".to_vec(),
    );
    let input = BundleInput {
        meta: BundleMeta {
            scenario_id: "scn-def456789012".parse().unwrap(),
            run_id: "run-0123456789ab".parse().unwrap(),
            track: Track::Netplus,
            collected_at: at(0),
            computed_at: at(5),
        },
        criteria: vec![CriterionResult {
            criterion_id: "crit-01".into(),
            passed: true,
            evidence_refs: vec![artifact.artifact.name.clone()],
            message: None,
            weight: 1.0,
        }],
        artifacts: vec![artifact],
    };
    Bundle::build(input, &signer)
        .unwrap()
        .write_to_dir(out)
        .unwrap();
}

#[test]
fn bundle_verify_prints_ok_or_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    write_bundle(dir.path(), &bundle);
    let verify =
        |data: &Path, target: &Path| run(forge(data).args(["bundle", "verify"]).arg(target));

    let out = verify(dir.path(), &bundle).expect(0);
    assert!(
        out.stdout
            .starts_with("OK scn-def456789012 run run-0123456789ab track netplus score "),
        "{out:?}"
    );
    assert!(out.stdout.contains("(1/1) signed by ed25519-"), "{out:?}");
    verify(dir.path(), &bundle.join("manifest.json")).expect(0);

    // Another machine verifies with the exported keyset, without a keyring of its own.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = verify(elsewhere.path(), &bundle).expect(1);
    assert!(out.stderr.contains("no verdict keyring in"), "{out:?}");
    assert!(out.stderr.contains("--public-key"), "{out:?}");
    let keyset = elsewhere.path().join("verdict.json");
    run(forge(dir.path())
        .args(["keys", "export", "--out"])
        .arg(&keyset))
    .expect(0);
    run(forge(elsewhere.path())
        .args(["bundle", "verify"])
        .arg(&bundle)
        .arg("--public-key")
        .arg(&keyset))
    .expect(0);

    std::fs::remove_file(bundle.join("score.json")).unwrap();
    std::fs::write(bundle.join("score.json"), b"{}").unwrap();
    let out = verify(dir.path(), &bundle).expect(1);
    assert!(
        out.stdout.starts_with("FAIL score.json: sha256 "),
        "{out:?}"
    );

    let out = verify(dir.path(), &dir.path().join("nothing-here")).expect(1);
    assert!(out.stderr.contains("not a bundle directory"), "{out:?}");
}

#[test]
fn audit_verify_reports_ok_and_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(forge(dir.path()).args(["audit", "verify"])).expect(1);
    assert!(out.stderr.contains("no audit log at "), "{out:?}");

    let mut ring = Keyring::open(dir.path(), KeyPurpose::Audit).unwrap();
    let signer = ring.signer().unwrap();
    let path = AuditLog::default_path(dir.path());
    let log = AuditLog::open(
        &path,
        signer,
        &KeySource::from_keyring(&ring).unwrap(),
        AuditLogConfig::default(),
    )
    .unwrap();
    for i in 0..3 {
        log.record(AuditEvent::new(
            at(i),
            "policy.decision",
            "forge_opa",
            "scn-000000000001",
            "decide",
            Outcome::Denied,
        ));
    }
    log.close().unwrap();
    let out = run(forge(dir.path()).args(["audit", "verify"])).expect(0);
    assert!(out.stdout.contains(": 3 events, 1 checkpoints"), "{out:?}");

    let content = std::fs::read_to_string(&path)
        .unwrap()
        .replace("forge_opa", "forge_xxx");
    std::fs::write(&path, content).unwrap();
    let out = run(forge(dir.path()).args(["audit", "verify"])).expect(1);
    assert!(out.stdout.starts_with("FAIL "), "{out:?}");
    assert!(out.stdout.contains("event seq 1"), "{out:?}");
}

/// `forge keys rotate --purpose audit` while a service's audit log is open: the log signs its
/// next record with the new key without a restart, and `forge audit verify` still passes.
#[test]
fn a_running_audit_log_follows_forge_keys_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let path = AuditLog::default_path(dir.path());
    let ring = Keyring::open(dir.path(), KeyPurpose::Audit).unwrap();
    let log = AuditLog::open_following(&path, ring, AuditLogConfig::default()).unwrap();
    let event = |i| {
        AuditEvent::new(
            at(i),
            "policy.decision",
            "forge_opa",
            "scn-000000000001",
            "decide",
            Outcome::Denied,
        )
    };
    log.record(event(0));
    let old = log.key_id();
    let out = run(forge(dir.path()).args(["keys", "rotate", "--purpose", "audit"])).expect(0);
    assert!(out.stdout.contains(&format!("{old} is retired")), "{out:?}");
    let sig = log.append(event(1)).unwrap();
    assert_ne!(sig.key_id, old);
    assert!(
        out.stdout.contains(&format!("{} is active", sig.key_id)),
        "{out:?}"
    );
    log.close().unwrap();
    let out = run(forge(dir.path()).args(["audit", "verify"])).expect(0);
    assert!(out.stdout.contains(": 2 events"), "{out:?}");
}
