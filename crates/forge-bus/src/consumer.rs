//! The one consumer loop of every service: subscribe to a durable, pull only while a handler
//! slot is free, parse the typed message, run the handler, and settle the delivery by its
//! [`Outcome`]. Services write a handler `T -> Outcome`; nothing else touches ack and nak.
//!
//! - A payload that does not parse is dead-lettered at once: redelivering it cannot help.
//! - `Retry` naks with a delay; past `max_deliveries` the message is dead-lettered instead, so
//!   one poisoned message never blocks a consumer forever.
//! - A dead letter is published on `deadletter.<subject>` (a [`DeadLetter`] envelope keeping
//!   the original payload, for operators to inspect and replay), then the original is acked.
//! - Pulling is bounded by `concurrency`: a message is taken from the bus only when a slot is
//!   free, so a busy service leaves work for its replicas.
//! - An optional admission gate (a semaphore the service owns, e.g. a lab host's free
//!   capacity) is also taken before pulling; the handler may keep its permit past the message
//!   ([`Delivery::reserved`]), so a host that is full pulls nothing and leaves the work to
//!   hosts with room.
//! - On shutdown the loop stops pulling and waits for the handlers in flight.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::messages::subjects;
use crate::{Bus, BusExt, Message, Subscription};

/// How a handler settles one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done (also: nothing to do). The message is never delivered to this durable again.
    Ack,
    /// Not done; deliver it again after the delay.
    Retry(Duration),
    /// Never going to work: park it on the dead-letter subject with the reason.
    DeadLetter(String),
}

/// Which durable to consume and how.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub subject: String,
    pub durable: String,
    /// Handlers running at once (at least 1).
    pub concurrency: usize,
    /// Deliveries after which a message that still asks for `Retry` is dead-lettered
    /// (`None`: retried for ever).
    pub max_deliveries: Option<u32>,
    /// Admission gate: one permit is taken before each pull (see [`Delivery::reserved`]).
    pub gate: Option<Arc<Semaphore>>,
}

impl ConsumerConfig {
    pub fn new(subject: impl Into<String>, durable: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            durable: durable.into(),
            concurrency: 1,
            max_deliveries: None,
            gate: None,
        }
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Pull only while `gate` has a permit to give.
    pub fn gate(mut self, gate: Arc<Semaphore>) -> Self {
        self.gate = Some(gate);
        self
    }

    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = Some(n.max(1));
        self
    }
}

/// What a handler knows about the delivery besides the message itself.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg_id: String,
    /// 1 on first delivery.
    pub delivered: u32,
    /// The admission gate's permit taken for this message, when the consumer has a gate.
    pub reserved: Reserved,
}

/// A gate permit held for one delivery: released when the delivery is settled, unless the
/// handler [`Reserved::take`]s it to hold on (a lab host keeps one per running lab).
#[derive(Debug, Clone, Default)]
pub struct Reserved(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl Reserved {
    fn new(permit: Option<OwnedSemaphorePermit>) -> Self {
        Self(Arc::new(std::sync::Mutex::new(permit)))
    }

    /// The permit, now the caller's to release (by dropping it).
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The envelope published on `deadletter.<subject>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub subject: String,
    pub msg_id: String,
    pub delivered: u32,
    pub reason: String,
    /// The original payload, base64.
    pub payload_b64: String,
}

impl DeadLetter {
    pub fn payload(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.payload_b64)
    }
}

/// Consumes `cfg.subject` through the durable `cfg.durable` until `shutdown` turns true, handing
/// every message, parsed as `T`, to `handler`.
pub async fn consume<T, H, Fut>(
    bus: Arc<dyn Bus>,
    cfg: ConsumerConfig,
    mut shutdown: watch::Receiver<bool>,
    handler: H,
) where
    T: DeserializeOwned + Send + 'static,
    H: Fn(T, Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    let stopped = |rx: &watch::Receiver<bool>| *rx.borrow();
    'subscribe: while !stopped(&shutdown) {
        let mut sub: Box<dyn Subscription> = match bus.subscribe(&cfg.subject, &cfg.durable).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(subject = %cfg.subject, durable = %cfg.durable, error = %e, "cannot subscribe; retrying in 1s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'subscribe,
                    _ = shutdown.wait_for(|s| *s) => break 'subscribe,
                }
            }
        };
        loop {
            while in_flight.try_join_next().is_some() {}
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
                _ = shutdown.wait_for(|s| *s) => break 'subscribe,
            };
            let admitted = match &cfg.gate {
                None => None,
                Some(gate) => tokio::select! {
                    p = gate.clone().acquire_owned() => match p {
                        Ok(p) => Some(p),
                        // A closed gate admits nothing more: stop consuming.
                        Err(_) => break 'subscribe,
                    },
                    _ = shutdown.wait_for(|s| *s) => break 'subscribe,
                },
            };
            let msg = tokio::select! {
                m = sub.next() => m,
                _ = shutdown.wait_for(|s| *s) => break 'subscribe,
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(subject = %cfg.subject, error = %e, "subscription ended; subscribing again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'subscribe;
                }
            };
            let (bus, cfg, handler) = (bus.clone(), cfg.clone(), handler.clone());
            let reserved = Reserved::new(admitted);
            in_flight.spawn(async move {
                let _slot = permit;
                settle(bus.as_ref(), &cfg, msg, handler.as_ref(), reserved).await;
            });
        }
    }
    while in_flight.join_next().await.is_some() {}
}

async fn settle<T, H, Fut>(
    bus: &dyn Bus,
    cfg: &ConsumerConfig,
    msg: Message,
    handler: &H,
    reserved: Reserved,
) where
    T: DeserializeOwned,
    H: Fn(T, Delivery) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let outcome = match msg.json::<T>() {
        Ok(value) => {
            let delivery = Delivery {
                msg_id: msg.msg_id.clone(),
                delivered: msg.delivered,
                reserved,
            };
            handler(value, delivery).await
        }
        Err(e) => Outcome::DeadLetter(format!("malformed {} payload: {e}", cfg.subject)),
    };
    let outcome = match outcome {
        Outcome::Retry(_) if cfg.max_deliveries.is_some_and(|max| msg.delivered >= max) => {
            Outcome::DeadLetter(format!("still failing after {} deliveries", msg.delivered))
        }
        other => other,
    };
    let settled = match outcome {
        Outcome::Ack => msg.ack().await,
        Outcome::Retry(delay) => {
            tracing::debug!(subject = %cfg.subject, msg_id = %msg.msg_id, ?delay, "message will be redelivered");
            msg.nak_with_delay(delay).await
        }
        Outcome::DeadLetter(reason) => dead_letter(bus, cfg, &msg, reason).await,
    };
    if let Err(e) = settled {
        // The bus redelivers an unsettled message after its ack wait; nothing is lost.
        tracing::warn!(subject = %cfg.subject, msg_id = %msg.msg_id, error = %e, "cannot settle message");
    }
}

async fn dead_letter(
    bus: &dyn Bus,
    cfg: &ConsumerConfig,
    msg: &Message,
    reason: String,
) -> Result<(), crate::BusError> {
    tracing::warn!(subject = %cfg.subject, msg_id = %msg.msg_id, delivered = msg.delivered, %reason, "dead-lettering message");
    metrics::counter!("forge_bus_dead_letters_total", "subject" => cfg.subject.clone())
        .increment(1);
    let letter = DeadLetter {
        subject: cfg.subject.clone(),
        msg_id: msg.msg_id.clone(),
        delivered: msg.delivered,
        reason,
        payload_b64: base64::engine::general_purpose::STANDARD.encode(&msg.payload),
    };
    let parked = bus
        .publish_json(&subjects::dead_letter(&cfg.subject), &msg.msg_id, &letter)
        .await;
    match parked {
        Ok(_) => msg.ack().await,
        // Not parked: keep the original rather than lose it.
        Err(e) => {
            tracing::warn!(error = %e, "cannot publish dead letter; redelivering");
            msg.nak_with_delay(Duration::from_secs(1)).await
        }
    }
}
