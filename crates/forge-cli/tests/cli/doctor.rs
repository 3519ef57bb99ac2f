//! `forge doctor` against the real engine (feature `docker`): every check named, a missing
//! user-namespace remap a warning in dev and a failure in production.

use std::process::Command;

use crate::{repo, run};

fn doctor(env: &str) -> crate::Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forge"));
    cmd.current_dir(repo()).arg("doctor").env("FORGE_ENV", env);
    run(&mut cmd)
}

#[test]
fn doctor_names_every_check_and_is_stricter_in_production() {
    let dev = doctor("dev");
    for check in [
        "engine",
        "user namespaces",
        "lab starts",
        "iproute2",
        "nftables",
        "busybox",
        "lab images",
    ] {
        assert!(dev.stdout.contains(check), "{check} missing: {dev:#?}");
    }
    assert!(dev.stdout.contains("API 1."), "{dev:#?}");
    let remapped = dev.stdout.contains("ok    user namespaces");
    let prod = doctor("production");
    if remapped {
        assert_eq!(prod.code, dev.code, "{prod:#?}");
    } else {
        assert!(dev.stdout.contains("warn  user namespaces"), "{dev:#?}");
        assert!(prod.stdout.contains("FAIL  user namespaces"), "{prod:#?}");
        assert_eq!(prod.code, 1, "{prod:#?}");
    }
}
