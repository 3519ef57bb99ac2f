//! The bus backlog as metrics: every interval the hub asks the bus how far behind each durable
//! consumer is and sets `nats_jetstream_consumer_pending{durable,subject}` (not delivered yet;
//! the spec's NATSBacklog alert fires above 1000) and
//! `nats_jetstream_consumer_ack_pending{durable,subject}` (delivered, not acked yet). One place
//! samples it, so a platform of many processes exports each consumer once.

use std::sync::Arc;
use std::time::Duration;

use forge_bus::Bus;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Samples `bus` every `every` until `shutdown`.
pub fn spawn(
    bus: Arc<dyn Bus>,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    crate::spawn_every(every, shutdown, move || {
        let bus = bus.clone();
        async move {
            match bus.backlog().await {
                Ok(consumers) => {
                    for c in consumers {
                        let labels = [("durable", c.durable), ("subject", c.subject)];
                        metrics::gauge!("nats_jetstream_consumer_pending", &labels)
                            .set(c.pending as f64);
                        metrics::gauge!("nats_jetstream_consumer_ack_pending", &labels)
                            .set(c.ack_pending as f64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the bus backlog"),
            }
        }
    })
}
