//! The same platform on distributed mode's backends: NATS JetStream for the bus and PostgreSQL
//! for the store, real servers the tests start on loopback (still the fake runtime for labs).

use std::time::Duration;

use forge_testkit::servers::{NatsServer, TestDatabase};

use crate::harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_runs_end_to_end_on_nats_and_postgres() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let h = Harness::start_with(|cfg| {
        cfg.nats_url = Some(nats.url());
        cfg.database_url = Some(db.url());
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
    let dl = h.dir.join("download");
    h.api.download_bundle(&id, &dl).await;
    crate::api::verify(&h.platform.data_dir, &dl);
    assert!(!h.has_lab(&id));
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
