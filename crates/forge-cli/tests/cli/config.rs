//! Settings: each bad value fails `forge up` before anything starts, naming the variable at
//! fault and its flag; empty variables count as unset.

use crate::{forge, run};

/// `forge up --check` with `args` and `vars` set; every case here is invalid, so nothing starts.
fn up_check(args: &[&str], vars: &[(&str, &str)]) -> crate::Run {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = forge(dir.path());
    cmd.args(["up", "--check"])
        .args(args)
        .envs(vars.iter().copied());
    run(&mut cmd)
}

/// [`up_check`] without flags.
fn up_with(vars: &[(&str, &str)]) -> crate::Run {
    up_check(&[], vars)
}

/// Asserts that `forge up --check` with `vars` exits with `code` and says every one of `needles`.
#[track_caller]
fn assert_refused(vars: &[(&str, &str)], code: i32, needles: &[&str]) {
    let out = up_with(vars);
    assert_eq!(out.code, code, "{vars:?}: {out:#?}");
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "{vars:?}: no `{needle}` in {out:#?}"
        );
    }
}

#[test]
fn bad_settings_name_their_variable_and_flag() {
    // Secrets never appear in the complaint, even when the setting carrying them is wrong.
    for vars in [
        &[("DATABASE_URL", "mysql://u:hunter2@db/forge")][..],
        &[
            ("FORGE_S3_ENDPOINT", "s3.example:9000"),
            ("MINIO_ROOT_USER", "forge"),
            ("MINIO_ROOT_PASSWORD", "hunter2"),
        ],
    ] {
        let out = up_with(vars);
        assert!(!out.stderr.contains("hunter2"), "{out:#?}");
    }
    for (vars, code, needles) in [
        (
            &[
                ("FORGE_JWKS_URL", "https://idp.example/jwks"),
                ("FORGE_JWKS_FILE", "/tmp/jwks.json"),
            ][..],
            1,
            &[
                "FORGE_JWKS_URL (--jwks-url)",
                "FORGE_JWKS_FILE (--jwks-file)",
                "both set",
            ][..],
        ),
        (
            &[("FORGE_JWKS_URL", "idp.example/jwks")],
            1,
            &["FORGE_JWKS_URL", "http"],
        ),
        (
            &[("NATS_URL", "http://nats:4222")],
            1,
            &["NATS_URL (--nats-url)", "nats://"],
        ),
        (
            &[("DATABASE_URL", "mysql://u:hunter2@db/forge")],
            1,
            &["DATABASE_URL (--database-url)", "postgres://"],
        ),
        (
            &[("FORGE_S3_ENDPOINT", "http://127.0.0.1:9000")],
            1,
            &["MINIO_ROOT_USER (--s3-access-key)", "MINIO_ROOT_PASSWORD"],
        ),
        (
            &[
                ("FORGE_S3_ENDPOINT", "s3.example:9000"),
                ("MINIO_ROOT_USER", "forge"),
                ("MINIO_ROOT_PASSWORD", "hunter2"),
            ],
            1,
            &["FORGE_S3_ENDPOINT (--s3-endpoint)", "http"],
        ),
        (
            &[("FORGE_AUTH_LOCAL_HS256", "false")],
            1,
            &["FORGE_AUTH_LOCAL_HS256", "no token"],
        ),
        (
            &[("BILLING_MODE", "gateway")],
            1,
            &["BILLING_GATEWAY_URL (--billing-gateway-url)"],
        ),
        (
            &[
                ("BILLING_MODE", "gateway"),
                ("BILLING_GATEWAY_URL", "ftp://billing"),
            ],
            1,
            &["BILLING_GATEWAY_URL", "http"],
        ),
        (
            &[("IDEMPOTENCY_LEASE", "5s")],
            1,
            &["IDEMPOTENCY_LEASE", "IDEMPOTENCY_WAIT"],
        ),
        (
            &[("SPAWN_BODY_LIMIT", "12")],
            1,
            &["SPAWN_BODY_LIMIT (--spawn-body-limit)"],
        ),
        (
            &[("OPA_URL", "localhost:8181")],
            1,
            &["OPA_URL (--opa-url)"],
        ),
        (
            &[("SPAWN_BASE_URL", "labs.example")],
            1,
            &["SPAWN_BASE_URL"],
        ),
        (
            &[("FORGE_TENANTS_FILE", "/nonexistent/tenants.toml")],
            1,
            &["FORGE_TENANTS_FILE (--tenants)"],
        ),
        (
            &[("TEMPLATE_DIR", "/nonexistent/templates")],
            1,
            &["TEMPLATE_DIR (--template-dir)"],
        ),
        (&[("LOG_LEVEL", "info,[[")], 2, &["LOG_LEVEL (--log-level)"]),
    ] {
        assert_refused(vars, code, needles);
    }
}

#[test]
fn values_clap_refuses_name_their_variable() {
    // (variable, bad value, what clap's complaint says besides the variable)
    for (var, value, complaint) in [
        ("FORGE_AUTH_LOCAL_HS256", "maybe", "--auth-local-hs256"),
        ("BILLING_MODE", "free", "stub, gateway"),
        ("IDEMPOTENCY_RETENTION", "forever", "not a duration"),
        ("REQUEST_ID_HEADER", "bad header", "not an HTTP header name"),
        ("FORGE_JWKS_TTL_SECS", "5m", "--jwks-ttl-secs"),
        ("FORGE_BIND", "everywhere", "--bind"),
    ] {
        assert_refused(&[(var, value)], 2, &[complaint, var]);
    }
}

#[test]
fn empty_variables_count_as_unset() {
    // Only the lease is wrong: the empty JWKS URL, OPA URL and bind address are ignored.
    let out = up_with(&[
        ("FORGE_JWKS_URL", ""),
        ("FORGE_JWKS_FILE", "/tmp/jwks.json"),
        ("OPA_URL", ""),
        ("FORGE_BIND", ""),
        ("IDEMPOTENCY_LEASE", "5s"),
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("IDEMPOTENCY_LEASE"), "{out:#?}");
    assert!(
        !out.stderr.contains("JWKS") && !out.stderr.contains("OPA"),
        "{out:#?}"
    );
}

#[test]
fn a_flag_beats_its_variable() {
    let lease = [("IDEMPOTENCY_LEASE", "5s")];
    assert_eq!(up_with(&lease).code, 1);
    let flags = ["--idempotency-wait", "1s", "--spawn-body-limit", "10"];
    let out = up_check(&flags, &lease);
    // The lease is fine against the flag's wait; the body limit flag is what is wrong now.
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("SPAWN_BODY_LIMIT"), "{out:#?}");
}
