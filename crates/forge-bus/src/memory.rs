//! The in-process bus: one bounded log per subject with JetStream's semantics (dedup window,
//! durable pull consumers, ack wait, nak, redelivery). Used by `forge up`, where every service
//! runs in one process; state lives in memory and does not survive the process, like a
//! JetStream stream with memory storage.
//!
//! Delivery is pull-based: a message is assigned to a subscription only when that subscription
//! asks for one, so subscriptions sharing a durable split the work by how fast they pull.
//!
//! Retention: a message is dropped as soon as every durable that exists on its subject has
//! acked it (or given it up after `max_deliver`), so memory holds only work in flight, however
//! many labs have run; the dedup window keeps only message ids and sequences, never payloads,
//! so a duplicate is still recognised after its original was dropped. A message published while
//! its subject has no durable at all is kept (up to `max_messages_per_subject`) for the first
//! durable to come. This is where the bus differs from the NATS stream, whose limits retention
//! keeps acked messages until its limits discard them: a durable created later here starts at
//! the first message still retained, and never sees messages every earlier durable had already
//! acked (on NATS it would, up to the stream's limits).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{
    Acker, Backlog, Bus, BusError, MESSAGES_TOTAL, Message, PublishAck, Subscription,
    validate_durable, validate_msg_id, validate_subject,
};

/// Tuning of the in-process bus; the defaults are JetStream's where it has one.
#[derive(Debug, Clone)]
pub struct MemoryBusConfig {
    /// How long a message id is remembered for dedup (JetStream default: 2 minutes).
    pub dedup_window: Duration,
    /// How long a delivered message may stay un-acked before it is redelivered (default 30 s).
    pub ack_wait: Duration,
    /// Deliveries after which an un-acked message is given up (`None`: never, as JetStream).
    pub max_deliver: Option<u32>,
    /// Messages kept per subject; the oldest are discarded beyond it (JetStream `max_msgs`).
    pub max_messages_per_subject: usize,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        Self {
            dedup_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
            max_deliver: None,
            max_messages_per_subject: 100_000,
        }
    }
}

/// The in-process bus. Cheap to clone; clones share everything.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    config: MemoryBusConfig,
    subjects: Mutex<HashMap<String, Arc<SubjectLog>>>,
}

struct SubjectLog {
    name: String,
    config: MemoryBusConfig,
    state: Mutex<LogState>,
    /// Woken on publish and nak; waiters re-check their durable.
    wake: Notify,
}

#[derive(Default)]
struct LogState {
    /// The sequence the next accepted message gets; sequences start at 1.
    next_seq: u64,
    /// Retained messages by sequence. Not contiguous: a message leaves as soon as every
    /// durable is done with it, while older ones may still wait for an ack.
    messages: BTreeMap<u64, Arc<Stored>>,
    dedup: HashMap<String, (Instant, u64)>,
    dedup_order: VecDeque<(Instant, String)>,
    durables: HashMap<String, DurableState>,
}

struct Stored {
    seq: u64,
    msg_id: String,
    payload: Vec<u8>,
}

#[derive(Default)]
struct DurableState {
    /// The next never-delivered sequence.
    next_seq: u64,
    /// Delivered, not yet acked: sequence → when it becomes eligible for redelivery.
    pending: BTreeMap<u64, Pending>,
}

struct Pending {
    redeliver_at: Instant,
    deliveries: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the bus state half-updated in a way that is
    // worse than losing it, so keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBus {
    pub fn new(config: MemoryBusConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                subjects: Mutex::default(),
            }),
        }
    }

    fn log(&self, subject: &str) -> Arc<SubjectLog> {
        let mut subjects = lock(&self.inner.subjects);
        subjects
            .entry(subject.to_owned())
            .or_insert_with(|| {
                Arc::new(SubjectLog {
                    name: subject.to_owned(),
                    config: self.inner.config.clone(),
                    state: Mutex::new(LogState {
                        next_seq: 1,
                        ..LogState::default()
                    }),
                    wake: Notify::new(),
                })
            })
            .clone()
    }

    /// Messages currently stored on `subject` (for tests and diagnostics).
    pub fn stored(&self, subject: &str) -> usize {
        lock(&self.log(subject).state).messages.len()
    }

    /// Payload bytes currently stored on `subject` (for tests and diagnostics).
    pub fn stored_bytes(&self, subject: &str) -> usize {
        lock(&self.log(subject).state)
            .messages
            .values()
            .map(|m| m.payload.len())
            .sum()
    }

    /// Un-acked deliveries of `durable` on `subject` (for tests and diagnostics).
    pub fn pending(&self, subject: &str, durable: &str) -> usize {
        lock(&self.log(subject).state)
            .durables
            .get(durable)
            .map_or(0, |d| d.pending.len())
    }
}

impl LogState {
    /// The oldest retained sequence, or the next one when nothing is retained.
    fn first_seq(&self) -> u64 {
        self.messages
            .first_key_value()
            .map_or(self.next_seq, |(seq, _)| *seq)
    }

    /// Drops message `seq` once every durable is done with it: delivered to each (its next
    /// sequence is past it) and acked or given up by each (nothing pending). While no durable
    /// exists nobody has seen it, so it stays for the first one.
    fn drop_if_done(&mut self, seq: u64) {
        let done = !self.durables.is_empty()
            && self
                .durables
                .values()
                .all(|d| seq < d.next_seq && !d.pending.contains_key(&seq));
        if done {
            self.messages.remove(&seq);
        }
    }

    fn prune_dedup(&mut self, now: Instant, window: Duration) {
        while let Some((at, _)) = self.dedup_order.front() {
            if now.duration_since(*at) < window {
                break;
            }
            let (at, id) = self.dedup_order.pop_front().expect("front exists");
            // Only forget the id if this entry is the one that set it (ids can be re-accepted
            // after the window and then appear twice in the order queue).
            if self.dedup.get(&id).is_some_and(|(t, _)| *t == at) {
                self.dedup.remove(&id);
            }
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        payload: Vec<u8>,
    ) -> Result<PublishAck, BusError> {
        validate_subject(subject)?;
        validate_msg_id(msg_id)?;
        let log = self.log(subject);
        let ack = {
            let mut st = lock(&log.state);
            let now = Instant::now();
            st.prune_dedup(now, log.config.dedup_window);
            if let Some((_, seq)) = st.dedup.get(msg_id) {
                return Ok(PublishAck {
                    sequence: *seq,
                    duplicate: true,
                });
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            st.messages.insert(
                seq,
                Arc::new(Stored {
                    seq,
                    msg_id: msg_id.to_owned(),
                    payload,
                }),
            );
            if st.messages.len() > log.config.max_messages_per_subject {
                st.messages.pop_first();
            }
            st.dedup.insert(msg_id.to_owned(), (now, seq));
            st.dedup_order.push_back((now, msg_id.to_owned()));
            PublishAck {
                sequence: seq,
                duplicate: false,
            }
        };
        metrics::counter!(MESSAGES_TOTAL, "subject" => subject.to_owned()).increment(1);
        log.wake.notify_waiters();
        Ok(ack)
    }

    async fn subscribe(
        &self,
        subject: &str,
        durable: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        validate_subject(subject)?;
        validate_durable(durable)?;
        let log = self.log(subject);
        {
            let mut st = lock(&log.state);
            // A new durable starts at the oldest message still retained (see the module docs).
            let first = st.first_seq();
            st.durables
                .entry(durable.to_owned())
                .or_insert_with(|| DurableState {
                    next_seq: first,
                    pending: BTreeMap::new(),
                });
        }
        Ok(Box::new(MemorySubscription {
            log,
            durable: durable.to_owned(),
        }))
    }

    async fn backlog(&self) -> Result<Vec<Backlog>, BusError> {
        let logs: Vec<Arc<SubjectLog>> = lock(&self.inner.subjects).values().cloned().collect();
        let mut out = Vec::new();
        for log in logs {
            let st = lock(&log.state);
            for (durable, d) in &st.durables {
                out.push(Backlog {
                    durable: durable.clone(),
                    subject: log.name.clone(),
                    // Sequences are not contiguous (acked-by-all and over-the-limit messages
                    // are gone), so count what is retained from the durable's position on.
                    pending: st.messages.range(d.next_seq..).count() as u64,
                    ack_pending: d.pending.len() as u64,
                });
            }
        }
        out.sort_by(|a, b| (&a.subject, &a.durable).cmp(&(&b.subject, &b.durable)));
        Ok(out)
    }

    /// In process: there is nothing to reach.
    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

struct MemorySubscription {
    log: Arc<SubjectLog>,
    durable: String,
}

enum Next {
    Deliver(Arc<Stored>, u32),
    Wait(Option<Instant>),
}

impl MemorySubscription {
    fn poll_once(&self) -> Next {
        let mut st = lock(&self.log.state);
        let now = Instant::now();
        let ack_wait = self.log.config.ack_wait;
        let max_deliver = self.log.config.max_deliver;
        let LogState {
            messages, durables, ..
        } = &mut *st;
        let d = durables
            .get_mut(&self.durable)
            .expect("durable is created by subscribe");
        // Messages discarded by the count limit can no longer be delivered.
        d.pending.retain(|seq, _| messages.contains_key(seq));

        // Redeliveries first, oldest first: JetStream redelivers before moving on.
        let mut chosen = None;
        let mut given_up = Vec::new();
        let due: Vec<u64> = d
            .pending
            .iter()
            .filter(|(_, p)| p.redeliver_at <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in due {
            let p = d.pending.get_mut(&seq).expect("listed above");
            if max_deliver.is_some_and(|max| p.deliveries >= max) {
                tracing::warn!(subject = %self.log.name, durable = %self.durable, seq,
                    "message reached max deliveries without ack; giving it up");
                d.pending.remove(&seq);
                given_up.push(seq);
                continue;
            }
            p.deliveries += 1;
            p.redeliver_at = now + ack_wait;
            chosen = Some((seq, p.deliveries));
            break;
        }
        if chosen.is_none()
            && let Some(seq) = messages.range(d.next_seq..).next().map(|(s, _)| *s)
        {
            d.next_seq = seq + 1;
            d.pending.insert(
                seq,
                Pending {
                    redeliver_at: now + ack_wait,
                    deliveries: 1,
                },
            );
            chosen = Some((seq, 1));
        }
        let next = match chosen {
            Some((seq, deliveries)) => {
                let msg = messages.get(&seq).expect("pending seq is stored").clone();
                Next::Deliver(msg, deliveries)
            }
            None => Next::Wait(d.pending.values().map(|p| p.redeliver_at).min()),
        };
        // A message given up is done for this durable, as an acked one is.
        for seq in given_up {
            st.drop_if_done(seq);
        }
        next
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Message, BusError> {
        loop {
            // Register for wake-ups before looking, so a publish between the look and the wait
            // is not missed.
            let notified = self.log.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.poll_once() {
                Next::Deliver(stored, delivered) => {
                    let acker = MemoryAcker {
                        log: self.log.clone(),
                        durable: self.durable.clone(),
                        seq: stored.seq,
                    };
                    return Ok(Message::new(
                        self.log.name.clone(),
                        stored.msg_id.clone(),
                        stored.payload.clone(),
                        stored.seq,
                        delivered,
                        Box::new(acker),
                    ));
                }
                Next::Wait(Some(at)) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                Next::Wait(None) => notified.await,
            }
        }
    }
}

struct MemoryAcker {
    log: Arc<SubjectLog>,
    durable: String,
    seq: u64,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<(), BusError> {
        let mut st = lock(&self.log.state);
        if let Some(d) = st.durables.get_mut(&self.durable) {
            d.pending.remove(&self.seq);
        }
        st.drop_if_done(self.seq);
        Ok(())
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<(), BusError> {
        {
            let mut st = lock(&self.log.state);
            if let Some(p) = st
                .durables
                .get_mut(&self.durable)
                .and_then(|d| d.pending.get_mut(&self.seq))
            {
                p.redeliver_at = Instant::now() + delay.unwrap_or_default();
            }
        }
        self.log.wake.notify_waiters();
        Ok(())
    }
}
