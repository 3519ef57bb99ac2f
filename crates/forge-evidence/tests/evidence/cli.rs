//! The CLI run functions end to end on a temp data dir.

use clap::Parser;
use forge_evidence::cli::{
    AuditCommand, BundleCommand, DataDirArg, KeysCommand, run_audit, run_bundle, run_keys,
};
use forge_evidence::keyring::KeyPurpose;

use crate::common::{Keys, bundle};

#[derive(Debug, Parser)]
struct TestCli {
    #[command(flatten)]
    data: DataDirArg,
    #[command(subcommand)]
    keys: KeysCommand,
}

fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap()
}

#[test]
fn keys_subcommands_parse_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let parsed =
        TestCli::try_parse_from(["forge", "--data-dir", data, "rotate", "--purpose", "audit"])
            .unwrap();
    assert_eq!(parsed.data.data_dir, dir.path());
    let mut out = Vec::new();
    assert_eq!(run_keys(dir.path(), parsed.keys, &mut out).unwrap(), 0);
    assert!(text(out).starts_with("created audit key ed25519-"));

    let mut out = Vec::new();
    run_keys(
        dir.path(),
        KeysCommand::Rotate {
            purpose: KeyPurpose::Audit,
        },
        &mut out,
    )
    .unwrap();
    let out = text(out);
    assert!(out.contains("is retired"), "{out}");
    let retired = out
        .rsplit(", ")
        .next()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();

    let mut out = Vec::new();
    run_keys(
        dir.path(),
        KeysCommand::Revoke {
            key_id: retired.clone(),
            purpose: KeyPurpose::Audit,
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(text(out), format!("revoked audit key {retired}\n"));

    let mut out = Vec::new();
    run_keys(dir.path(), KeysCommand::List { purpose: None }, &mut out).unwrap();
    let out = text(out);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("revoked") && out.contains("active"), "{out}");

    let mut out = Vec::new();
    run_keys(
        dir.path(),
        KeysCommand::Export {
            purpose: KeyPurpose::Audit,
            out: None,
        },
        &mut out,
    )
    .unwrap();
    let set: forge_evidence::KeySet = serde_json::from_slice(&out).unwrap();
    assert_eq!(set.keys.len(), 2);

    assert!(TestCli::try_parse_from(["forge", "rotate", "--purpose", "billing"]).is_err());
}

#[tokio::test]
async fn bundle_verify_prints_ok_or_each_problem() {
    let keys = Keys::new(KeyPurpose::Verdict);
    let b = bundle(&keys);
    let bundle_dir = keys.dir.path().join("bundle");
    b.write_to_dir(&bundle_dir).unwrap();
    let target = bundle_dir.to_str().unwrap().to_owned();

    let mut out = Vec::new();
    let code = run_bundle(
        keys.dir.path(),
        BundleCommand::Verify {
            target: target.clone(),
            public_key: None,
        },
        &mut out,
    )
    .await
    .unwrap();
    let printed = text(out);
    assert_eq!(code, 0, "{printed}");
    assert!(
        printed.starts_with("OK scn-def456789012 run run-0123456789ab track netplus score "),
        "{printed}"
    );
    assert!(
        printed.contains("(16/20)") && printed.contains(keys.signer.key_id()),
        "{printed}"
    );

    std::fs::remove_file(bundle_dir.join("score.json")).unwrap();
    std::fs::write(bundle_dir.join("score.json"), b"{}").unwrap();
    let mut out = Vec::new();
    let code = run_bundle(
        keys.dir.path(),
        BundleCommand::Verify {
            target,
            public_key: None,
        },
        &mut out,
    )
    .await
    .unwrap();
    let printed = text(out);
    assert_eq!(code, 1, "{printed}");
    assert!(printed.starts_with("FAIL score.json: sha256 "), "{printed}");

    let empty = tempfile::tempdir().unwrap();
    let err = run_bundle(
        empty.path(),
        BundleCommand::Verify {
            target: bundle_dir.to_str().unwrap().into(),
            public_key: None,
        },
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("--public-key"), "{err}");
}

#[test]
fn audit_verify_reports_ok_and_failure() {
    use forge_core::audit::{AuditEvent, AuditSink, Outcome};
    use forge_evidence::audit_log::{AuditLog, AuditLogConfig};
    let keys = Keys::new(KeyPurpose::Audit);
    let path = AuditLog::default_path(keys.dir.path());
    let log = AuditLog::open(
        &path,
        keys.signer.clone(),
        &keys.source(),
        AuditLogConfig::default(),
    )
    .unwrap();
    for i in 0..3 {
        log.record(AuditEvent::new(
            crate::common::at(i),
            "policy.decision",
            "forge_opa",
            "scn-000000000001",
            "decide",
            Outcome::Denied,
        ));
    }
    log.close().unwrap();
    let mut out = Vec::new();
    assert_eq!(
        run_audit(
            keys.dir.path(),
            AuditCommand::Verify {
                log: None,
                public_key: None
            },
            &mut out
        )
        .unwrap(),
        0
    );
    assert!(text(out).contains(": 3 events, 1 checkpoints"));

    let content = std::fs::read_to_string(&path)
        .unwrap()
        .replace("forge_opa", "forge_xxx");
    std::fs::write(&path, content).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        run_audit(
            keys.dir.path(),
            AuditCommand::Verify {
                log: None,
                public_key: None
            },
            &mut out
        )
        .unwrap(),
        1
    );
    assert!(text(out).contains("event seq 1"));
}
