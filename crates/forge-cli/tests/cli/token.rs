//! `forge token mint`. What makes a token valid is forge-auth's to test; here: that the
//! arguments end up in the claims, that only the token is printed, and the exit codes.

use std::path::Path;
use std::process::Command;

use forge_auth::{AuthConfig, AuthSettings, Verifier};

use crate::{forge, run};

/// `forge token mint --tenant TENANT --roles ROLES` with the data dir `dir`.
fn mint(dir: &Path, tenant: &str, roles: &str) -> Command {
    let mut cmd = forge(dir);
    cmd.args(["token", "mint", "--tenant", tenant, "--roles", roles]);
    cmd
}

#[tokio::test]
async fn minted_tokens_carry_the_arguments_and_the_data_dirs_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(mint(dir.path(), "demo", "forge.spawn, forge.score.read")
        .args(["--ttl", "30m"])
        // A client setting must not leak into the minted subject.
        .env("FORGE_SUB", "someone-else"))
    .expect(0);
    assert_eq!(out.stdout.lines().count(), 1, "only the token: {out:?}");
    let v = Verifier::new(&AuthConfig::local(dir.path()).unwrap());
    let c = v.verify(out.stdout.trim_end()).await.unwrap();
    assert_eq!(c.tenant_id.as_deref(), Some("demo"));
    assert_eq!(c.sub, "demo-cli");
    assert_eq!(c.roles, ["forge.spawn", "forge.score.read"]);
    assert_eq!(c.exp - c.iat.unwrap(), 1800);

    // Another data dir's secret signs tokens this verifier refuses.
    let other = tempfile::tempdir().unwrap();
    let foreign = run(&mut mint(other.path(), "demo", "forge.spawn")).expect(0);
    assert!(v.verify(foreign.stdout.trim_end()).await.is_err());
}

#[tokio::test]
async fn issuer_and_audience_come_from_the_shared_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(mint(dir.path(), "acme", "forge.spawn")
        .args(["--sub", "alice", "--audience", "labs"])
        .env("FORGE_JWT_ISSUER", "https://idp.example/"))
    .expect(0);
    let settings = AuthSettings {
        issuer: "https://idp.example/".into(),
        audience: "labs".into(),
        ..AuthSettings::default()
    };
    let v = Verifier::new(&settings.resolve(dir.path()).unwrap());
    let c = v.verify(out.stdout.trim_end()).await.unwrap();
    assert_eq!(c.sub, "alice");
    let default = Verifier::new(&AuthConfig::local(dir.path()).unwrap());
    assert!(default.verify(out.stdout.trim_end()).await.is_err());
}

#[test]
fn bad_roles_and_ttls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut mint(dir.path(), "demo", " ,")).expect(1);
    assert!(
        out.stderr.contains("--roles must name at least one role"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty());
    let out = run(mint(dir.path(), "demo", "x").args(["--ttl", "1y"])).expect(2);
    assert!(out.stderr.contains("--ttl"), "{out:?}");
}
