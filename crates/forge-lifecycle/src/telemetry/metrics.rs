//! `telemetry.metrics` from the process's own Prometheus registry: every interval the sampler
//! renders what `/metrics` would serve and publishes the `forge_*` series as [`MetricSample`]s,
//! so the observer hub sees every service's metrics over the bus, whichever process they live
//! in.
//!
//! Reading the rendered text rather than hooking the recorder keeps one source of truth (what
//! Prometheus scrapes is what the hub sees) and needs no second recorder. Histogram buckets are
//! left out (their `_sum` and `_count` are kept): they multiply the series by the bucket count
//! and say little without the rest of the histogram. At most `max_samples_per_tick` samples
//! are published per interval.

use std::collections::BTreeMap;
use std::time::Duration;

use forge_bus::messages::MetricSample;
use forge_bus::subjects;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::Publisher;

pub(super) const KIND: &str = "metrics";

/// The shortest sampling interval: a zero interval would spin.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Samples the process's metrics every interval.
pub(super) struct Sampler {
    service: String,
    every: Duration,
    max: usize,
}

impl Sampler {
    pub(super) fn new(service: &str, every: Duration, max: usize) -> Self {
        Self {
            service: service.to_owned(),
            every: every.max(MIN_INTERVAL),
            max,
        }
    }

    pub(super) async fn run(self, mut publisher: Publisher, shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval_at(Instant::now() + self.every, self.every);
        // A slow bus delays the next sample rather than causing a burst of them.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stop = super::stopped(shutdown);
        tokio::pin!(stop);
        let route = |_: &MetricSample| {
            (
                subjects::TELEMETRY_METRICS,
                format!("metric:{}", uuid::Uuid::new_v4()),
            )
        };
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => return,
            }
            let text = forge_http::metrics_handle().render();
            let samples = parse(&text, &self.service, self.max);
            for batch in samples.chunks(publisher.batch) {
                publisher.publish(batch, &route).await;
            }
        }
    }
}

/// The `forge_*` samples of a Prometheus text exposition, histogram buckets and values JSON
/// cannot carry (NaN, infinities) left out, at most `max` of them, in the text's order.
pub fn parse(text: &str, service: &str, max: usize) -> Vec<MetricSample> {
    text.lines()
        .filter_map(parse_line)
        .filter(|(name, _, _)| name.starts_with("forge_") && !name.ends_with("_bucket"))
        .take(max)
        .map(|(name, labels, value)| MetricSample {
            service: service.to_owned(),
            name: name.to_owned(),
            labels,
            value,
        })
        .collect()
}

/// `name{labels} value [timestamp]`; `None` for comments, blank and malformed lines.
fn parse_line(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t'])?;
    let (name, rest) = line.split_at(name_end);
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => parse_labels(inner)?,
        None => (BTreeMap::new(), rest),
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    value.is_finite().then_some((name, labels, value))
}

/// The labels after a `{`, and what follows the closing `}`. Values are quoted, with `\\`,
/// `\"` and `\n` escaped.
fn parse_labels(mut rest: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_owned();
        rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key, value);
        rest = &rest[end + 1..];
    }
}
