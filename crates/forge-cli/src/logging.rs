//! Where `forge` logs go and in what shape: stderr, as text for people or as JSON lines for
//! machines (`--log-format`, `LOG_FORMAT`). `auto` writes JSON when a service runs (`forge up`,
//! `forge serve`) and stderr is not a terminal, text otherwise.
//!
//! A JSON line has `ts`, `level`, `service` (the service a module belongs to, else this
//! process's), `target` and `message`, then the fields of every span the event is in (outermost
//! first, so the innermost wins: `request_id`, `scenario_id`, `tenant_id`, …) and the event's
//! own fields, all at the top level so a log store can index them.

use std::fmt;
use std::io::IsTerminal as _;

use clap::ValueEnum;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON lines for a running service when stderr is not a terminal, else text
    Auto,
    Text,
    Json,
}

impl LogFormat {
    /// Whether to write JSON, for a command that runs services (`serves`) or not.
    pub fn json(self, serves: bool) -> bool {
        match self {
            LogFormat::Json => true,
            LogFormat::Text => false,
            LogFormat::Auto => serves && !std::io::stderr().is_terminal(),
        }
    }
}

/// The JSON-lines event format; span fields must be recorded with [`JsonFields`].
pub struct JsonLines {
    /// The service of events from modules that belong to no single service.
    pub process: String,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        line.insert("ts".into(), ts.into());
        line.insert("level".into(), meta.level().as_str().to_lowercase().into());
        let service = forge_lifecycle::telemetry::service_of(meta.target())
            .map(str::to_owned)
            .unwrap_or_else(|| self.process.clone());
        line.insert("service".into(), service.into());
        line.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(fields) {
                    line.extend(m);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// The event's fields into the line, `message` included.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
}

/// The span field formatter the JSON format reads back.
pub fn span_fields() -> JsonFields {
    JsonFields::new()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_carries_span_and_event_fields_at_the_top_level() {
        let buf = Buf::default();
        let out = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(span_fields())
            .event_format(JsonLines {
                process: "forge_platform".into(),
            })
            .with_writer(move || out.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("request", request_id = "req-1", scenario_id = "scn-1");
            let _o = outer.enter();
            let inner = tracing::info_span!("message", request_id = "spawn-7");
            let _i = inner.enter();
            tracing::warn!(attempt = 3, "lab container restarted");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["service"], "forge_platform");
        assert_eq!(v["message"], "lab container restarted");
        assert_eq!(v["attempt"], 3);
        assert_eq!(v["scenario_id"], "scn-1");
        assert_eq!(v["request_id"], "spawn-7", "the innermost span wins");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }
}
