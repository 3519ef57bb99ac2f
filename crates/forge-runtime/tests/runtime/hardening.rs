//! docs/design.md §6 container invariants, asserted from `docker inspect` (the CLI, independent of
//! the runtime's own client) and from inside the containers.

use forge_runtime::{Runtime, RuntimeError};

use crate::common::*;

fn caps(v: &serde_json::Value) -> Vec<String> {
    let mut c: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    c.sort();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_container_is_hardened() {
    let rt = runtime().await;
    let t = fixture("netplus-lab.yaml");
    let (lab, guard) = launch(&rt, &t).await;
    let expected_caps = [
        ("learner", vec!["NET_ADMIN", "NET_RAW"]),
        ("router", vec!["NET_ADMIN"]),
        ("web", vec![]),
    ];
    for (name, want_caps) in expected_caps {
        let docker_name = forge_runtime::container_name(&lab.scenario_id, name);
        let v = docker_inspect(&docker_name);
        let h = &v["HostConfig"];
        assert_eq!(caps(&h["CapDrop"]), ["ALL"], "{name}: CapDrop");
        assert_eq!(caps(&h["CapAdd"]), want_caps, "{name}: CapAdd");
        let secopt: Vec<String> = caps(&h["SecurityOpt"]);
        assert!(
            secopt.contains(&"no-new-privileges:true".to_owned()),
            "{name}: {secopt:?}"
        );
        assert!(
            !secopt.iter().any(|s| s.contains("unconfined")),
            "{name}: seccomp/apparmor unconfined: {secopt:?}"
        );
        assert_eq!(h["Privileged"], false, "{name}");
        assert_eq!(h["ReadonlyRootfs"], true, "{name}");
        let tmp = h["Tmpfs"]["/tmp"].as_str().unwrap_or_default();
        assert!(tmp.contains("size=64m"), "{name}: /tmp tmpfs {tmp}");
        assert_eq!(
            h["Memory"],
            384 * 1024 * 1024 / 3,
            "{name}: memory split across 3"
        );
        assert_eq!(
            h["MemorySwap"], h["Memory"],
            "{name}: no swap beyond memory"
        );
        assert_eq!(h["NanoCpus"], 500_000_000, "{name}: cpu split across 3");
        assert_eq!(h["PidsLimit"], 64, "{name}");
        assert_eq!(h["NetworkMode"], "none", "{name}");
        assert_eq!(h["RestartPolicy"]["Name"], "no", "{name}");
        assert!(
            h["Binds"].is_null() || h["Binds"].as_array().is_some_and(|a| a.is_empty()),
            "{name}: binds"
        );
        assert!(
            v["Mounts"]
                .as_array()
                .is_none_or(|m| m.iter().all(|m| m["Type"] == "tmpfs")),
            "{name}: mounts {}",
            v["Mounts"]
        );
        assert!(
            h["Mounts"].is_null() || h["Mounts"].as_array().is_some_and(|a| a.is_empty()),
            "{name}: host mounts"
        );
        for ns in ["PidMode", "UsernsMode", "UTSMode"] {
            assert_eq!(h[ns], "", "{name}: {ns} must not be host");
        }
        assert_eq!(h["IpcMode"], "private", "{name}");
        assert!(
            !v.to_string().contains("docker.sock"),
            "{name}: docker socket exposed"
        );
        let l = &v["Config"]["Labels"];
        assert_eq!(l["forge.scenario_id"], lab.scenario_id.as_str());
        assert_eq!(l["forge.tenant_id"], "tenant-test");
        assert_eq!(l["forge.container"], name);
        assert_eq!(l["forge.template"], "runtime-netplus-fixture");
        assert_eq!(l["forge.test_run"], run_id());
        assert!(
            l["forge.created_at"]
                .as_str()
                .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
        );
        assert_eq!(
            v["Name"].as_str().unwrap(),
            format!("/forge_{}_{name}", lab.scenario_id.suffix())
        );
    }

    // From inside: effective capabilities are exactly the declared ones (NET_ADMIN=12, NET_RAW=13).
    let cap_eff = |s: &str| {
        let line = s
            .lines()
            .find(|l| l.starts_with("CapEff:"))
            .unwrap_or_default()
            .to_owned();
        u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).unwrap_or(u64::MAX)
    };
    let scn = &lab.scenario_id;
    assert_eq!(
        cap_eff(
            &sh(&rt, scn, "learner", "cat /proc/self/status")
                .await
                .stdout
        ),
        (1 << 12) | (1 << 13)
    );
    assert_eq!(
        cap_eff(&sh(&rt, scn, "web", "cat /proc/self/status").await.stdout),
        0
    );
    let ro = sh(&rt, scn, "learner", "touch /etc/x").await;
    assert_ne!(ro.exit_code, 0, "root filesystem must be read-only");
    assert_eq!(
        sh(&rt, scn, "learner", "touch /tmp/x").await.exit_code,
        0,
        "/tmp must be writable"
    );
    // Forwarding only where the image asks for it (the router).
    for (container, forwarding) in [("router", "1"), ("learner", "0")] {
        let out = sh(&rt, scn, container, "cat /proc/sys/net/ipv4/ip_forward").await;
        assert_eq!(out.stdout.trim(), forwarding, "ip_forward in {container}");
    }
    // no-new-privileges is in force for exec'd processes too.
    assert_prints(
        &rt,
        scn,
        "learner",
        "cat /proc/self/status",
        "NoNewPrivs:\t1",
    )
    .await;
    guard.close(&rt).await;
    assert_eq!(lab_leftovers(scn), (vec![], false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_outside_the_allowlist_are_refused() {
    let rt = runtime().await;
    let mut t = fixture("flat-lab.yaml");
    t.spec.assets.containers[0].capabilities = vec!["SYS_ADMIN".into()];
    let spec = spec(&t);
    let scn = spec.scenario_id.clone();
    let _guard = LabGuard::new(&scn);
    let err = rt
        .launch(spec)
        .await
        .expect_err("SYS_ADMIN must be refused");
    assert!(
        matches!(err, RuntimeError::CapabilityNotAllowed { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("SYS_ADMIN"), "{err}");
    assert_eq!(
        lab_leftovers(&scn),
        (vec![], false),
        "nothing may be created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_says_to_build_images() {
    let rt = runtime().await;
    let mut t = fixture("flat-lab.yaml");
    t.spec.assets.containers[1].image = format!("forge/absent-{}:1", run_id());
    let spec = spec(&t);
    let scn = spec.scenario_id.clone();
    let _guard = LabGuard::new(&scn);
    let err = rt.launch(spec).await.expect_err("missing image");
    assert!(matches!(err, RuntimeError::ImageMissing { .. }), "{err}");
    assert!(
        err.to_string().contains("run `forge images build`"),
        "{err}"
    );
    assert_eq!(
        lab_leftovers(&scn),
        (vec![], false),
        "a failed launch leaves nothing behind"
    );
}

/// Production requires user-namespace remapping: on an engine without it, a runtime that
/// requires it builds nothing and is not ready, naming the fix; with it, labs launch as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labs_need_remapped_user_namespaces_when_required() {
    let rt = runtime().await.require_user_namespaces(true);
    let remapped = rt.user_namespaces_remapped().await.expect("engine info");
    let t = fixture("netplus-lab.yaml");
    let s = spec(&t);
    let id = s.scenario_id.clone();
    let guard = LabGuard::new(&id);
    let launched = rt.launch(s).await;
    if remapped {
        assert!(launched.is_ok(), "{:?}", launched.err());
        assert!(rt.ping().await.is_ok());
    } else {
        let err = launched.expect_err("no lab on an engine whose lab root is host root");
        assert!(matches!(err, RuntimeError::HostRootLabs), "{err}");
        assert!(err.to_string().contains("--userns-remap"), "{err}");
        assert!(
            rt.list_labs()
                .await
                .unwrap()
                .iter()
                .all(|l| l.scenario_id != id.as_str()),
            "nothing was built"
        );
        assert!(matches!(rt.ping().await, Err(RuntimeError::HostRootLabs)));
    }
    guard.close(&rt).await;
}

/// The uid a lab's processes have *on the host*, read from the host's `/proc` (not from inside,
/// where root is uid 0 either way): with remapping on, lab root is an unprivileged host uid out
/// of the engine's subordinate range; without it, it is host root — and the runtime's detection
/// must say which, since production refuses the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_root_is_an_unprivileged_host_uid_when_the_engine_remaps() {
    let rt = runtime().await;
    let remapped = rt.user_namespaces_remapped().await.expect("engine info");
    let t = fixture("netplus-lab.yaml");
    let (lab, guard) = launch(&rt, &t).await;
    let host_uids = |status: &str| -> Vec<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap_or_default();
        line.split_whitespace()
            .skip(1)
            .filter_map(|u| u.parse().ok())
            .collect()
    };
    for name in ["learner", "router", "web"] {
        let docker_name = forge_runtime::container_name(&lab.scenario_id, name);
        let pid = docker_inspect(&docker_name)["State"]["Pid"]
            .as_u64()
            .expect("running container has a pid");
        assert!(pid > 0, "{name}: pid");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("{name}: /proc/{pid}/status: {e}"));
        let uids = host_uids(&status);
        assert_eq!(uids.len(), 4, "{name}: {status}");
        // Inside, the same process is root: the remap is what makes the difference.
        let inside = sh(&rt, &lab.scenario_id, name, "id -u").await;
        assert_eq!(inside.stdout.trim(), "0", "{name}: uid inside");
        if remapped {
            assert!(
                uids.iter().all(|&u| u >= 1000),
                "{name}: lab root must not be a host system uid: {uids:?}"
            );
            // The uid lies in the engine's subordinate range (`dockremap` in /etc/subuid).
            if let Some((start, len)) = subuid_range("dockremap") {
                assert!(
                    uids.iter().all(|&u| (start..start + len).contains(&u)),
                    "{name}: {uids:?} outside dockremap's {start}+{len}"
                );
            }
        } else {
            assert_eq!(uids, [0, 0, 0, 0], "{name}: no remap means host root");
        }
    }
    guard.close(&rt).await;
    assert_eq!(lab_leftovers(&lab.scenario_id), (vec![], false));
}

/// `user:start:count` from /etc/subuid for `user`.
fn subuid_range(user: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/etc/subuid").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then_some(())?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// CIS Docker Benchmark 4.6 / 5.27: every lab image carries a HEALTHCHECK, the engine runs it,
/// and the probe passes in a healthy lab (run here by hand: the engine's first probe comes only
/// after the interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lab_container_has_a_health_probe_that_passes() {
    let rt = runtime().await;
    let t = fixture("netplus-lab.yaml");
    let (lab, guard) = launch(&rt, &t).await;
    for name in ["learner", "router", "web"] {
        let docker_name = forge_runtime::container_name(&lab.scenario_id, name);
        let v = docker_inspect(&docker_name);
        let test: Vec<String> = v["Config"]["Healthcheck"]["Test"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no healthcheck: {}", v["Config"]))
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        assert_eq!(
            test.first().map(String::as_str),
            Some("CMD"),
            "{name}: {test:?}"
        );
        assert_eq!(
            v["Config"]["Healthcheck"]["Interval"], 30_000_000_000u64,
            "{name}"
        );
        let status = v["State"]["Health"]["Status"].as_str().unwrap_or_default();
        assert!(
            ["starting", "healthy"].contains(&status),
            "{name}: health {status}"
        );
        let quoted: Vec<String> = test[1..]
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect();
        let probe = sh(&rt, &lab.scenario_id, name, &quoted.join(" ")).await;
        assert_eq!(probe.exit_code, 0, "{name}: probe {test:?}: {probe:?}");
        let snap = rt.snapshot(&lab.scenario_id, name).await.expect("snapshot");
        assert!(
            matches!(snap.health.as_deref(), Some("starting" | "healthy")),
            "{name}: {:?}",
            snap.health
        );
    }
    guard.close(&rt).await;
    assert_eq!(lab_leftovers(&lab.scenario_id), (vec![], false));
}
