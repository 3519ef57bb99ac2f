//! The consumer loop ([`forge_bus::consume`]): outcomes, dead letters, bounded concurrency and
//! shutdown. `consumer_suite!(make)` runs it on any backend: here on the in-process bus,
//! in `nats.rs` on NATS JetStream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use forge_bus::{BusExt, ConsumerConfig, DeadLetter, Delivery, Outcome, consume, subjects};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    n: u32,
}

use crate::{DEFAULTS, SuiteConfig, TestBus};

/// Runs every consumer-loop check against buses made by `make` (which must accept the
/// `jobs.>` subjects).
macro_rules! consumer_suite {
    ($make:expr) => {
        #[tokio::test]
        async fn handler_gets_typed_messages_and_acked_ones_are_not_redelivered() {
            crate::consumer::handler_gets_typed_messages_and_acked_ones_are_not_redelivered($make)
                .await
        }
        #[tokio::test]
        async fn retry_redelivers_after_the_delay() {
            crate::consumer::retry_redelivers_after_the_delay($make).await
        }
        #[tokio::test]
        async fn poisoned_message_is_dead_lettered_and_others_still_flow() {
            crate::consumer::poisoned_message_is_dead_lettered_and_others_still_flow($make).await
        }
        #[tokio::test]
        async fn concurrency_bounds_handlers_in_flight_and_shutdown_waits_for_them() {
            crate::consumer::concurrency_bounds_handlers_in_flight_and_shutdown_waits_for_them(
                $make,
            )
            .await
        }
        #[tokio::test]
        async fn a_full_gate_pulls_nothing_until_a_kept_permit_is_released() {
            crate::consumer::a_full_gate_pulls_nothing_until_a_kept_permit_is_released($make).await
        }
    };
}

mod memory {
    consumer_suite!(crate::memory);
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("within 5 s")
        .expect("channel open")
}

pub(crate) async fn handler_gets_typed_messages_and_acked_ones_are_not_redelivered(
    make: impl AsyncFn(SuiteConfig) -> TestBus,
) {
    let fixture = make(DEFAULTS).await;
    let bus = fixture.arc();
    let (stop, shutdown) = watch::channel(false);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(consume(
        bus.clone(),
        ConsumerConfig::new("jobs.run", "worker"),
        shutdown,
        move |job: Job, d: Delivery| {
            let tx = tx.clone();
            async move {
                tx.send((job.n, d.delivered)).unwrap();
                Outcome::Ack
            }
        },
    ));
    for n in 0..3 {
        bus.publish_json("jobs.run", &format!("j{n}"), &Job { n })
            .await
            .unwrap();
    }
    let mut got = vec![
        recv(&mut rx).await,
        recv(&mut rx).await,
        recv(&mut rx).await,
    ];
    got.sort();
    assert_eq!(got, vec![(0, 1), (1, 1), (2, 1)]);
    assert!(
        timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err()
    );
    stop.send(true).unwrap();
    timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

pub(crate) async fn retry_redelivers_after_the_delay(make: impl AsyncFn(SuiteConfig) -> TestBus) {
    let fixture = make(DEFAULTS).await;
    let bus = fixture.arc();
    let (_stop, shutdown) = watch::channel(false);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(consume(
        bus.clone(),
        ConsumerConfig::new("jobs.retry", "worker"),
        shutdown,
        move |_: Job, d: Delivery| {
            let tx = tx.clone();
            async move {
                tx.send(d.delivered).unwrap();
                if d.delivered < 3 {
                    Outcome::Retry(Duration::from_millis(50))
                } else {
                    Outcome::Ack
                }
            }
        },
    ));
    bus.publish_json("jobs.retry", "r1", &Job { n: 1 })
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await, 1);
    assert_eq!(recv(&mut rx).await, 2);
    assert_eq!(recv(&mut rx).await, 3);
    assert!(
        timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err()
    );
}

pub(crate) async fn poisoned_message_is_dead_lettered_and_others_still_flow(
    make: impl AsyncFn(SuiteConfig) -> TestBus,
) {
    let fixture = make(DEFAULTS).await;
    let bus = fixture.arc();
    let (_stop, shutdown) = watch::channel(false);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(consume(
        bus.clone(),
        ConsumerConfig::new("jobs.poison", "worker")
            .max_deliveries(3)
            .concurrency(2),
        shutdown,
        move |job: Job, _: Delivery| {
            let tx = tx.clone();
            async move {
                if job.n == 13 {
                    Outcome::Retry(Duration::from_millis(20))
                } else {
                    tx.send(job.n).unwrap();
                    Outcome::Ack
                }
            }
        },
    ));
    let mut letters = bus
        .subscribe(&subjects::dead_letter("jobs.poison"), "ops")
        .await
        .unwrap();
    bus.publish_json("jobs.poison", "bad", &Job { n: 13 })
        .await
        .unwrap();
    bus.publish("jobs.poison", "garbage", b"{not json".to_vec())
        .await
        .unwrap();
    for n in 0..5 {
        bus.publish_json("jobs.poison", &format!("ok{n}"), &Job { n })
            .await
            .unwrap();
    }
    let mut served = Vec::new();
    for _ in 0..5 {
        served.push(recv(&mut rx).await);
    }
    served.sort();
    assert_eq!(served, vec![0, 1, 2, 3, 4]);

    let mut dead = Vec::new();
    for _ in 0..2 {
        let m = timeout(Duration::from_secs(5), letters.next())
            .await
            .expect("a dead letter within 5 s")
            .unwrap();
        let letter: DeadLetter = m.json().unwrap();
        m.ack().await.unwrap();
        dead.push(letter);
    }
    dead.sort_by(|a, b| a.msg_id.cmp(&b.msg_id));
    assert_eq!(dead[0].msg_id, "bad");
    assert_eq!(dead[0].delivered, 3);
    assert!(
        dead[0].reason.contains("3 deliveries"),
        "{}",
        dead[0].reason
    );
    assert_eq!(
        serde_json::from_slice::<Job>(&dead[0].payload().unwrap()).unwrap(),
        Job { n: 13 }
    );
    assert_eq!(dead[1].msg_id, "garbage");
    assert_eq!(dead[1].delivered, 1);
    assert!(dead[1].reason.contains("malformed"), "{}", dead[1].reason);
    assert_eq!(dead[1].payload().unwrap(), b"{not json");
}

pub(crate) async fn concurrency_bounds_handlers_in_flight_and_shutdown_waits_for_them(
    make: impl AsyncFn(SuiteConfig) -> TestBus,
) {
    let fixture = make(DEFAULTS).await;
    let bus = fixture.arc();
    let (stop, shutdown) = watch::channel(false);
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (r, p, d) = (running.clone(), peak.clone(), done.clone());
    let task = tokio::spawn(consume(
        bus.clone(),
        ConsumerConfig::new("jobs.slow", "worker").concurrency(3),
        shutdown,
        move |_: Job, _: Delivery| {
            let (r, p, d) = (r.clone(), p.clone(), d.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                d.fetch_add(1, Ordering::SeqCst);
                Outcome::Ack
            }
        },
    ));
    for n in 0..9 {
        bus.publish_json("jobs.slow", &format!("s{n}"), &Job { n })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.send(true).unwrap();
    timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "at most 3 at once, and 3 used"
    );
    let finished = done.load(Ordering::SeqCst);
    assert_eq!(
        running.load(Ordering::SeqCst),
        0,
        "shutdown waited for handlers"
    );
    assert!(
        (3..9).contains(&finished),
        "stopped pulling on shutdown: {finished}"
    );
}

/// A lab host's capacity: the handler keeps each message's gate permit (a running lab), so with
/// a gate of 2 the third message stays on the bus until one permit is released.
pub async fn a_full_gate_pulls_nothing_until_a_kept_permit_is_released(
    make: impl AsyncFn(SuiteConfig) -> TestBus,
) {
    let fixture = make(DEFAULTS).await;
    let bus = fixture.arc();
    let (stop, shutdown) = watch::channel(false);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gate = Arc::new(tokio::sync::Semaphore::new(2));
    let task = tokio::spawn(consume(
        bus.clone(),
        ConsumerConfig::new("jobs.gated", "host")
            .concurrency(8)
            .gate(gate.clone()),
        shutdown,
        move |job: Job, d: Delivery| {
            let tx = tx.clone();
            async move {
                let permit = d
                    .reserved
                    .take()
                    .expect("a gated delivery carries its permit");
                tx.send((job.n, permit)).unwrap();
                Outcome::Ack
            }
        },
    ));
    for n in 0..3 {
        bus.publish_json("jobs.gated", &format!("g{n}"), &Job { n })
            .await
            .unwrap();
    }
    let (a, permit_a) = recv(&mut rx).await;
    let (b, _permit_b) = recv(&mut rx).await;
    assert_ne!(a, b);
    assert_eq!(gate.available_permits(), 0);
    assert!(
        timeout(Duration::from_millis(700), rx.recv())
            .await
            .is_err(),
        "a full gate must not pull the third message"
    );
    drop(permit_a);
    let (c, _permit_c) = recv(&mut rx).await;
    assert!(![a, b].contains(&c));
    stop.send(true).unwrap();
    timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}
