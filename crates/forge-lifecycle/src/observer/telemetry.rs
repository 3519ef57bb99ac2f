//! Telemetry hygiene: PII detection and label-cardinality control (spec: forge_observer_hub
//! Features, Loki Labels → Cardinality Limits). Pure functions over telemetry records; the hub
//! applies them to everything it ingests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

pub use forge_bus::messages::{LogEvent, MetricSample};
use regex::Regex;

/// Max label keys per stream (spec: Cardinality Limits).
pub const MAX_LABEL_KEYS: usize = 10;
/// Max unique label-value combinations per service (spec: Cardinality Limits).
pub const MAX_COMBINATIONS: usize = 1000;
/// Replaces label values past the combination limit.
pub const OVERFLOW: &str = "__overflow__";

struct Detector {
    kind: &'static str,
    re: Regex,
    /// Extra check on a match (e.g. Luhn for card numbers) to keep false positives down.
    confirm: fn(&str) -> bool,
}

fn detectors() -> &'static [Detector] {
    static D: OnceLock<Vec<Detector>> = OnceLock::new();
    D.get_or_init(|| {
        let always: fn(&str) -> bool = |_| true;
        vec![
            Detector {
                kind: "email",
                re: Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}").unwrap(),
                confirm: always,
            },
            Detector {
                kind: "card_number",
                re: Regex::new(r"\b(?:\d[ -]?){13,19}\b").unwrap(),
                confirm: luhn,
            },
            Detector {
                kind: "us_ssn",
                re: Regex::new(r"\b\d{3}-\d{2}-\d{4}\b").unwrap(),
                confirm: always,
            },
            Detector {
                kind: "phone",
                re: Regex::new(r"\+\d{1,3}[ -]?\(?\d{2,4}\)?[ -]?\d{3,4}[ -]?\d{3,4}\b").unwrap(),
                confirm: always,
            },
            // Bearer tokens and JWTs (ours are HS256/RS256 JWTs): a log line must never
            // carry a credential someone could replay.
            Detector {
                kind: "access_token",
                re: Regex::new(
                    r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{8,}=*|\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
                )
                .unwrap(),
                confirm: always,
            },
            Detector {
                kind: "secret",
                re: Regex::new(r"(?i)\b(?:password|passwd|secret|token|api[_-]?key)\s*[=:]\s*\S+")
                    .unwrap(),
                confirm: always,
            },
        ]
    })
}

fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Finds PII in `text`; returns the redacted text and the kinds found (sorted, unique).
pub fn redact_pii(text: &str) -> (String, Vec<String>) {
    let mut out = text.to_owned();
    let mut kinds = Vec::new();
    for d in detectors() {
        let mut found = false;
        out =
            d.re.replace_all(&out, |c: &regex::Captures<'_>| {
                if (d.confirm)(&c[0]) {
                    found = true;
                    format!("[redacted:{}]", d.kind)
                } else {
                    c[0].to_owned()
                }
            })
            .into_owned();
        if found {
            kinds.push(d.kind.to_owned());
        }
    }
    kinds.sort();
    (out, kinds)
}

/// Keeps label sets within the spec's limits, per service.
#[derive(Debug, Default)]
pub struct CardinalityGuard {
    seen: HashMap<String, HashSet<Vec<(String, String)>>>,
}

/// What the guard did to one label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Guarded {
    pub keys_dropped: usize,
    pub overflowed: bool,
}

impl CardinalityGuard {
    /// Trims `labels` to [`MAX_LABEL_KEYS`] keys (the first in key order are kept) and, once a
    /// service has [`MAX_COMBINATIONS`] distinct combinations, maps new ones to [`OVERFLOW`].
    pub fn apply(&mut self, service: &str, labels: &mut BTreeMap<String, String>) -> Guarded {
        let mut g = Guarded::default();
        while labels.len() > MAX_LABEL_KEYS {
            let last = labels.keys().next_back().cloned().unwrap_or_default();
            labels.remove(&last);
            g.keys_dropped += 1;
        }
        let combo: Vec<(String, String)> =
            labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let set = self.seen.entry(service.to_owned()).or_default();
        if !set.contains(&combo) {
            if set.len() >= MAX_COMBINATIONS {
                for v in labels.values_mut() {
                    *v = OVERFLOW.to_owned();
                }
                g.overflowed = true;
            } else {
                set.insert(combo);
            }
        }
        g
    }

    pub fn combinations(&self, service: &str) -> usize {
        self.seen.get(service).map_or(0, HashSet::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_pii_and_names_the_kinds() {
        let (t, k) = redact_pii(
            "mail bob@example.org card 4111 1111 1111 1111 ssn 123-45-6789 password=hunter2",
        );
        assert!(
            !t.contains("bob@") && !t.contains("4111") && !t.contains("hunter2"),
            "{t}"
        );
        assert_eq!(k, ["card_number", "email", "secret", "us_ssn"]);
        let (t, k) = redact_pii("route 10.20.0.0/24 via 10.10.0.1, order 1234567812345678");
        assert!(k.is_empty(), "{k:?} {t}");
        let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZW1vIn0.CTKm3yKRBAdd_nXyq3WP0";
        for line in [
            format!("retrying with Authorization: Bearer {jwt}"),
            format!("token leaked in url ?access_token={jwt}&x=1"),
        ] {
            let (t, k) = redact_pii(&line);
            assert!(!t.contains("CTKm3y"), "{t}");
            assert!(k.contains(&"access_token".to_owned()), "{k:?}");
        }
    }

    #[test]
    fn caps_keys_and_combinations() {
        let mut g = CardinalityGuard::default();
        let mut many: BTreeMap<String, String> =
            (0..12).map(|i| (format!("k{i:02}"), "v".into())).collect();
        assert_eq!(g.apply("svc", &mut many).keys_dropped, 2);
        assert_eq!(many.len(), MAX_LABEL_KEYS);
        for i in 0..MAX_COMBINATIONS + 5 {
            let mut l = BTreeMap::from([("scenario_id".to_owned(), format!("scn-{i}"))]);
            let r = g.apply("svc2", &mut l);
            assert_eq!(r.overflowed, i >= MAX_COMBINATIONS);
        }
        assert_eq!(g.combinations("svc2"), MAX_COMBINATIONS);
    }
}
