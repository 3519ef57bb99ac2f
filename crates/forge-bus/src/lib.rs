//! The event bus of FrostGate Forge (spec: NATS Subjects), behind one trait so the same service
//! code runs on the in-process bus (`forge up`) and on NATS JetStream (`forge serve <service>`).
//!
//! Semantics every implementation must give (they are JetStream's):
//! - **dedup**: a publish whose message id was already accepted on the same subject within the
//!   dedup window is acknowledged as a duplicate and not delivered again;
//! - **durable subscriptions**: `subscribe(subject, durable)` binds to a named consumer whose
//!   position survives the subscription — a consumer that reconnects resumes where it left off;
//! - **at-least-once**: every delivered message must be [`Message::ack`]ed; an un-acked message is
//!   redelivered after the ack wait, or at once after [`Message::nak`];
//! - **queue-group-like sharing**: several subscriptions bound to the same durable share its
//!   messages (each message goes to one of them); different durables each get every message.
//!
//! The trait is shaped after async-nats' JetStream API (publish with a `Nats-Msg-Id` header,
//! pull consumers, `AckKind::Ack`/`Nak`), so [`nats::NatsBus`] is a thin adapter; both
//! implementations pass the same conformance suite (`tests/bus.rs`).

pub mod consumer;
pub mod memory;
pub mod messages;
pub mod nats;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use consumer::{ConsumerConfig, DeadLetter, Delivery, Outcome, Reserved, consume};
pub use memory::{MemoryBus, MemoryBusConfig};
pub use messages::subjects;
pub use nats::{NatsBus, NatsBusConfig};

/// The counter every implementation increments once per accepted (non-duplicate) publish.
pub const MESSAGES_TOTAL: &str = "forge_nats_messages_total";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("bus is unavailable: {0}")]
    Unavailable(String),
    #[error("invalid subject `{0}`: {1}")]
    InvalidSubject(String, &'static str),
    #[error("invalid durable name `{0}`: use letters, digits, `-` and `_`")]
    InvalidDurable(String),
    #[error("message id must not be empty")]
    EmptyMessageId,
    #[error("invalid message id `{0}`: no control characters or surrounding whitespace")]
    InvalidMessageId(String),
    #[error("invalid bus configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot encode message payload: {0}")]
    Encode(String),
    #[error("the bus was shut down")]
    Closed,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    /// Position of the message in the log (for a duplicate: the original's). Grows with publish
    /// order on a subject; the in-process bus counts per subject, JetStream per stream.
    pub sequence: u64,
    /// The message id was already accepted within the dedup window; nothing new was stored.
    pub duplicate: bool,
}

/// Acknowledgement handle of one delivery; implemented by each backend.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<(), BusError>;
    /// Asks for redelivery after `delay` (at once for `None`).
    async fn nak(&self, delay: Option<Duration>) -> Result<(), BusError>;
}

/// One delivery of a message to a durable consumer.
pub struct Message {
    pub subject: String,
    pub msg_id: String,
    pub payload: Vec<u8>,
    /// Position in the log, as in [`PublishAck::sequence`].
    pub sequence: u64,
    /// 1 on first delivery, 2 on the first redelivery, ...
    pub delivered: u32,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("subject", &self.subject)
            .field("msg_id", &self.msg_id)
            .field("sequence", &self.sequence)
            .field("delivered", &self.delivered)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Message {
    /// For backends: a delivery with its ack handle.
    pub fn new(
        subject: String,
        msg_id: String,
        payload: Vec<u8>,
        sequence: u64,
        delivered: u32,
        acker: Box<dyn Acker>,
    ) -> Self {
        Self {
            subject,
            msg_id,
            payload,
            sequence,
            delivered,
            acker,
        }
    }

    /// Done with this message: it is never delivered to this durable again.
    pub async fn ack(&self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    /// Not processed: redeliver it now (to any subscription of the durable).
    pub async fn nak(&self) -> Result<(), BusError> {
        self.acker.nak(None).await
    }

    /// Not processed: redeliver it after `delay`.
    pub async fn nak_with_delay(&self, delay: Duration) -> Result<(), BusError> {
        self.acker.nak(Some(delay)).await
    }

    /// The payload as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

/// A live binding to a durable consumer. Dropping it loses nothing: un-acked messages are
/// redelivered after the ack wait, to this durable's next subscription.
#[async_trait]
pub trait Subscription: Send {
    /// The next message for this durable; waits until there is one.
    async fn next(&mut self) -> Result<Message, BusError>;
}

/// The bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes `payload` on `subject`, deduplicated by `msg_id` within the dedup window.
    async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        payload: Vec<u8>,
    ) -> Result<PublishAck, BusError>;

    /// Binds to the durable consumer `durable` of `subject`, creating it (positioned at the
    /// subject's first retained message) when it does not exist yet. What is retained differs:
    /// NATS keeps acked messages up to the stream's limits, the in-process bus drops a message
    /// once every existing durable acked it ([`memory`]).
    async fn subscribe(
        &self,
        subject: &str,
        durable: &str,
    ) -> Result<Box<dyn Subscription>, BusError>;

    /// How far behind every durable consumer is (the spec's NATSBacklog alert watches it).
    async fn backlog(&self) -> Result<Vec<Backlog>, BusError>;

    /// Whether the bus answers now (readiness probes), within [`PING_TIMEOUT`].
    async fn ping(&self) -> Result<(), BusError>;
}

/// How long [`Bus::ping`] waits for the server.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The backlog of one durable consumer of one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backlog {
    pub durable: String,
    pub subject: String,
    /// Messages not delivered yet.
    pub pending: u64,
    /// Delivered and not acked yet.
    pub ack_pending: u64,
}

/// JSON helpers for every [`Bus`].
#[async_trait]
pub trait BusExt: Bus {
    /// Publishes a typed message on its subject under its message id.
    async fn publish_msg<M: messages::BusMessage>(&self, msg: &M) -> Result<PublishAck, BusError> {
        self.publish_json(M::SUBJECT, &msg.msg_id(), msg).await
    }

    async fn publish_json<T: Serialize + Sync>(
        &self,
        subject: &str,
        msg_id: &str,
        payload: &T,
    ) -> Result<PublishAck, BusError> {
        let bytes = serde_json::to_vec(payload).map_err(|e| BusError::Encode(e.to_string()))?;
        self.publish(subject, msg_id, bytes).await
    }
}

impl<B: Bus + ?Sized> BusExt for B {}

/// Checks a publish/subscribe subject: dot-separated non-empty tokens without whitespace or
/// wildcards (the in-process bus matches subjects exactly).
pub fn validate_subject(subject: &str) -> Result<(), BusError> {
    let bad = |why| Err(BusError::InvalidSubject(subject.to_owned(), why));
    if subject.is_empty() {
        return bad("it is empty");
    }
    if subject.split('.').any(str::is_empty) {
        return bad("it has an empty token");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it contains whitespace");
    }
    if subject.contains(['*', '>']) {
        return bad("wildcards are not supported here");
    }
    Ok(())
}

/// Checks a message id: not empty, and carried unchanged in a NATS header (which cannot hold
/// line breaks and trims surrounding whitespace), so both backends accept the same ids.
pub fn validate_msg_id(msg_id: &str) -> Result<(), BusError> {
    if msg_id.is_empty() {
        return Err(BusError::EmptyMessageId);
    }
    if msg_id.chars().any(char::is_control) || msg_id.trim() != msg_id {
        return Err(BusError::InvalidMessageId(msg_id.to_owned()));
    }
    Ok(())
}

/// Checks a durable consumer name (NATS allows no `.`, `*`, `>` or whitespace in it).
pub fn validate_durable(name: &str) -> Result<(), BusError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(BusError::InvalidDurable(name.to_owned()))
    }
}
