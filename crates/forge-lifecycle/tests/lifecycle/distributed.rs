//! The same platform on distributed mode's backends: NATS JetStream for the bus, PostgreSQL for
//! the store and S3 with object lock (SeaweedFS) for evidence, real servers the tests start on
//! loopback (still the fake runtime for labs).

use std::time::Duration;

use forge_testkit::servers::{NatsServer, TestDatabase, seaweed};

use crate::harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_runs_end_to_end_on_nats_postgres_and_s3() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let s3 = seaweed::shared().await;
    let bucket = seaweed::fresh_bucket();
    let h = Harness::start_with(|cfg| {
        cfg.nats_url = Some(nats.url());
        cfg.database_url = Some(db.url());
        cfg.s3 = Some(s3.config(&bucket));
    })
    .await;
    let id = h.running().await;
    let before = h.api.check(&id).await;
    assert_eq!(before["passed"], 1, "{before}");
    h.solve(&id).await;
    h.api.submit(&id).await;
    h.wait_status(&id, "completed", Duration::from_secs(15))
        .await;
    let score = h.api.wait_score(&id, Duration::from_secs(10)).await;
    assert_eq!(score["score"]["value"].as_f64(), Some(1.0), "{score}");
    assert_eq!(
        score["evidence_url"],
        format!("s3://{bucket}/{id}/evidence.tar.zst"),
        "{score}"
    );
    let dl = h.dir.join("download");
    h.api.download_bundle(&id, &dl).await;
    crate::api::verify(&h.platform.data_dir, &dl);
    assert!(!h.has_lab(&id));

    // Verified straight from its URL with the learner's token (`forge bundle verify URL`);
    // without a token the scoreboard refuses, and the verifier says so.
    let keys = verdict_keys(&h);
    let url = format!("{}/v1/scores/{id}", h.api.scoreboard);
    let v = forge_evidence::verify_bundle_url(&url, &keys, Some(&h.api.token))
        .await
        .expect("the bundle verifies from its url");
    assert_eq!(v.score.score, 1.0);
    let refused = forge_evidence::verify_bundle_url(&url, &keys, None)
        .await
        .expect_err("no token, no bundle");
    assert!(refused.to_string().contains("401"), "{refused}");

    // The four files are in the bucket, each under an object-lock retention.
    let raw = s3.raw_client();
    for file in [
        "score.json",
        "evidence.tar.zst",
        "manifest.json",
        "verdict.sig",
    ] {
        let key = format!("{id}/{file}");
        let head = raw
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key} is not in the bucket: {e:?}"));
        assert!(
            head.object_lock_retain_until_date().is_some(),
            "{key} is not locked"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_crash_mid_lab_loses_nothing() {
    let mut nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let h = Harness::start_with(|cfg| {
        cfg.nats_url = Some(nats.url());
        cfg.database_url = Some(db.url());
    })
    .await;
    let first = h.running().await;

    // SIGKILL, and back on the same port and store: the platform reconnects by itself.
    nats.kill();
    nats.restart().await;

    // The lab that was running is evaluated through the bus after the crash, and a new spawn
    // goes through the whole chain again.
    h.solve(&first).await;
    let start = std::time::Instant::now();
    loop {
        let (code, v) = h.api.post_worker(&first, "submit", None).await;
        if code == 202 {
            break;
        }
        // 503 while the client side has not reconnected yet; the same submit is idempotent.
        assert_eq!(code, 503, "{v}");
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no reconnect: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.wait_status(&first, "completed", Duration::from_secs(20))
        .await;
    let second = h.running().await;
    h.api.submit(&second).await;
    h.wait_status(&second, "completed", Duration::from_secs(20))
        .await;
    for id in [&first, &second] {
        assert_eq!(h.audited("scenario.running", id).len(), 1, "built once");
        assert_eq!(h.audited("score.published", id).len(), 1, "scored once");
    }
    h.stop().await;
}

fn verdict_keys(h: &Harness) -> forge_evidence::KeySource {
    use forge_evidence::{KeyPurpose, KeySource, Keyring};
    let ring = Keyring::open(&h.platform.data_dir, KeyPurpose::Verdict).expect("verdict keyring");
    KeySource::from_keyring(&ring).expect("key source")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_crash_during_a_burst_of_20_spawns_loses_none_and_builds_none_twice() {
    use forge_store::LedgerQuery;
    use serde_json::json;
    use std::time::Instant;

    let mut nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let h = Harness::start_with(|cfg| {
        cfg.nats_url = Some(nats.url());
        cfg.database_url = Some(db.url());
    })
    .await;

    // Twenty learners spawn. The first ten are accepted before the crash (their messages and
    // builds are in flight when it hits); the other ten arrive while nats-server is down. The
    // client library holds a publish until the server is back (within its request timeout), so
    // those wait; past that the front door answers 503 and the learner retries with the same
    // request_id, as the API tells clients to.
    let spawn = |n: usize| {
        let api = h.api.clone();
        async move {
            let body = json!({"track": "netplus", "template": crate::harness::TEMPLATE,
                              "request_id": format!("burst-{n}")});
            let start = Instant::now();
            loop {
                let sent = api
                    .http
                    .post(format!("{}/v1/spawn", api.spawn))
                    .bearer_auth(&api.token)
                    .json(&body)
                    .send()
                    .await;
                if let Ok(r) = sent {
                    let code = r.status().as_u16();
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    match code {
                        201 => return v["scenario_id"].as_str().unwrap().to_owned(),
                        503 => {}
                        _ => panic!("spawn {n}: {code} {v}"),
                    }
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "spawn {n} never accepted"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut ids = futures::future::join_all((0..10).map(spawn)).await;
    nats.kill();
    let outage = Instant::now();
    let during = async {
        let ids = futures::future::join_all((10..20).map(spawn)).await;
        (ids, outage.elapsed())
    };
    let restart = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        nats.restart().await;
    };
    let ((later, waited), ()) = tokio::join!(during, restart);
    ids.extend(later);
    assert!(
        waited >= Duration::from_millis(600),
        "the second wave crossed the outage ({waited:?})"
    );

    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 20, "one scenario per request");
    for id in &ids {
        let start = Instant::now();
        let status = loop {
            let v = h.api.scenario(id).await.1;
            let s = v["status"].as_str().unwrap_or_default().to_owned();
            if s == "running" || s == "failed" {
                if s == "failed" {
                    assert!(v["error"].is_string(), "failed without a reason: {v}");
                }
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{id} lost in {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status, "running", "{id}");
        assert_eq!(
            h.audited("scenario.creating", id).len(),
            1,
            "{id} admitted once"
        );
        assert_eq!(
            h.audited("scenario.running", id).len(),
            1,
            "{id} built once"
        );
    }
    assert_eq!(h.fake.labs().len(), 20, "one lab each");
    let ledger = h
        .platform
        .store
        .ledger(&LedgerQuery {
            tenant_id: Some("demo".into()),
            from: None,
            to: None,
        })
        .await
        .unwrap();
    assert_eq!(ledger.len(), 20, "one billing row per spawn: {ledger:?}");
    h.stop().await;
}
