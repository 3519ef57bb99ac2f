//! `forge nats setup` and `forge bus dead-letters` against a real `nats-server` (one per test):
//! set-up is idempotent, a message a consumer gives up on is listed (and listed again: listing
//! consumes nothing), `--replay` republishes its payload on its subject and removes it, and an
//! unreachable server is a clear error naming NATS_URL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_bus::{Bus, ConsumerConfig, NatsBus, NatsBusConfig, Outcome, consume, subjects};
use forge_testkit::servers::NatsServer;
use serde_json::Value;

use super::{Run, forge, run};

/// `forge <args> --nats-url URL`, run off the async runtime.
async fn forge_nats(url: &str, args: &[&str]) -> Run {
    let (url, args): (String, Vec<String>) = (
        url.to_owned(),
        args.iter().map(|s| (*s).to_owned()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        run(forge(dir.path()).args(&args).arg("--nats-url").arg(&url))
    })
    .await
    .unwrap()
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_setup_is_idempotent() {
    let server = NatsServer::start().await;
    for _ in 0..2 {
        let out = forge_nats(&server.url(), &["nats", "setup"])
            .await
            .expect(0);
        assert!(out.stdout.contains("stream    FORGE"), "{out:#?}");
        assert!(out.stdout.contains("deadletter.>"), "{out:#?}");
        assert!(out.stdout.contains("scenario.execute"), "{out:#?}");
        assert!(out.stdout.contains("messages  0"), "{out:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_without_consuming_and_replayed() {
    let server = NatsServer::start().await;
    let url = server.url();
    let bus = NatsBus::connect(&url, NatsBusConfig::default())
        .await
        .unwrap();
    let payload = br#"{"hello":"world"}"#.to_vec();
    let subject = subjects::SCENARIO_EXECUTE;
    bus.publish(subject, "execute:poisoned", payload.clone())
        .await
        .unwrap();

    // A consumer that never succeeds: after 2 deliveries the message is parked.
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let consumer = tokio::spawn(consume(
        Arc::new(bus.clone()) as Arc<dyn Bus>,
        ConsumerConfig::new(subject, "always-fails").max_deliveries(2),
        shutdown,
        |_: Value, _| async { Outcome::Retry(Duration::from_millis(20)) },
    ));
    let parked = subjects::dead_letter(subject);
    let deadline = Instant::now() + Duration::from_secs(30);
    while bus.stored(&parked).await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the message was never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    consumer.await.unwrap();

    // Listed, and listed again: listing consumes nothing.
    for args in [
        &["bus", "dead-letters", "--json"][..],
        &["bus", "dead-letters", "--json", "--subject", subject],
    ] {
        let out = forge_nats(&url, args).await.expect(0);
        let rows = json_lines(&out.stdout);
        assert_eq!(rows.len(), 1, "{out:#?}");
        assert_eq!(rows[0]["subject"], subject);
        assert_eq!(rows[0]["msg_id"], "execute:poisoned");
        assert_eq!(rows[0]["delivered"], 2);
        assert!(
            rows[0]["reason"].as_str().unwrap().contains("2 deliveries"),
            "{rows:?}"
        );
    }
    let table = forge_nats(&url, &["bus", "dead-letters"]).await.expect(0);
    assert!(table.stdout.starts_with("SUBJECT"), "{table:#?}");
    assert!(table.stdout.contains("execute:poisoned"), "{table:#?}");

    // Replayed: the payload is back on its subject under a new id, and the letter is gone.
    let out = forge_nats(&url, &["bus", "dead-letters", "--replay", "--json"])
        .await
        .expect(0);
    let rows = json_lines(&out.stdout);
    assert_eq!(rows.len(), 1, "{out:#?}");
    let replayed_as = rows[0]["replayed_as"].as_str().unwrap().to_owned();
    assert!(
        replayed_as.starts_with("replay:execute:poisoned:"),
        "{rows:?}"
    );

    let mut sub = bus.subscribe(subject, "replay-check").await.unwrap();
    let replayed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = sub.next().await.unwrap();
            m.ack().await.unwrap();
            if m.msg_id == replayed_as {
                return m;
            }
        }
    })
    .await
    .expect("the replayed message arrives");
    assert_eq!(replayed.payload, payload);

    let out = forge_nats(&url, &["bus", "dead-letters", "--json"])
        .await
        .expect(0);
    assert_eq!(out.stdout, "", "{out:#?}");
    let out = forge_nats(&url, &["bus", "dead-letters"]).await.expect(0);
    assert_eq!(out.stdout.trim(), "no dead letters", "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nats_is_a_clear_error() {
    // A port nobody listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    for args in [&["nats", "setup"][..], &["bus", "dead-letters"]] {
        let out = forge_nats(&url, args).await.expect(1);
        assert!(out.stderr.contains("NATS_URL"), "{out:#?}");
        assert!(out.stderr.contains(&url), "{out:#?}");
    }
}

#[test]
fn unknown_subject_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(forge(dir.path())
        .env("NATS_URL", "nats://127.0.0.1:1")
        .args(["bus", "dead-letters", "--subject", "nope.nope"]))
    .expect(1);
    assert!(out.stderr.contains("`nope.nope`"), "{out:#?}");
}
