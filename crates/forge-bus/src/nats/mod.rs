//! The bus on NATS JetStream (async-nats), for distributed mode: every service process connects
//! to the same server and gets the semantics of the in-process bus, durably.
//!
//! How the [`Bus`] maps onto JetStream:
//! - **One stream** (`NatsBusConfig::stream`, default `FORGE`) holds every subject of the bus:
//!   the spec's ([`crate::subjects::ALL`]) and `deadletter.>`. File storage, so messages
//!   and consumer positions survive a server restart; at most `max_messages_per_subject` per
//!   subject, oldest discarded (the in-process bus's bounded log). [`NatsBus::connect`] creates
//!   or updates it ([`NatsBus::setup`]), so whichever service starts first sets it up.
//! - **Dedup**: JetStream drops a publish whose `Nats-Msg-Id` it saw within the stream's
//!   `duplicate_window` — across the whole stream. The bus promises dedup per subject (the
//!   consumer loop parks a dead letter under the original's id on `deadletter.<subject>`), so
//!   the header is `<subject> <msg_id>`; a subject has no spaces, so that is unambiguous, and
//!   consumers get back the part after the subject.
//! - **Durable subscriptions**: one durable pull consumer per (durable, subject), filtered on
//!   the subject, deliver policy all, explicit ack, `ack_wait`/`max_deliver` from the config.
//!   Services use one durable name on several subjects (the orchestrator on `spawn.request` and
//!   `scenario.scored`) while a JetStream consumer has one position, so the consumer's name is
//!   [`consumer_name`]: durable, subject, and a hash of both. Subscriptions bound to the same
//!   durable pull from the same consumer, so they share its messages.
//! - **Pull only when asked**: [`Subscription::next`] sends one pull request for one message
//!   and waits for it, so the consumer loop takes a message only when a handler slot is free.
//!   Each subscription has one inbox for its life, so a delivery answering a request it gave
//!   up on (the connection dropped; the caller stopped waiting) still reaches it rather than
//!   waiting out the ack wait; a request is sent again when it expires or the client
//!   reconnects (a request waiting at the server dies with the connection).
//! - **Ack/nak**: `+ACK` and `-NAK` (with the retry delay) are sent as requests: `ack()` returns
//!   once the server has applied it, and a nak is in effect before the next pull goes out.
//! - **Operators** read a subject's stored messages by sequence and delete one
//!   ([`NatsBus::stored`], [`NatsBus::remove_stored`]: no consumer, so nothing is acked).
//! - **Errors**: a server or connection failure is [`BusError::Unavailable`]. async-nats
//!   reconnects on its own; publishes and pulls made meanwhile are sent once it is back.

mod config;
mod stored;
mod subscription;

use std::sync::Arc;

use async_nats::Event;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{CreateStreamErrorKind, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use tokio::sync::watch;

pub use config::NatsBusConfig;
pub use stored::StoredMessage;
use subscription::NatsSubscription;

use crate::{
    Backlog, Bus, BusError, MESSAGES_TOTAL, PublishAck, Subscription, validate_durable,
    validate_msg_id, validate_subject,
};

/// What [`NatsBus::setup`] left on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub name: String,
    pub subjects: Vec<String>,
    /// Messages stored now.
    pub messages: u64,
}

/// The bus on a NATS JetStream server. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

struct Inner {
    js: jetstream::Context,
    config: NatsBusConfig,
    /// Counts (re)connections: a pull request waiting at the server dies with the connection it
    /// was sent on, so a subscription pulls again when this changes.
    connections: watch::Receiver<u64>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("stream", &self.inner.config.stream)
            .finish_non_exhaustive()
    }
}

impl NatsBus {
    /// Connects to the server at `url` (e.g. `nats://127.0.0.1:4222`) and sets the stream up.
    /// A server that is not there is [`BusError::Unavailable`], at once: only an established
    /// connection is retried in the background.
    pub async fn connect(url: &str, config: NatsBusConfig) -> Result<Self, BusError> {
        config.validate()?;
        let (connected, connections) = watch::channel(0u64);
        let connected = Arc::new(connected);
        let client = async_nats::ConnectOptions::new()
            .name("forge-bus")
            .request_timeout(Some(config.request_timeout))
            .event_callback(move |event| {
                let connected = connected.clone();
                async move {
                    match event {
                        Event::Connected => {
                            tracing::info!("connected to nats");
                            connected.send_modify(|n| *n += 1);
                        }
                        Event::Disconnected => tracing::warn!("nats connection lost; reconnecting"),
                        Event::ServerError(_)
                        | Event::ClientError(_)
                        | Event::SlowConsumer(_)
                        | Event::LameDuckMode => tracing::warn!(%event, "nats event"),
                        other => tracing::debug!(event = %other, "nats event"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| BusError::Unavailable(format!("cannot connect to nats at {url}: {e}")))?;
        let mut js = jetstream::new(client);
        js.set_timeout(config.request_timeout);
        let bus = Self {
            inner: Arc::new(Inner {
                js,
                config,
                connections,
            }),
        };
        bus.setup().await?;
        Ok(bus)
    }

    pub fn config(&self) -> &NatsBusConfig {
        &self.inner.config
    }

    /// Creates the stream, or brings an existing one to this configuration (subjects, dedup
    /// window, limits). Idempotent; every [`NatsBus::connect`] calls it.
    pub async fn setup(&self) -> Result<StreamSummary, BusError> {
        let c = &self.inner.config;
        let wanted = stream::Config {
            name: c.stream.clone(),
            description: Some("FrostGate Forge bus".to_owned()),
            subjects: c.subjects.clone(),
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            duplicate_window: c.dedup_window,
            max_messages_per_subject: c.max_messages_per_subject,
            ..stream::Config::default()
        };
        let info = self
            .inner
            .js
            .create_or_update_stream(wanted)
            .await
            .map_err(|e| {
                let why = format!("cannot set up stream {}: {e}", c.stream);
                match e.kind() {
                    // The server answered and said no: a conflict with what is there (storage
                    // type, overlapping subjects), which retrying will not fix.
                    CreateStreamErrorKind::JetStream(_) => BusError::InvalidConfig(why),
                    _ => BusError::Unavailable(why),
                }
            })?;
        Ok(StreamSummary {
            name: info.config.name,
            subjects: info.config.subjects,
            messages: info.state.messages,
        })
    }

    /// Refuses a subject outside the stream here, with a clear error, rather than as a server
    /// timeout (publish) or an obscure filter error (subscribe).
    fn check_in_stream(&self, subject: &str) -> Result<(), BusError> {
        if self
            .inner
            .config
            .subjects
            .iter()
            .any(|pattern| subject_matches(pattern, subject))
        {
            Ok(())
        } else {
            Err(BusError::InvalidSubject(
                subject.to_owned(),
                "it is not one of the bus stream's subjects",
            ))
        }
    }
}

/// The JetStream name of `durable`'s consumer on `subject`: `<durable>_<subject, dots as
/// dashes>_<8 hex digits>`, e.g. `orchestrator_spawn-request_1b2c3d4e`. The readable part is
/// for operators; the hash of both keeps names apart where the readable part does not (`a_b`
/// on `c` vs `a` on `b.c`).
pub fn consumer_name(durable: &str, subject: &str) -> String {
    let readable: String = subject
        .chars()
        .take(64)
        .map(|c| match c {
            '.' => '-',
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => c,
            _ => '_',
        })
        .collect();
    // FNV-1a: stable across builds and releases, unlike std's hasher.
    let hash = [durable.as_bytes(), b"\n", subject.as_bytes()]
        .concat()
        .iter()
        .fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
        });
    format!("{durable}_{readable}_{hash:08x}")
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// The `Nats-Msg-Id` of `msg_id` on `subject`: JetStream dedups per stream, the bus per subject.
fn dedup_id(subject: &str, msg_id: &str) -> String {
    format!("{subject} {msg_id}")
}

fn publish_error(subject: &str, e: PublishError) -> BusError {
    match e.kind() {
        PublishErrorKind::StreamNotFound => BusError::Unavailable(format!(
            "no stream takes `{subject}`: was the stream deleted?"
        )),
        PublishErrorKind::MaxPayloadExceeded => BusError::Encode(format!("{subject}: {e}")),
        _ => BusError::Unavailable(format!("cannot publish on `{subject}`: {e}")),
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        payload: Vec<u8>,
    ) -> Result<PublishAck, BusError> {
        validate_subject(subject)?;
        validate_msg_id(msg_id)?;
        self.check_in_stream(subject)?;
        // A publish whose PubAck was lost (the server died after storing it, or before) is sent
        // again in short attempts until the request timeout: the message id makes a repeat a
        // duplicate, never a second message, and a lost answer costs one attempt, not the
        // whole timeout.
        let c = &self.inner.config;
        let deadline = tokio::time::Instant::now() + c.request_timeout;
        let ack = loop {
            let message = PublishMessage::build()
                .message_id(dedup_id(subject, msg_id))
                .payload(payload.clone().into());
            let attempt = async {
                self.inner
                    .js
                    .send_publish(subject.to_owned(), message)
                    .await?
                    .await
            };
            let retry = match tokio::time::timeout(c.ack_timeout, attempt).await {
                Ok(Ok(ack)) => break ack,
                Ok(Err(e)) => match e.kind() {
                    PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                        publish_error(subject, e)
                    }
                    _ => return Err(publish_error(subject, e)),
                },
                Err(_) => BusError::Unavailable(format!(
                    "cannot publish on `{subject}`: no acknowledgement within {:?}",
                    c.ack_timeout
                )),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(retry);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        if !ack.duplicate {
            metrics::counter!(MESSAGES_TOTAL, "subject" => subject.to_owned()).increment(1);
        }
        Ok(PublishAck {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    async fn subscribe(
        &self,
        subject: &str,
        durable: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        validate_subject(subject)?;
        validate_durable(durable)?;
        self.check_in_stream(subject)?;
        let c = &self.inner.config;
        let config = pull::Config {
            durable_name: Some(consumer_name(durable, subject)),
            description: Some(format!("durable {durable} on {subject}")),
            filter_subject: subject.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: c.ack_wait,
            max_deliver: c.max_deliver.map_or(-1, i64::from),
            ..pull::Config::default()
        };
        // Create-or-update: an existing consumer keeps its position and takes the new ack wait
        // and max deliveries.
        let consumer: PullConsumer = self
            .inner
            .js
            .create_consumer_on_stream(config, &c.stream)
            .await
            .map_err(|e| {
                BusError::Unavailable(format!("cannot bind durable {durable} to `{subject}`: {e}"))
            })?;
        let subscription = NatsSubscription::new(
            consumer,
            self.inner.js.clone(),
            subject,
            c.pull_expiry,
            c.ack_timeout,
            self.inner.connections.clone(),
        )
        .await?;
        Ok(Box::new(subscription))
    }

    async fn backlog(&self) -> Result<Vec<Backlog>, BusError> {
        use futures::TryStreamExt as _;
        let stream = self.stream().await?;
        let unavailable = |e: &dyn std::fmt::Display| {
            BusError::Unavailable(format!("cannot list the consumers of the stream: {e}"))
        };
        let mut consumers = stream.consumers();
        let mut out = Vec::new();
        while let Some(info) = consumers.try_next().await.map_err(|e| unavailable(&e))? {
            // The description names the service's durable (the consumer name adds a hash).
            let durable = info
                .config
                .description
                .as_deref()
                .and_then(|d| d.strip_prefix("durable "))
                .and_then(|d| d.split(" on ").next())
                .unwrap_or(&info.name)
                .to_owned();
            out.push(Backlog {
                durable,
                subject: info.config.filter_subject.clone(),
                pending: info.num_pending,
                ack_pending: info.num_ack_pending as u64,
            });
        }
        out.sort_by(|a, b| (&a.subject, &a.durable).cmp(&(&b.subject, &b.durable)));
        Ok(out)
    }

    /// A stream-info request: the server is reachable, JetStream answers and the stream exists.
    async fn ping(&self) -> Result<(), BusError> {
        let name = &self.inner.config.stream;
        match tokio::time::timeout(crate::PING_TIMEOUT, self.inner.js.get_stream(name)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BusError::Unavailable(format!(
                "cannot get the info of stream {name} from nats: {e}"
            ))),
            Err(_) => Err(BusError::Unavailable(format!(
                "nats did not answer within {:?}",
                crate::PING_TIMEOUT
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches("spawn.request", "spawn.request"));
        assert!(!subject_matches("spawn.request", "spawn.request.x"));
        assert!(!subject_matches("spawn.request.x", "spawn.request"));
        assert!(subject_matches("deadletter.>", "deadletter.spawn.request"));
        assert!(!subject_matches("deadletter.>", "deadletter"));
        assert!(subject_matches("jobs.*", "jobs.run"));
        assert!(!subject_matches("jobs.*", "jobs.run.x"));
    }

    #[test]
    fn consumer_names_are_readable_and_unique_per_durable_and_subject() {
        let a = consumer_name("orchestrator", "spawn.request");
        assert!(a.starts_with("orchestrator_spawn-request_"), "{a}");
        assert_ne!(a, consumer_name("orchestrator", "scenario.scored"));
        assert_ne!(consumer_name("a_b", "c"), consumer_name("a", "b.c"));
        assert_ne!(consumer_name("a", "b-c"), consumer_name("a", "b.c"));
        assert_eq!(a, consumer_name("orchestrator", "spawn.request"), "stable");
        let odd = consumer_name("w", "a/b:c");
        assert!(
            odd.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{odd}"
        );
    }
}
