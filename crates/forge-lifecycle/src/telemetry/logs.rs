//! `telemetry.logs` from `tracing`: [`BusLogLayer`] turns every event at the configured level
//! and above into a [`LogEvent`] and queues it for the log publisher.
//!
//! The global subscriber is installed in `main()`, long before a bus exists, so the layer reads
//! a late-bound [`LogSlot`]: empty (nothing published) until [`super::start`] binds a sink into
//! it, emptied again at shutdown. `on_event` never blocks and never awaits: it formats the event
//! and `try_send`s it into a bounded queue; when the queue is full the event is dropped and
//! counted.
//!
//! Events of the bus (`forge_bus`), of the NATS client (`async_nats`) and of this module, and
//! every event emitted while a telemetry publisher runs, are never published: publishing one
//! would log again, and the log would feed itself.
//!
//! Fields: `scenario_id`/`scenario` and `tenant_id`/`tenant` (of the event, else of the nearest
//! enclosing span that has them) fill the event's own fields; the configured label fields (few
//! distinct values) become labels, next to `target`; every other field is appended to the
//! message as `key=value`, where the hub's PII redaction sees it and the label cardinality does
//! not grow with it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use forge_bus::messages::LogEvent;
use forge_http::Service;
use tokio::sync::mpsc;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::TelemetryConfig;
use super::fields::{EventFields, SpanIds, carries_ids, cut, quoted};

pub(super) const KIND: &str = "logs";

/// Messages longer than this are cut (at a character boundary) before they are queued.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Label values longer than this are cut.
pub const MAX_LABEL_BYTES: usize = 128;

/// Modules whose events are never published: publishing a log event logs in them.
const MUTED: [&str; 3] = ["forge_bus", "async_nats", "forge_lifecycle::telemetry"];

/// Modules that belong to one service wherever they run: in embedded mode every service shares
/// one process, and these name the service of an event better than the process does.
const SERVICE_MODULES: [(&str, Service); 8] = [
    ("forge_lifecycle::orchestrator", Service::Orchestrator),
    ("forge_lifecycle::worker", Service::Worker),
    ("forge_lifecycle::scoreboard", Service::Scoreboard),
    ("forge_lifecycle::observer", Service::Observer),
    ("forge_lifecycle::runner", Service::Runner),
    ("forge_lifecycle::access", Service::Spawn),
    ("forge_services::spawn", Service::Spawn),
    ("forge_services::billing", Service::Spawn),
];

/// True when `target` is `module` or inside it.
fn in_module(target: &str, module: &str) -> bool {
    target
        .strip_prefix(module)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

fn is_muted(target: &str) -> bool {
    MUTED.iter().any(|m| in_module(target, m))
}

/// The service a module belongs to wherever it runs (embedded mode shares one process).
pub fn service_of(target: &str) -> Option<&'static str> {
    SERVICE_MODULES
        .iter()
        .find(|(m, _)| in_module(target, m))
        .map(|(_, s)| s.name())
}

/// The message id of a log event: log events are not facts that can repeat, so each is new.
pub(super) fn msg_id(_: &LogEvent) -> String {
    format!("log:{}", uuid::Uuid::new_v4())
}

/// Where the layer's events go while a log publisher runs.
pub(super) struct LogSink {
    service: String,
    level: Level,
    label_fields: Vec<String>,
    tx: mpsc::Sender<LogEvent>,
    dropped: AtomicU64,
}

impl LogSink {
    pub(super) fn new(service: &str, cfg: &TelemetryConfig, tx: mpsc::Sender<LogEvent>) -> Self {
        Self {
            service: service.to_owned(),
            level: cfg.log_level,
            label_fields: cfg.label_fields.clone(),
            tx,
            dropped: AtomicU64::new(0),
        }
    }

    fn event(&self, target: &str, level: &Level, fields: EventFields) -> LogEvent {
        let mut message = fields.message;
        let mut labels = BTreeMap::from([("target".to_owned(), cut(target, MAX_LABEL_BYTES))]);
        for (key, value) in fields.rest {
            if self.label_fields.iter().any(|l| l == key) {
                labels.insert(key.to_owned(), cut(&value, MAX_LABEL_BYTES));
            } else {
                let _ = write!(message, " {key}={}", quoted(&value));
            }
        }
        LogEvent {
            service: service_of(target).unwrap_or(&self.service).to_owned(),
            level: level.as_str().to_ascii_lowercase(),
            message: cut(&message, MAX_MESSAGE_BYTES),
            scenario_id: fields.scenario_id,
            tenant_id: fields.tenant_id,
            labels,
            pii: Vec::new(),
        }
    }
}

/// The late-bound destination of a [`BusLogLayer`]. Cheap to clone; clones share the slot.
#[derive(Clone, Default)]
pub struct LogSlot(Arc<RwLock<Option<Arc<LogSink>>>>);

impl LogSlot {
    /// The process's slot: what `BusLogLayer::new()` reads and [`super::start`] binds.
    pub fn global() -> &'static LogSlot {
        static GLOBAL: OnceLock<LogSlot> = OnceLock::new();
        GLOBAL.get_or_init(LogSlot::default)
    }

    /// Whether a publisher is bound: before that, events are not published.
    pub fn is_bound(&self) -> bool {
        self.current().is_some()
    }

    /// Events the bound sink could not queue (queue full, or its publisher gone).
    pub fn dropped(&self) -> u64 {
        self.current()
            .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
    }

    /// Binds `sink`, replacing any other (the latest platform of a process wins).
    pub(super) fn bind(&self, sink: LogSink) -> Arc<LogSink> {
        let sink = Arc::new(sink);
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(sink.clone());
        sink
    }

    /// Empties the slot if `sink` is still the one bound.
    pub(super) fn unbind(&self, sink: &Arc<LogSink>) {
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, sink)) {
            *slot = None;
        }
    }

    fn current(&self) -> Option<Arc<LogSink>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The `tracing` layer that publishes log events on `telemetry.logs` (see the module doc).
#[derive(Clone)]
pub struct BusLogLayer {
    slot: LogSlot,
}

impl BusLogLayer {
    /// A layer on the process's [`LogSlot::global`].
    pub fn new() -> Self {
        Self::with_slot(LogSlot::global().clone())
    }

    /// A layer on `slot` (tests).
    pub fn with_slot(slot: LogSlot) -> Self {
        Self { slot }
    }
}

impl Default for BusLogLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for BusLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !attrs.metadata().fields().iter().any(|f| carries_ids(&f)) {
            return;
        }
        let mut ids = SpanIds::default();
        attrs.record(&mut ids);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(ids);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if !span.fields().iter().any(|f| carries_ids(&f)) {
            return;
        }
        let mut ext = span.extensions_mut();
        let mut ids = ext.remove::<SpanIds>().unwrap_or_default();
        values.record(&mut ids);
        ext.insert(ids);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let Some(sink) = self.slot.current() else {
            return;
        };
        if meta.level() > &sink.level || is_muted(meta.target()) || super::publishing() {
            return;
        }
        let mut fields = EventFields::default();
        event.record(&mut fields);
        if (fields.scenario_id.is_none() || fields.tenant_id.is_none())
            && let Some(scope) = ctx.event_scope(event)
        {
            for span in scope {
                if let Some(ids) = span.extensions().get::<SpanIds>() {
                    fields.scenario_id = fields.scenario_id.or_else(|| ids.scenario_id.clone());
                    fields.tenant_id = fields.tenant_id.or_else(|| ids.tenant_id.clone());
                }
            }
        }
        let ev = sink.event(meta.target(), meta.level(), fields);
        super::offer(&sink.tx, ev, KIND, &sink.dropped);
    }
}
