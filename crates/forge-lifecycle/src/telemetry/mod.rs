//! The producer side of the telemetry streams (spec: NATS Subjects `telemetry.logs`,
//! `telemetry.metrics`, `audit.events`): every service publishes its logs, its `forge_*` metrics
//! and its audit events, so the observer hub's PII flagging and cardinality limits work on what
//! the platform really emits, in embedded (`forge up`) and distributed (`forge serve`) mode
//! alike.
//!
//! Telemetry must never slow down or break the service it describes, so each stream is a
//! bounded queue drained by a publisher task: producers only `try_send` (a full queue drops the
//! record and counts it in `forge_telemetry_dropped_total{kind, reason}`), and a bus that is
//! down costs dropped telemetry, never a blocked request.
//!
//! - [`logs`]: [`BusLogLayer`], a `tracing` layer installed in `main()` before any bus exists;
//!   it publishes nothing until [`start`] binds a sink into its [`LogSlot`];
//! - [`metrics`]: a sampler that renders the process's Prometheus registry every interval;
//! - [`audit`]: [`BusAuditSink`], a tee in front of the signed audit log.

pub mod audit;
mod fields;
pub mod logs;
pub mod metrics;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use forge_bus::{Bus, BusExt};
use forge_core::audit::{AuditEvent, AuditSink};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use self::audit::BusAuditSink;
pub use self::logs::{BusLogLayer, LogSlot, service_of};

/// How long a stopping publisher keeps publishing what is still queued.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// What a platform publishes and how much of it.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The least severe log level published (default INFO); the global log filter applies
    /// first, so `LOG_LEVEL=warn` publishes warnings and errors only.
    pub log_level: tracing::Level,
    /// Records queued per stream before new ones are dropped (default 1024).
    pub queue_capacity: usize,
    /// Records published at once by a publisher (default 32).
    pub batch_size: usize,
    /// How often the metrics are sampled; `None` turns the sampler off (default 15 s).
    pub metrics_interval: Option<Duration>,
    /// Samples published per interval at most (default 200).
    pub max_samples_per_tick: usize,
    /// Event fields that become labels of a log event rather than text of its message. Only
    /// fields with few distinct values belong here (default `track`, `subject`, `durable`).
    pub label_fields: Vec<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_level: tracing::Level::INFO,
            queue_capacity: 1024,
            batch_size: 32,
            metrics_interval: Some(Duration::from_secs(15)),
            max_samples_per_tick: 200,
            label_fields: ["track", "subject", "durable"].map(String::from).into(),
        }
    }
}

/// The running publishers of one process.
pub struct Telemetry {
    tasks: Vec<JoinHandle<()>>,
    audit: mpsc::Sender<AuditEvent>,
    audit_dropped: Arc<AtomicU64>,
}

/// Starts publishing this process's telemetry on `bus` until `shutdown` turns true: binds the
/// global [`LogSlot`] (which the [`BusLogLayer`] installed in `main()` reads), starts the
/// metrics sampler and the audit publisher. `service` names the process in every record
/// (`forge_orchestrator`, ...; in embedded mode the platform's name, refined per module).
///
/// Wiring, in `Platform::start` (and the same in each `forge serve` service):
///
/// ```ignore
/// let telemetry = telemetry::start(bus.clone(), "forge_platform", cfg.telemetry.clone(),
///                                  shutdown_rx.clone());
/// // Every service records through the tee; the tee records into the signed log first.
/// let audit: Arc<dyn AuditSink> = telemetry.audit_tee(audit_log.clone());
/// // ... build the services with `audit` ...
/// tasks.extend(telemetry.into_tasks());
/// ```
///
/// The returned tasks end after `shutdown`, once what was queued is published (at most a
/// couple of seconds); the log slot is emptied then, so later log events are not published.
/// Call it inside a Tokio runtime.
pub fn start(
    bus: Arc<dyn Bus>,
    service: &str,
    cfg: TelemetryConfig,
    shutdown: watch::Receiver<bool>,
) -> Telemetry {
    start_with(bus, service, cfg, shutdown, LogSlot::global())
}

/// [`start`] binding `slot` instead of the global one (tests, which may run several platforms
/// in one process).
pub fn start_with(
    bus: Arc<dyn Bus>,
    service: &str,
    cfg: TelemetryConfig,
    shutdown: watch::Receiver<bool>,
    slot: &LogSlot,
) -> Telemetry {
    let capacity = cfg.queue_capacity.max(1);
    let batch = cfg.batch_size.max(1);
    let mut tasks = Vec::new();

    let (log_tx, log_rx) = mpsc::channel(capacity);
    let sink = slot.bind(logs::LogSink::new(service, &cfg, log_tx));
    let publisher = Publisher::new(bus.clone(), logs::KIND, batch);
    let (slot, stop) = (slot.clone(), stopped(shutdown.clone()));
    tasks.push(tokio::spawn(muted(async move {
        let stop = async move {
            stop.await;
            // No new events once stopping; the publisher drains what is queued.
            slot.unbind(&sink);
        };
        let route = |ev: &_| (forge_bus::subjects::TELEMETRY_LOGS, logs::msg_id(ev));
        publisher.run(log_rx, stop, route).await;
    })));

    let (audit, audit_rx) = mpsc::channel(capacity);
    let publisher = Publisher::new(bus.clone(), audit::KIND, batch);
    tasks.push(tokio::spawn(muted(publisher.run(
        audit_rx,
        stopped(shutdown.clone()),
        |ev: &AuditEvent| (forge_bus::subjects::AUDIT_EVENTS, audit::msg_id(ev)),
    ))));

    if let Some(every) = cfg.metrics_interval {
        let publisher = Publisher::new(bus, metrics::KIND, batch);
        let sampler = metrics::Sampler::new(service, every, cfg.max_samples_per_tick);
        tasks.push(tokio::spawn(muted(sampler.run(publisher, shutdown))));
    }
    Telemetry {
        tasks,
        audit,
        audit_dropped: Arc::default(),
    }
}

impl Telemetry {
    /// An audit sink that records into `inner` (the signed audit log) and also publishes every
    /// event on `audit.events`.
    pub fn audit_tee(&self, inner: Arc<dyn AuditSink>) -> Arc<dyn AuditSink> {
        Arc::new(self.bus_audit_sink(inner))
    }

    /// [`Telemetry::audit_tee`] as its concrete type.
    pub fn bus_audit_sink(&self, inner: Arc<dyn AuditSink>) -> BusAuditSink {
        BusAuditSink::new(inner, self.audit.clone(), self.audit_dropped.clone())
    }

    /// The publisher tasks, for the platform to await at shutdown.
    pub fn into_tasks(self) -> Vec<JoinHandle<()>> {
        self.tasks
    }
}

tokio::task_local! {
    /// Set while a telemetry publisher runs: whatever it (or the bus client under it) logs is
    /// not published, or every publish could produce another log event to publish.
    static PUBLISHING: ();
}

/// Runs `fut` with its log events kept off the bus.
async fn muted<F: Future<Output = ()>>(fut: F) {
    PUBLISHING.scope((), fut).await
}

/// True inside a telemetry publisher task.
fn publishing() -> bool {
    PUBLISHING.try_with(|_| ()).is_ok()
}

/// Counts one record that was not published: the queue was full, the publisher has stopped,
/// or the bus refused it.
fn count_dropped(kind: &'static str, reason: &'static str, n: u64) {
    ::metrics::counter!("forge_telemetry_dropped_total", "kind" => kind, "reason" => reason)
        .increment(n);
}

/// Offers `item` to a publisher's queue without waiting; counts it when it cannot be queued.
fn offer<T>(tx: &mpsc::Sender<T>, item: T, kind: &'static str, dropped: &AtomicU64) {
    let reason = match tx.try_send(item) {
        Ok(()) => return,
        Err(mpsc::error::TrySendError::Full(_)) => "full",
        Err(mpsc::error::TrySendError::Closed(_)) => "closed",
    };
    dropped.fetch_add(1, Ordering::Relaxed);
    count_dropped(kind, reason, 1);
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    // A dropped sender means the platform is gone: stop as well.
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Publishes batches of one stream's records on the bus.
struct Publisher {
    bus: Arc<dyn Bus>,
    kind: &'static str,
    batch: usize,
    /// Whether the last batch had failures, so a bus outage is logged once, not per record.
    failing: bool,
}

impl Publisher {
    fn new(bus: Arc<dyn Bus>, kind: &'static str, batch: usize) -> Self {
        Self {
            bus,
            kind,
            batch,
            failing: false,
        }
    }

    /// Publishes what arrives on `rx` until `stop` resolves (or every sender is gone), then
    /// what is still queued, for at most [`DRAIN_DEADLINE`].
    async fn run<T, F>(
        mut self,
        mut rx: mpsc::Receiver<T>,
        stop: impl Future<Output = ()>,
        route: F,
    ) where
        T: Serialize + Sync,
        F: Fn(&T) -> (&'static str, String),
    {
        let mut buf = Vec::with_capacity(self.batch);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut buf, self.batch) => {
                    if n == 0 {
                        return;
                    }
                    self.publish(&buf, &route).await;
                    buf.clear();
                }
                _ = &mut stop => break,
            }
        }
        rx.close();
        let drain = async {
            while rx.recv_many(&mut buf, self.batch).await > 0 {
                self.publish(&buf, &route).await;
                buf.clear();
            }
        };
        if tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_err() {
            tracing::warn!(
                kind = self.kind,
                "telemetry still queued at shutdown was dropped"
            );
        }
    }

    /// Publishes one batch at once (JetStream acknowledges each publish; in parallel a batch
    /// costs one round trip, not one per record).
    async fn publish<T, F>(&mut self, items: &[T], route: &F)
    where
        T: Serialize + Sync,
        F: Fn(&T) -> (&'static str, String),
    {
        let sends = items.iter().map(|item| {
            let (subject, id) = route(item);
            let bus = self.bus.clone();
            async move { bus.publish_json(subject, &id, item).await }
        });
        let results = futures::future::join_all(sends).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            count_dropped(self.kind, "publish", failed as u64);
            if !self.failing {
                let error = results.into_iter().find_map(Result::err);
                tracing::warn!(kind = self.kind, failed, error = ?error, "cannot publish telemetry");
            }
        } else if self.failing {
            tracing::info!(kind = self.kind, "publishing telemetry again");
        }
        self.failing = failed > 0;
    }
}

#[cfg(test)]
mod tests;
