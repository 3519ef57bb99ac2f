//! A subscription to one durable pull consumer: one pull request at a time, on one inbox.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::message::AckKind;
use async_nats::{Client, StatusCode, Subject, Subscriber, header};
use async_trait::async_trait;
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{Acker, BusError, Message, Subscription};

pub(super) struct NatsSubscription {
    consumer: PullConsumer,
    context: jetstream::Context,
    inbox: Subject,
    deliveries: Subscriber,
    subject: String,
    pull_expiry: Duration,
    ack_timeout: Duration,
    /// The outstanding pull request: when we stop waiting for its answer.
    pull: Option<Instant>,
    connections: watch::Receiver<u64>,
}

impl NatsSubscription {
    /// One inbox for the subscription's life, not one per pull: a delivery answering a pull
    /// we gave up on (after a reconnect, or a `next` the caller dropped) still reaches us.
    pub(super) async fn new(
        consumer: PullConsumer,
        context: jetstream::Context,
        subject: &str,
        pull_expiry: Duration,
        ack_timeout: Duration,
        connections: watch::Receiver<u64>,
    ) -> Result<Self, BusError> {
        let client = context.client();
        let inbox = Subject::from(client.new_inbox());
        let deliveries = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| BusError::Unavailable(format!("cannot subscribe to `{subject}`: {e}")))?;
        Ok(Self {
            consumer,
            context,
            inbox,
            deliveries,
            subject: subject.to_owned(),
            pull_expiry,
            ack_timeout,
            pull: None,
            connections,
        })
    }
}

/// What one message on the inbox means.
enum Answer {
    Delivery(Box<Message>),
    /// The pull request is over without a message (expired): pull again.
    PullOver,
    Failed(BusError),
}

impl NatsSubscription {
    async fn request_pull(&mut self) -> Result<(), BusError> {
        // Note the connection before pulling: after a reconnect, the request may be gone.
        self.connections.borrow_and_update();
        let request = BatchConfig {
            batch: 1,
            expires: Some(self.pull_expiry),
            ..BatchConfig::default()
        };
        self.consumer
            .request_batch(request, self.inbox.clone())
            .await
            .map_err(|e| {
                BusError::Unavailable(format!("cannot pull from `{}`: {e}", self.subject))
            })?;
        // The server answers an expired request with a 408; a second more covers its way here.
        self.pull = Some(Instant::now() + self.pull_expiry + Duration::from_secs(1));
        Ok(())
    }

    fn answer(&mut self, m: async_nats::Message) -> Answer {
        match m.status {
            None | Some(StatusCode::OK) => {
                self.pull = None;
                let m = jetstream::Message {
                    message: m,
                    context: self.context.clone(),
                };
                match self.message(m) {
                    Ok(m) => Answer::Delivery(Box::new(m)),
                    Err(e) => Answer::Failed(e),
                }
            }
            Some(StatusCode::TIMEOUT | StatusCode::NOT_FOUND) => {
                self.pull = None;
                Answer::PullOver
            }
            // 409 (consumer deleted, leadership change, ...), 503 (no JetStream): the consumer
            // loop subscribes again, which re-creates the consumer.
            Some(status) => {
                self.pull = None;
                Answer::Failed(BusError::Unavailable(format!(
                    "pull from `{}` failed: {status} {}",
                    self.subject,
                    m.description.unwrap_or_default()
                )))
            }
        }
    }

    fn message(&self, m: jetstream::Message) -> Result<Message, BusError> {
        // The reply subject carries the delivery's metadata, and is where acks go.
        let (sequence, delivered) = match m.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(e) => {
                return Err(BusError::Unavailable(format!(
                    "not a jetstream delivery: {e}"
                )));
            }
        };
        let jetstream::Message { message: m, .. } = m;
        let Some(reply) = m.reply.clone() else {
            return Err(BusError::Unavailable(
                "a delivery without a reply subject".into(),
            ));
        };
        let acker = NatsAcker {
            client: self.context.client(),
            reply,
            timeout: self.ack_timeout,
        };
        let subject = m.subject.to_string();
        let msg_id = match m
            .headers
            .as_ref()
            .and_then(|h| h.get(header::NATS_MESSAGE_ID))
        {
            Some(id) => {
                let id = id.as_str();
                id.strip_prefix(subject.as_str())
                    .and_then(|rest| rest.strip_prefix(' '))
                    .unwrap_or(id)
                    .to_owned()
            }
            // Published by something other than this bus, without an id: the stream position
            // identifies it (and a dead letter needs some id).
            None => format!("seq:{sequence}"),
        };
        Ok(Message::new(
            subject,
            msg_id,
            m.payload.to_vec(),
            sequence,
            u32::try_from(delivered).unwrap_or(u32::MAX),
            Box::new(acker),
        ))
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    /// Cancel-safe: a `next` dropped while waiting leaves its pull request to the next call.
    async fn next(&mut self) -> Result<Message, BusError> {
        loop {
            // A delivery may already be here (from a pull given up on): take it before pulling.
            let got = match self.deliveries.next().now_or_never() {
                Some(got) => got,
                None => {
                    let deadline = match self.pull {
                        Some(deadline) => deadline,
                        None => {
                            self.request_pull().await?;
                            continue;
                        }
                    };
                    tokio::select! {
                        got = self.deliveries.next() => got,
                        reconnected = self.connections.changed() => {
                            reconnected.map_err(|_| BusError::Closed)?;
                            // A request sent before the connection dropped died with it.
                            self.pull = None;
                            continue;
                        }
                        () = tokio::time::sleep_until(deadline) => {
                            self.pull = None;
                            continue;
                        }
                    }
                }
            };
            let Some(m) = got else {
                return Err(BusError::Closed);
            };
            match self.answer(m) {
                Answer::Delivery(m) => return Ok(*m),
                Answer::PullOver => {}
                Answer::Failed(e) => return Err(e),
            }
        }
    }
}

/// Acks through the delivery's reply subject, as a request: the server answers once it has
/// applied the ack or nak. Without waiting, a nak could reach the server after the next pull
/// and that pull would get a newer message instead of the redelivery.
struct NatsAcker {
    client: Client,
    reply: Subject,
    timeout: Duration,
}

impl NatsAcker {
    async fn send(&self, kind: AckKind, what: &str) -> Result<(), BusError> {
        let request = self.client.request(self.reply.clone(), kind.into());
        match tokio::time::timeout(self.timeout, request).await {
            Ok(answered) => answered
                .map(drop)
                .map_err(|e| BusError::Unavailable(format!("cannot {what} message: {e}"))),
            Err(_) => Err(BusError::Unavailable(format!(
                "cannot {what} message: no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(&self) -> Result<(), BusError> {
        self.send(AckKind::Ack, "ack").await
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<(), BusError> {
        self.send(AckKind::Nak(delay), "nak").await
    }
}
