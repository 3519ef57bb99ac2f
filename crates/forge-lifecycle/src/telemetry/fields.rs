//! What a `tracing` event or span says, as the log layer needs it: the message, the scenario
//! and tenant it is about, and the other fields as text. Kept apart from the layer so the layer
//! reads as the path an event takes.

use std::fmt;

use tracing::field::{Field, Visit};

/// Event and span fields that carry the scenario and the tenant.
const SCENARIO_FIELDS: [&str; 2] = ["scenario_id", "scenario"];
const TENANT_FIELDS: [&str; 2] = ["tenant_id", "tenant"];

/// `value` as a logfmt value: bare when it is one word, quoted and escaped otherwise.
pub(super) fn quoted(value: &str) -> String {
    if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
        format!("{value:?}")
    } else {
        value.to_owned()
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(super) fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let end = (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    s[..end].to_owned()
}

/// The scenario and tenant a span carries, kept in its extensions for the events inside it.
#[derive(Debug, Default, Clone)]
pub(super) struct SpanIds {
    pub(super) scenario_id: Option<String>,
    pub(super) tenant_id: Option<String>,
}

impl Visit for SpanIds {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if SCENARIO_FIELDS.contains(&field.name()) {
            self.scenario_id = Some(value.to_owned());
        } else if TENANT_FIELDS.contains(&field.name()) {
            self.tenant_id = Some(value.to_owned());
        }
    }
}

/// Whether a span field names the scenario or the tenant.
pub(super) fn carries_ids(field: &Field) -> bool {
    SCENARIO_FIELDS.contains(&field.name()) || TENANT_FIELDS.contains(&field.name())
}

/// What one event says.
#[derive(Default)]
pub(super) struct EventFields {
    pub(super) message: String,
    pub(super) scenario_id: Option<String>,
    pub(super) tenant_id: Option<String>,
    pub(super) rest: Vec<(&'static str, String)>,
}

impl Visit for EventFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let name = field.name();
        if name == "message" {
            self.message = value.to_owned();
        } else if SCENARIO_FIELDS.contains(&name) {
            self.scenario_id = Some(value.to_owned());
        } else if TENANT_FIELDS.contains(&name) {
            self.tenant_id = Some(value.to_owned());
        } else if !name.starts_with("log.") {
            // `log.*` is where `tracing-log` puts the location of a `log` record.
            self.rest.push((name, value.to_owned()));
        }
    }
}
