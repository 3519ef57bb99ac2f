//! exec (timeouts, caps, stdin, exit codes), read_file (archive API and tmpfs, symlink
//! containment, clear errors), snapshots (redacted env), the interactive terminal, and the
//! template test flow on the fixtures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use forge_runtime::{ContainerState, ExecRequest, REDACTED, Runtime, RuntimeError};
use tokio::io::AsyncWriteExt;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reports_codes_streams_and_timeouts() {
    let rt = runtime().await;
    let (lab, guard) = launch(&rt, &fixture("flat-lab.yaml")).await;
    let scn = &lab.scenario_id;

    let r = sh(&rt, scn, "alpha", "echo out; echo err >&2; exit 3").await;
    assert_eq!(
        (
            r.exit_code,
            r.stdout.as_str(),
            r.stderr.as_str(),
            r.timed_out
        ),
        (3, "out\n", "err\n", false)
    );

    let req = ExecRequest::argv(["cat"]).stdin("from-stdin");
    let r = rt.exec(scn, "alpha", req).await.unwrap();
    assert_eq!(r.stdout, "from-stdin");

    let req = ExecRequest::shell("yes | head -c 100000").max_output(1000);
    let r = rt.exec(scn, "alpha", req).await.unwrap();
    assert!(
        r.truncated && r.stdout.len() == 1000,
        "{} bytes",
        r.stdout.len()
    );

    let started = Instant::now();
    let req =
        ExecRequest::shell("sleep 300 & sleep 301; echo never").timeout(Duration::from_secs(1));
    let r = rt.exec(scn, "alpha", req).await.unwrap();
    assert!(r.timed_out && !r.stdout.contains("never"), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "timeout took {:?}",
        started.elapsed()
    );
    // The timed-out command and its children were killed, not left running.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ps = sh(&rt, scn, "alpha", "ps -o args").await.stdout;
    assert!(!ps.contains("sleep 30"), "{ps}");

    let err = rt
        .exec(scn, "gamma", ExecRequest::shell("true"))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NoSuchContainer { .. }), "{err}");
    guard.close(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_file_reads_image_and_tmpfs_files_and_stays_inside() {
    let rt = runtime().await;
    let (lab, guard) = launch(&rt, &fixture("flat-lab.yaml")).await;
    let scn = &lab.scenario_id;

    // Image file, through the archive API.
    let f = rt.read_file(scn, "alpha", "/etc/motd", 4096).await.unwrap();
    assert!(
        String::from_utf8_lossy(&f.bytes).contains("FrostGate"),
        "{f:?}"
    );
    // Docker-managed /etc/hosts carries the lab's names.
    let hosts = rt
        .read_file(scn, "alpha", "/etc/hosts", 4096)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&hosts.bytes).contains("beta"));
    // tmpfs file written in the lab, truncated read, symlink to it.
    sh(
        &rt,
        scn,
        "alpha",
        "printf 0123456789 > /tmp/n && ln -s n /tmp/link",
    )
    .await;
    let f = rt.read_file(scn, "alpha", "/tmp/n", 4).await.unwrap();
    assert_eq!(
        (f.bytes.as_slice(), f.size, f.truncated),
        (&b"0123"[..], 10, true)
    );
    assert_eq!(
        rt.read_file(scn, "alpha", "/tmp/link", 64)
            .await
            .unwrap()
            .bytes,
        b"0123456789"
    );

    // Missing files and directories are clear errors.
    let err = rt
        .read_file(scn, "alpha", "/etc/nope", 64)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::FileNotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "file /etc/nope not found in container alpha"
    );
    let err = rt
        .read_file(scn, "alpha", "/tmp/nope", 64)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::FileNotFound { .. }), "{err}");
    assert!(matches!(
        rt.read_file(scn, "alpha", "/etc", 64).await.unwrap_err(),
        RuntimeError::NotAFile { .. }
    ));
    assert!(matches!(
        rt.read_file(scn, "alpha", "etc/motd", 64)
            .await
            .unwrap_err(),
        RuntimeError::Invalid(_)
    ));

    // A symlink planted in the lab pointing at a host path resolves inside the container.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "host-secret").unwrap();
    let host_path = secret.path().display().to_string();
    sh(
        &rt,
        scn,
        "alpha",
        &format!("ln -s {host_path} /tmp/evil && ln -s ../../../../../..{host_path} /tmp/evil2"),
    )
    .await;
    for p in ["/tmp/evil", "/tmp/evil2"] {
        match rt.read_file(scn, "alpha", p, 64).await {
            Err(RuntimeError::FileNotFound { .. }) => {}
            other => panic!("{p} escaped the container: {other:?}"),
        }
    }
    guard.close(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_redacts_environment_values() {
    let rt = runtime().await;
    let (lab, guard) = launch(&rt, &fixture("netplus-lab.yaml")).await;
    let snap = rt.snapshot(&lab.scenario_id, "learner").await.unwrap();
    assert_eq!(
        snap.env.get("API_TOKEN").map(String::as_str),
        Some(REDACTED),
        "{:?}",
        snap.env
    );
    assert_eq!(
        snap.env.get("LEARNER_MODE").map(String::as_str),
        Some(REDACTED)
    );
    assert!(snap.env.values().all(|v| v == REDACTED), "{:?}", snap.env);
    assert!(
        !serde_json::to_string(&snap)
            .unwrap()
            .contains("s3cr3t-value")
    );
    assert_eq!(snap.state, ContainerState::Running);
    assert_eq!(snap.image, "forge/learner:1");
    assert_eq!(snap.hostname.as_deref(), Some("learner"));
    let mut caps = snap.capabilities.clone();
    caps.sort();
    assert_eq!(caps, ["NET_ADMIN", "NET_RAW"]);
    assert!(snap.read_only_root);
    assert_eq!(snap.memory_bytes, Some(384 * 1024 * 1024 / 3));
    assert_eq!(snap.pids_limit, Some(64));
    guard.close(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_terminal_round_trips() {
    use futures::StreamExt;
    let rt = runtime().await;
    let (lab, guard) = launch(&rt, &fixture("flat-lab.yaml")).await;
    let mut tty = rt.exec_tty(&lab.scenario_id, "alpha", None).await.unwrap();
    tty.resizer.resize(120, 40).await.unwrap();
    tty.input
        .write_all(b"stty size; echo tty-$((40+2))\nexit\n")
        .await
        .unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ended = loop {
        match tokio::time::timeout_at(deadline, tty.output.next()).await {
            Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) => break true,
            Err(_) => break false,
        }
    };
    assert!(seen.contains("tty-42"), "{seen}");
    assert!(seen.contains("40 120"), "resize applied: {seen}");
    assert!(ended, "the output ends when the shell exits: {seen}");
    guard.close(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_test_passes_the_fixtures() {
    let rt = runtime().await;
    let labels: BTreeMap<String, String> =
        [(TEST_RUN_LABEL.to_owned(), run_id().to_owned())].into();
    for name in ["netplus-lab.yaml", "flat-lab.yaml"] {
        let t = fixture(name);
        let report =
            forge_runtime::template_test::test_template_as(&rt, scenario_id(), name, &t, &labels)
                .await;
        assert!(report.passed(), "{}", report.render());
        assert!(report.rows.iter().any(|r| !r.before), "{}", report.render());
        assert_eq!(
            lab_leftovers(&report.scenario_id.parse().unwrap()),
            (vec![], false)
        );
    }
    // A template whose criteria already pass is refused.
    let mut t = fixture("flat-lab.yaml");
    t.spec.assets.containers[1].setup = vec!["touch /tmp/marker".into()];
    let report =
        forge_runtime::template_test::test_template_as(&rt, scenario_id(), "solved", &t, &labels)
            .await;
    assert!(
        report
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("nothing to solve")),
        "{}",
        report.render()
    );
}
