//! Conformance suite for [`Bus`] implementations: `bus_conformance_suite!(make)` runs every
//! check against buses made by the async `make(SuiteConfig) -> TestBus`. Here against the
//! in-process bus; `bus/nats.rs` runs it against NATS JetStream on a real `nats-server`, and
//! `bus/consumer.rs` does the same for the consumer loop.

use std::collections::BTreeSet;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use forge_bus::{Bus, BusError, BusExt, MemoryBus, MemoryBusConfig, Subscription};
use tokio::time::timeout;

/// What the suite needs to tune on a backend.
#[derive(Clone, Copy)]
struct SuiteConfig {
    ack_wait: Duration,
    dedup_window: Duration,
}

/// A bus under test, and what it needs to stay up (a NATS server) until the test ends.
struct TestBus {
    bus: Arc<dyn Bus>,
    _server: Option<forge_testkit::servers::NatsServer>,
}

impl TestBus {
    fn arc(&self) -> Arc<dyn Bus> {
        self.bus.clone()
    }
}

impl Deref for TestBus {
    type Target = dyn Bus;
    fn deref(&self) -> &Self::Target {
        self.bus.as_ref()
    }
}

async fn memory(c: SuiteConfig) -> TestBus {
    TestBus {
        bus: Arc::new(MemoryBus::new(MemoryBusConfig {
            ack_wait: c.ack_wait,
            dedup_window: c.dedup_window,
            ..MemoryBusConfig::default()
        })),
        _server: None,
    }
}

const FAST: SuiteConfig = SuiteConfig {
    ack_wait: Duration::from_millis(150),
    dedup_window: Duration::from_millis(300),
};

/// The backends' own defaults (JetStream's): for tests that do not depend on timing.
const DEFAULTS: SuiteConfig = SuiteConfig {
    ack_wait: Duration::from_secs(30),
    dedup_window: Duration::from_secs(120),
};

async fn next(sub: &mut Box<dyn Subscription>) -> forge_bus::Message {
    timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a message within 5 s")
        .expect("subscription works")
}

async fn nothing_within(sub: &mut Box<dyn Subscription>, d: Duration) {
    if let Ok(m) = timeout(d, sub.next()).await {
        panic!("expected no message, got {:?}", m.map(|m| m.msg_id));
    }
}

/// Runs every conformance check against buses made by `make`.
macro_rules! bus_conformance_suite {
    ($make:expr) => {
        #[tokio::test]
        async fn dedup_by_message_id_within_window() {
            crate::dedup_by_message_id_within_window_impl($make).await
        }
        #[tokio::test]
        async fn ack_nak_and_redelivery() {
            crate::ack_nak_and_redelivery_impl($make).await
        }
        #[tokio::test]
        async fn two_durables_each_get_every_message() {
            crate::two_durables_each_get_every_message_impl($make).await
        }
        #[tokio::test]
        async fn shared_durable_spreads_messages() {
            crate::shared_durable_spreads_messages_impl($make).await
        }
        #[tokio::test]
        async fn durable_resumes_after_reconnect() {
            crate::durable_resumes_after_reconnect_impl($make).await
        }
        #[tokio::test]
        async fn rejects_bad_names() {
            crate::rejects_bad_names_impl($make).await
        }
        #[tokio::test]
        async fn backlog_counts_undelivered_and_unacked_messages() {
            crate::backlog_counts_undelivered_and_unacked_messages_impl($make).await
        }
        #[tokio::test]
        async fn ping_answers() {
            crate::ping_answers_impl($make).await
        }
        #[test]
        fn counts_messages_per_subject() {
            crate::counts_messages_per_subject_impl($make)
        }
    };
}

bus_conformance_suite!(memory);

async fn ping_answers_impl(make: impl AsyncFn(SuiteConfig) -> TestBus) {
    let bus = make(DEFAULTS).await;
    let start = tokio::time::Instant::now();
    bus.ping().await.expect("a working bus answers the ping");
    assert!(start.elapsed() < forge_bus::PING_TIMEOUT);
}

async fn dedup_by_message_id_within_window_impl(make: impl AsyncFn(SuiteConfig) -> TestBus) {
    let bus = make(FAST).await;
    let mut sub = bus
        .subscribe("spawn.request", "orchestrator")
        .await
        .unwrap();
    let a = bus
        .publish_json("spawn.request", "t1:r1", &"first")
        .await
        .unwrap();
    let b = bus
        .publish_json("spawn.request", "t1:r1", &"second")
        .await
        .unwrap();
    assert!(!a.duplicate);
    assert!(b.duplicate, "same id within the window is a duplicate");
    assert_eq!(a.sequence, b.sequence, "a duplicate reports the original");
    // Same id on another subject is another message.
    let other = bus
        .publish("scenario.created", "t1:r1", vec![1])
        .await
        .unwrap();
    assert!(!other.duplicate);

    let m = next(&mut sub).await;
    assert_eq!(m.json::<String>().unwrap(), "first");
    m.ack().await.unwrap();
    nothing_within(&mut sub, Duration::from_millis(200)).await;

    // After the window the id is accepted again.
    tokio::time::sleep(FAST.dedup_window + Duration::from_millis(50)).await;
    let c = bus
        .publish_json("spawn.request", "t1:r1", &"third")
        .await
        .unwrap();
    assert!(!c.duplicate);
    assert_eq!(next(&mut sub).await.json::<String>().unwrap(), "third");
}

async fn ack_nak_and_redelivery_impl(make: impl AsyncFn(SuiteConfig) -> TestBus) {
    let bus = make(FAST).await;
    let mut sub = bus.subscribe("scenario.execute", "worker").await.unwrap();
    for i in 0..3 {
        bus.publish("scenario.execute", &format!("m{i}"), vec![i])
            .await
            .unwrap();
    }
    // m0: acked at once, never seen again.
    let m0 = next(&mut sub).await;
    assert_eq!((m0.msg_id.as_str(), m0.delivered), ("m0", 1));
    m0.ack().await.unwrap();
    // m1: nak → redelivered before anything new.
    let m1 = next(&mut sub).await;
    assert_eq!(m1.msg_id, "m1");
    m1.nak().await.unwrap();
    let again = next(&mut sub).await;
    assert_eq!((again.msg_id.as_str(), again.delivered), ("m1", 2));
    again.ack().await.unwrap();
    // m2: never acked → redelivered after the ack wait.
    let m2 = next(&mut sub).await;
    assert_eq!((m2.msg_id.as_str(), m2.delivered), ("m2", 1));
    let started = tokio::time::Instant::now();
    let m2b = next(&mut sub).await;
    assert_eq!((m2b.msg_id.as_str(), m2b.delivered), ("m2", 2));
    assert!(started.elapsed() >= FAST.ack_wait - Duration::from_millis(20));
    m2b.ack().await.unwrap();
    nothing_within(&mut sub, FAST.ack_wait * 2).await;
}

async fn two_durables_each_get_every_message_impl(make: impl AsyncFn(SuiteConfig) -> TestBus) {
    let bus = make(FAST).await;
    let mut a = bus
        .subscribe("scenario.completed", "scoreboard")
        .await
        .unwrap();
    let mut b = bus
        .subscribe("scenario.completed", "observer")
        .await
        .unwrap();
    for i in 0..20u8 {
        bus.publish("scenario.completed", &format!("id{i}"), vec![i])
            .await
            .unwrap();
    }
    for sub in [&mut a, &mut b] {
        let mut got = Vec::new();
        for _ in 0..20 {
            let m = next(sub).await;
            got.push(m.payload[0]);
            m.ack().await.unwrap();
        }
        assert_eq!(got, (0..20).collect::<Vec<u8>>(), "in order, all of them");
    }
}

/// What the NATSBacklog alert reads: per durable, messages not delivered yet and delivered but
/// not acked yet.
async fn backlog_counts_undelivered_and_unacked_messages_impl(
    make: impl AsyncFn(SuiteConfig) -> TestBus,
) {
    let bus = make(FAST).await;
    let mut sub = bus
        .subscribe("scenario.completed", "lagging")
        .await
        .unwrap();
    for i in 0..5u8 {
        bus.publish("scenario.completed", &format!("b{i}"), vec![i])
            .await
            .unwrap();
    }
    let _held = [next(&mut sub).await, next(&mut sub).await];
    next(&mut sub).await.ack().await.unwrap();
    let backlog = bus.backlog().await.unwrap();
    let mine: Vec<_> = backlog
        .iter()
        .filter(|b| b.durable == "lagging" && b.subject == "scenario.completed")
        .collect();
    assert_eq!(mine.len(), 1, "{backlog:?}");
    assert_eq!(
        (mine[0].pending, mine[0].ack_pending),
        (2, 2),
        "{backlog:?}"
    );
}

async fn shared_durable_spreads_messages_impl(make: impl AsyncFn(SuiteConfig) -> TestBus) {
    let bus = make(SuiteConfig {
        ack_wait: Duration::from_secs(5),
        ..FAST
    })
    .await;
    const N: u32 = 60;
    let mut handles = Vec::new();
    for _ in 0..2 {
        let mut sub = bus
            .subscribe("spawn.request", "orchestrator")
            .await
            .unwrap();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(Ok(m)) = timeout(Duration::from_millis(500), sub.next()).await {
                // Work takes a little while, as a real consumer's would.
                tokio::time::sleep(Duration::from_millis(2)).await;
                m.ack().await.unwrap();
                got.push(m.msg_id);
            }
            got
        }));
    }
    for i in 0..N {
        bus.publish("spawn.request", &format!("r{i}"), vec![])
            .await
            .unwrap();
    }
    let mut all = BTreeSet::new();
    let mut counts = Vec::new();
    for h in handles {
        let got = h.await.unwrap();
        counts.push(got.len());
        for id in got {
            assert!(all.insert(id.clone()), "{id} delivered to two members");
        }
    }
    assert_eq!(all.len(), N as usize, "every message delivered once");
    assert!(
        counts.iter().all(|c| *c > 0),
        "both members got work: {counts:?}"
    );
}

async fn durable_resumes_after_reconnect_impl(make: impl AsyncFn(SuiteConfig) -> TestBus) {
    let bus = make(FAST).await;
    {
        let mut sub = bus.subscribe("scenario.created", "worker").await.unwrap();
        for i in 0..5u8 {
            bus.publish("scenario.created", &format!("s{i}"), vec![i])
                .await
                .unwrap();
        }
        for _ in 0..3 {
            next(&mut sub).await.ack().await.unwrap();
        }
        // s3 is taken but never acked: the connection "dies" with it in flight.
        let m = next(&mut sub).await;
        assert_eq!(m.msg_id, "s3");
    }
    let mut sub = bus.subscribe("scenario.created", "worker").await.unwrap();
    let first = next(&mut sub).await;
    first.ack().await.unwrap();
    let second = next(&mut sub).await;
    second.ack().await.unwrap();
    let mut ids = [first.msg_id, second.msg_id];
    ids.sort();
    assert_eq!(
        ids,
        ["s3".to_owned(), "s4".to_owned()],
        "resumes, redelivering s3"
    );
    nothing_within(&mut sub, FAST.ack_wait * 2).await;
}

async fn rejects_bad_names_impl(make: impl AsyncFn(SuiteConfig) -> TestBus) {
    let bus = make(FAST).await;
    for subject in ["", "a..b", "spawn.*", "has space", "x.>"] {
        let err = bus.publish(subject, "id", vec![]).await.unwrap_err();
        assert!(
            matches!(err, BusError::InvalidSubject(..)),
            "{subject}: {err}"
        );
    }
    assert_eq!(
        bus.publish("a.b", "", vec![]).await.unwrap_err(),
        BusError::EmptyMessageId
    );
    // Ids must travel unchanged in a NATS header, whichever backend is in use.
    for id in ["two\nlines", " padded", "tab\t"] {
        let err = bus.publish("a.b", id, vec![]).await.unwrap_err();
        assert_eq!(err, BusError::InvalidMessageId(id.to_owned()));
    }
    let err = bus.subscribe("a.b", "bad.name").await.err().unwrap();
    assert!(err.to_string().contains("bad.name"), "{err}");
}

/// The publish counter carries the subject (spec: `forge_nats_messages_total{subject}`) and
/// counts accepted messages only, not duplicates.
fn counts_messages_per_subject_impl(make: impl AsyncFn(SuiteConfig) -> TestBus) {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let bus = make(DEFAULTS).await;
            bus.publish("spawn.request", "a", vec![]).await.unwrap();
            bus.publish("spawn.request", "a", vec![]).await.unwrap();
            bus.publish("spawn.request", "b", vec![]).await.unwrap();
        });
    });
    let counted: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == forge_bus::MESSAGES_TOTAL)
        .map(|(k, _, _, v)| {
            let labels: Vec<String> = k
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            (labels, v)
        })
        .collect();
    assert_eq!(
        counted,
        vec![(
            vec!["subject=spawn.request".to_owned()],
            DebugValue::Counter(2)
        )]
    );
}

#[macro_use]
#[path = "bus/consumer.rs"]
mod consumer;
#[path = "bus/memory.rs"]
mod memory_retention;
#[path = "bus/nats.rs"]
mod nats;
