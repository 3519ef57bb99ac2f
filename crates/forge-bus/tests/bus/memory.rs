//! Retention of the in-process bus (not part of the conformance suite: NATS keeps acked
//! messages under its stream limits, the in-process bus drops them; see `forge_bus::memory`).

use std::time::Duration;

use forge_bus::{Bus, MemoryBus, MemoryBusConfig, Subscription};

use crate::next;

const SUBJECT: &str = "scenario.completed";

fn bus() -> MemoryBus {
    MemoryBus::new(MemoryBusConfig {
        ack_wait: Duration::from_millis(150),
        ..MemoryBusConfig::default()
    })
}

async fn take_and_ack(sub: &mut Box<dyn Subscription>) -> String {
    let m = next(sub).await;
    m.ack().await.unwrap();
    m.msg_id
}

/// The finding behind this: every lab left its artifacts (up to 2 MiB a step) on the bus for
/// good. Publishing and acking many large messages must keep what is stored bounded by what is
/// in flight.
#[tokio::test]
async fn publishing_and_acking_large_messages_keeps_memory_bounded() {
    const N: usize = 200;
    const SIZE: usize = 1 << 20;
    let bus = bus();
    let mut scoreboard = bus.subscribe(SUBJECT, "scoreboard").await.unwrap();
    let mut observer = bus.subscribe(SUBJECT, "observer").await.unwrap();
    for i in 0..N {
        bus.publish(SUBJECT, &format!("lab-{i}"), vec![i as u8; SIZE])
            .await
            .unwrap();
        assert_eq!(take_and_ack(&mut scoreboard).await, format!("lab-{i}"));
        assert_eq!(
            bus.stored(SUBJECT),
            1,
            "kept while the observer has not acked"
        );
        assert_eq!(take_and_ack(&mut observer).await, format!("lab-{i}"));
        assert_eq!(bus.stored(SUBJECT), 0, "dropped once every durable acked");
    }
    assert_eq!(bus.stored_bytes(SUBJECT), 0);

    // With consumers running concurrently, what is stored never exceeds what is in flight.
    let consumers: Vec<_> = [scoreboard, observer]
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                for _ in 0..N {
                    take_and_ack(&mut sub).await;
                }
            })
        })
        .collect();
    let mut most = 0;
    for i in 0..N {
        bus.publish(SUBJECT, &format!("more-{i}"), vec![0; SIZE])
            .await
            .unwrap();
        most = most.max(bus.stored(SUBJECT));
        // Let the consumers keep up, as services do between labs.
        tokio::task::yield_now().await;
    }
    for c in consumers {
        tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .expect("consumers finish")
            .unwrap();
    }
    assert_eq!(bus.stored(SUBJECT), 0);
    assert_eq!(bus.stored_bytes(SUBJECT), 0);
    assert!(most < N, "stored grew with every message: {most}");
}

#[tokio::test]
async fn an_unacked_message_stays_while_later_ones_leave() {
    let bus = bus();
    let mut sub = bus.subscribe(SUBJECT, "scoreboard").await.unwrap();
    for i in 0..3u8 {
        bus.publish(SUBJECT, &format!("m{i}"), vec![i])
            .await
            .unwrap();
    }
    let held = next(&mut sub).await;
    assert_eq!(held.msg_id, "m0");
    assert_eq!(take_and_ack(&mut sub).await, "m1");
    assert_eq!(take_and_ack(&mut sub).await, "m2");
    assert_eq!(bus.stored(SUBJECT), 1, "only the un-acked m0 is kept");
    // Not acked: redelivered after the ack wait, from what is still stored.
    let again = next(&mut sub).await;
    assert_eq!((again.msg_id.as_str(), again.delivered), ("m0", 2));
    again.ack().await.unwrap();
    assert_eq!(bus.stored(SUBJECT), 0);
}

#[tokio::test]
async fn messages_wait_for_the_first_durable() {
    let bus = bus();
    for i in 0..3u8 {
        bus.publish(SUBJECT, &format!("early{i}"), vec![i])
            .await
            .unwrap();
    }
    assert_eq!(bus.stored(SUBJECT), 3, "nobody has seen them yet");
    let mut sub = bus.subscribe(SUBJECT, "late").await.unwrap();
    for i in 0..3 {
        assert_eq!(take_and_ack(&mut sub).await, format!("early{i}"));
    }
    assert_eq!(bus.stored(SUBJECT), 0);
}

/// The documented difference from a NATS stream with limits retention: a durable created after
/// the others acked a message never sees it.
#[tokio::test]
async fn a_durable_created_later_starts_at_the_first_retained_message() {
    let bus = bus();
    let mut first = bus.subscribe(SUBJECT, "first").await.unwrap();
    for i in 0..3u8 {
        bus.publish(SUBJECT, &format!("m{i}"), vec![i])
            .await
            .unwrap();
    }
    assert_eq!(take_and_ack(&mut first).await, "m0");
    let _held = next(&mut first).await; // m1, in flight
    let mut later = bus.subscribe(SUBJECT, "later").await.unwrap();
    assert_eq!(take_and_ack(&mut later).await, "m1");
    assert_eq!(take_and_ack(&mut later).await, "m2");
    let backlog = bus.backlog().await.unwrap();
    let later_backlog = backlog.iter().find(|b| b.durable == "later").unwrap();
    assert_eq!((later_backlog.pending, later_backlog.ack_pending), (0, 0));
}

#[tokio::test]
async fn dedup_outlives_the_dropped_payload() {
    let bus = bus();
    let mut sub = bus.subscribe(SUBJECT, "scoreboard").await.unwrap();
    let a = bus.publish(SUBJECT, "once", vec![1; 1024]).await.unwrap();
    take_and_ack(&mut sub).await;
    assert_eq!(bus.stored(SUBJECT), 0);
    let b = bus.publish(SUBJECT, "once", vec![1; 1024]).await.unwrap();
    assert!(b.duplicate, "the id is remembered without its payload");
    assert_eq!(b.sequence, a.sequence);
    assert_eq!(bus.stored(SUBJECT), 0);
}

#[tokio::test]
async fn a_message_given_up_after_max_deliver_is_dropped() {
    let bus = MemoryBus::new(MemoryBusConfig {
        ack_wait: Duration::from_millis(50),
        max_deliver: Some(1),
        ..MemoryBusConfig::default()
    });
    let mut sub = bus.subscribe(SUBJECT, "worker").await.unwrap();
    bus.publish(SUBJECT, "poison", vec![0]).await.unwrap();
    let _never_acked = next(&mut sub).await;
    bus.publish(SUBJECT, "fine", vec![1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    // The next pull gives `poison` up and delivers `fine`.
    assert_eq!(take_and_ack(&mut sub).await, "fine");
    assert_eq!(bus.stored(SUBJECT), 0);
}

#[tokio::test]
async fn the_count_limit_still_discards_the_oldest() {
    let bus = MemoryBus::new(MemoryBusConfig {
        max_messages_per_subject: 3,
        ..MemoryBusConfig::default()
    });
    for i in 0..5u8 {
        bus.publish(SUBJECT, &format!("m{i}"), vec![i])
            .await
            .unwrap();
    }
    assert_eq!(bus.stored(SUBJECT), 3);
    let mut sub = bus.subscribe(SUBJECT, "late").await.unwrap();
    for i in 2..5 {
        assert_eq!(take_and_ack(&mut sub).await, format!("m{i}"));
    }
    assert_eq!(bus.stored(SUBJECT), 0);
}
