//! The bus on NATS JetStream ([`forge_bus::NatsBus`]) against a real `nats-server`: the whole
//! conformance suite and the consumer loop, each test on its own server (tests run in
//! parallel, and one stream cannot share subjects with another on the same server), plus what
//! only a server can show: durability across a SIGKILL, set-up, naming.
//!
//! The suite's short timings (ack wait 150 ms, dedup window 300 ms) are used as they are:
//! nats-server (2.9, Debian's) accepts both, redelivers after the ack wait, and forgets a
//! message id in time for the suite's publish at window + 50 ms.

use std::time::Duration;

use forge_bus::{Bus, BusError, BusExt, NatsBus, NatsBusConfig, Subscription};
use tokio::time::timeout;

use crate::{SuiteConfig, TestBus, next, nothing_within};
use forge_testkit::servers::NatsServer;

/// The default stream, plus the consumer tests' `jobs.>`.
fn test_config(c: SuiteConfig) -> NatsBusConfig {
    let mut subjects = NatsBusConfig::default_subjects();
    subjects.push("jobs.>".to_owned());
    NatsBusConfig {
        ack_wait: c.ack_wait,
        dedup_window: c.dedup_window,
        subjects,
        ..NatsBusConfig::default()
    }
}

async fn nats_bus(c: SuiteConfig) -> TestBus {
    let server = NatsServer::start().await;
    let bus = NatsBus::connect(&server.url(), test_config(c))
        .await
        .expect("connects to the test server");
    TestBus {
        bus: std::sync::Arc::new(bus),
        _server: Some(server),
    }
}

bus_conformance_suite!(nats_bus);

mod consumer {
    consumer_suite!(super::nats_bus);
}

/// `next`, retried the way the consumer loop does while the server comes back.
async fn next_through_outage(sub: &mut Box<dyn Subscription>) -> forge_bus::Message {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match timeout(left, sub.next()).await {
            Ok(Ok(m)) => return m,
            Ok(Err(BusError::Unavailable(why))) if !left.is_zero() => {
                eprintln!("pull failed while the server comes back: {why}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("no message after the restart: {:?}", other.map(|r| r.err())),
        }
    }
}

/// The readiness ping fails while the server is gone, within its timeout, and answers again
/// once the server is back.
#[tokio::test]
async fn ping_follows_the_server() {
    let mut server = NatsServer::start().await;
    let bus = NatsBus::connect(&server.url(), NatsBusConfig::default())
        .await
        .unwrap();
    bus.ping().await.unwrap();
    server.kill();
    let start = tokio::time::Instant::now();
    let e = bus.ping().await.unwrap_err();
    assert!(matches!(e, BusError::Unavailable(_)), "{e}");
    assert!(
        start.elapsed() < forge_bus::PING_TIMEOUT + Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    server.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Err(e) = bus.ping().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ping after the restart: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn message_survives_sigkill_and_is_delivered_once_and_deduplicated_after() {
    let mut server = NatsServer::start().await;
    let config = NatsBusConfig {
        ack_wait: Duration::from_millis(500),
        dedup_window: Duration::from_secs(60),
        pull_expiry: Duration::from_secs(5),
        ..NatsBusConfig::default()
    };
    let bus = NatsBus::connect(&server.url(), config).await.unwrap();
    // The durable exists before the crash, the message is published and never delivered.
    let mut sub = bus.subscribe("scenario.created", "worker").await.unwrap();
    let first = bus
        .publish_json("scenario.created", "created:scn-1", &"lab up")
        .await
        .unwrap();
    assert!(!first.duplicate);
    // Another durable is waiting in a pull when the server dies.
    let mut idle = bus
        .subscribe("scenario.completed", "scoreboard")
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        let m = next_through_outage(&mut idle).await;
        (m, tokio::time::Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.kill();
    server.restart().await;

    let m = next_through_outage(&mut sub).await;
    assert_eq!(m.msg_id, "created:scn-1");
    assert_eq!(m.json::<String>().unwrap(), "lab up");
    assert_eq!((m.sequence, m.delivered), (first.sequence, 1));
    m.ack().await.unwrap();
    nothing_within(&mut sub, Duration::from_secs(1)).await;

    // Still within the dedup window: the server rebuilt its ids from the stored messages.
    let again = bus
        .publish_json("scenario.created", "created:scn-1", &"lab up")
        .await
        .unwrap();
    assert!(again.duplicate, "same id after the restart is a duplicate");
    assert_eq!(again.sequence, first.sequence);
    nothing_within(&mut sub, Duration::from_secs(1)).await;

    // The pull that died with the server is sent again on reconnect, not after its expiry
    // (5 s, plus the client's 5 s of slack).
    let published = tokio::time::Instant::now();
    bus.publish("scenario.completed", "completed:scn-1", vec![7])
        .await
        .unwrap();
    let (m, received) = waiting.await.unwrap();
    assert_eq!((m.msg_id.as_str(), m.delivered), ("completed:scn-1", 1));
    assert!(
        received - published < Duration::from_secs(3),
        "waited {:?}",
        received - published
    );
    m.ack().await.unwrap();

    // A durable created after the restart finds the message too, once.
    let mut late = bus.subscribe("scenario.created", "observer").await.unwrap();
    let m = next(&mut late).await;
    assert_eq!((m.msg_id.as_str(), m.delivered), ("created:scn-1", 1));
    m.ack().await.unwrap();
    nothing_within(&mut late, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn connect_without_a_server_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let err = NatsBus::connect(
        &format!("nats://127.0.0.1:{port}"),
        NatsBusConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast");
}

#[tokio::test]
async fn setup_is_idempotent_and_applies_new_settings() {
    let server = NatsServer::start().await;
    let bus = NatsBus::connect(&server.url(), NatsBusConfig::default())
        .await
        .unwrap();
    bus.publish("audit.events", "a1", b"{}".to_vec())
        .await
        .unwrap();
    let summary = bus.setup().await.unwrap();
    assert_eq!(summary.name, "FORGE");
    assert_eq!(summary.subjects, NatsBusConfig::default_subjects());
    assert_eq!(summary.messages, 1, "set-up again keeps the messages");

    // Another process with more subjects updates the same stream.
    let mut config = NatsBusConfig::default();
    config.subjects.push("extra.>".to_owned());
    let other = NatsBus::connect(&server.url(), config).await.unwrap();
    let summary = other.setup().await.unwrap();
    assert!(summary.subjects.contains(&"extra.>".to_owned()));
    assert_eq!(summary.messages, 1);
    other.publish("extra.thing", "x1", vec![]).await.unwrap();

    // A second stream cannot take subjects the first one has: a configuration error.
    let clash = NatsBusConfig {
        stream: "OTHER".to_owned(),
        ..NatsBusConfig::default()
    };
    let err = NatsBus::connect(&server.url(), clash).await.unwrap_err();
    assert!(matches!(err, BusError::InvalidConfig(_)), "{err}");
}

#[tokio::test]
async fn one_durable_on_two_subjects_keeps_them_apart() {
    let server = NatsServer::start().await;
    let bus = NatsBus::connect(&server.url(), NatsBusConfig::default())
        .await
        .unwrap();
    let mut spawns = bus
        .subscribe("spawn.request", "orchestrator")
        .await
        .unwrap();
    let mut scores = bus
        .subscribe("scenario.scored", "orchestrator")
        .await
        .unwrap();
    bus.publish("spawn.request", "s1", vec![1]).await.unwrap();
    bus.publish("scenario.scored", "s1", vec![2]).await.unwrap();
    bus.publish("spawn.request", "s2", vec![3]).await.unwrap();
    for (sub, subject, payloads) in [
        (&mut spawns, "spawn.request", vec![1, 3]),
        (&mut scores, "scenario.scored", vec![2]),
    ] {
        let mut got = Vec::new();
        for _ in 0..payloads.len() {
            let m = next(sub).await;
            assert_eq!(m.subject, subject);
            got.push(m.payload[0]);
            m.ack().await.unwrap();
        }
        assert_eq!(got, payloads);
        nothing_within(sub, Duration::from_millis(300)).await;
    }
    // The same id on two subjects is two messages (JetStream dedups per stream; the bus must
    // not), and the id comes back as published.
    let m = {
        let dup = bus.publish("spawn.request", "s1", vec![9]).await.unwrap();
        assert!(dup.duplicate);
        bus.publish("deadletter.spawn.request", "s1", vec![4])
            .await
            .unwrap()
    };
    assert!(!m.duplicate);
    let mut letters = bus
        .subscribe("deadletter.spawn.request", "ops")
        .await
        .unwrap();
    let letter = next(&mut letters).await;
    assert_eq!(
        (letter.msg_id.as_str(), letter.payload.as_slice()),
        ("s1", &[4u8][..])
    );
}

#[tokio::test]
async fn subjects_outside_the_stream_are_refused() {
    let server = NatsServer::start().await;
    let bus = NatsBus::connect(&server.url(), NatsBusConfig::default())
        .await
        .unwrap();
    let err = bus.publish("jobs.run", "j1", vec![]).await.unwrap_err();
    assert!(matches!(err, BusError::InvalidSubject(..)), "{err}");
    let err = bus.subscribe("jobs.run", "worker").await.err().unwrap();
    assert!(matches!(err, BusError::InvalidSubject(..)), "{err}");
}

#[tokio::test]
async fn keeps_at_most_max_messages_per_subject() {
    let server = NatsServer::start().await;
    let config = NatsBusConfig {
        max_messages_per_subject: 2,
        ..NatsBusConfig::default()
    };
    let bus = NatsBus::connect(&server.url(), config).await.unwrap();
    for i in 0..3u8 {
        bus.publish("telemetry.logs", &format!("l{i}"), vec![i])
            .await
            .unwrap();
    }
    bus.publish("audit.events", "a0", vec![]).await.unwrap();
    assert_eq!(bus.setup().await.unwrap().messages, 3, "2 logs and 1 event");
    let mut sub = bus.subscribe("telemetry.logs", "observer").await.unwrap();
    for want in ["l1", "l2"] {
        let m = next(&mut sub).await;
        assert_eq!(m.msg_id, want, "the oldest was discarded");
        m.ack().await.unwrap();
    }
    nothing_within(&mut sub, Duration::from_millis(300)).await;
}
