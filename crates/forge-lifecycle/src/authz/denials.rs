//! Aggregated auditing of refused scenario lookups.
//!
//! Every refusal is counted (`forge_access_denied_total{action}`), but a signed audit record
//! per refusal would let any caller grow the audit log at will with probes for ids that are
//! not theirs. So per (tenant, caller, action) the first refusal of a window is recorded at
//! once, the rest of the window only counted, and when the window closes one more record
//! carries how many refusals it did not record individually (`suppressed`), with the ids they
//! were about (up to [`MAX_RESOURCES`]). A caller probing all day leaves at most two records
//! per window and action; no refusal goes uncounted.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use forge_auth::Caller;
use forge_core::audit::{AuditEvent, AuditSink, Outcome};

use super::Action;

/// How long one window lasts unless configured otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Most distinct scenario ids a window's closing record lists.
pub const MAX_RESOURCES: usize = 20;

/// One refusal, as the access check saw it.
pub(crate) struct Refusal<'a> {
    pub caller: &'a Caller,
    pub resource: &'a str,
    pub action: Action,
    /// `same_tenant` or `cross_tenant`.
    pub scope: &'static str,
    /// The service that refused.
    pub service: &'static str,
}

type Key = (String, String, Action);

/// A window of one (tenant, caller, action).
struct Window {
    opened: Instant,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
    /// Refusals after the recorded first one.
    suppressed: u64,
    resources: BTreeSet<String>,
    scopes: BTreeSet<&'static str>,
    services: BTreeSet<&'static str>,
}

/// The windows, shared by every clone of the access check in a process.
#[derive(Clone)]
pub(crate) struct DeniedAudit {
    audit: Arc<dyn AuditSink>,
    window: Duration,
    open: Arc<Mutex<HashMap<Key, Window>>>,
}

impl DeniedAudit {
    pub fn new(audit: Arc<dyn AuditSink>, window: Duration) -> Self {
        Self {
            audit,
            window: window.max(Duration::from_millis(1)),
            open: Arc::default(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Counts a refusal, and records it unless its window already has a record.
    pub fn refused(&self, r: Refusal<'_>) {
        metrics::counter!("forge_access_denied_total", "action" => r.action.as_str()).increment(1);
        let now = Instant::now();
        let key = (r.caller.tenant_id.clone(), r.caller.sub.clone(), r.action);
        let mut closed = None;
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = open.get_mut(&key) {
                if now.duration_since(w.opened) < self.window {
                    w.suppressed += 1;
                    w.last_at = Utc::now();
                    if w.resources.len() < MAX_RESOURCES {
                        w.resources.insert(r.resource.to_owned());
                    }
                    w.scopes.insert(r.scope);
                    w.services.insert(r.service);
                    return;
                }
                closed = open.remove(&key).map(|w| (key.clone(), w));
            }
            open.insert(
                key,
                Window {
                    opened: now,
                    first_at: Utc::now(),
                    last_at: Utc::now(),
                    suppressed: 0,
                    resources: BTreeSet::new(),
                    scopes: BTreeSet::new(),
                    services: BTreeSet::new(),
                },
            );
        }
        // Records are written outside the lock: the sink may take its time.
        if let Some((key, w)) = closed {
            self.close(&key, w);
        }
        self.audit.record(
            AuditEvent::new(
                Utc::now(),
                "access.denied",
                r.caller.sub.clone(),
                r.resource,
                r.action.as_str(),
                Outcome::Denied,
            )
            .with_detail("tenant_id", r.caller.tenant_id.clone())
            .with_detail("scope", r.scope)
            .with_detail("service", r.service)
            .with_detail("window_seconds", self.window.as_secs()),
        );
    }

    /// Closes the windows that have run their time (every window when `all`, at shutdown) and
    /// records what they suppressed.
    pub fn flush(&self, all: bool) {
        let now = Instant::now();
        let closed: Vec<(Key, Window)> = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let due: Vec<Key> = open
                .iter()
                .filter(|(_, w)| all || now.duration_since(w.opened) >= self.window)
                .map(|(k, _)| k.clone())
                .collect();
            due.into_iter()
                .filter_map(|k| open.remove(&k).map(|w| (k, w)))
                .collect()
        };
        for (key, w) in closed {
            self.close(&key, w);
        }
    }

    /// The closing record of a window, when it suppressed anything.
    fn close(&self, (tenant, sub, action): &Key, w: Window) {
        if w.suppressed == 0 {
            return;
        }
        let resource = match w.resources.len() {
            1 => w.resources.first().cloned().unwrap_or_default(),
            _ => "-".to_owned(),
        };
        self.audit.record(
            AuditEvent::new(
                Utc::now(),
                "access.denied",
                sub.clone(),
                resource,
                action.as_str(),
                Outcome::Denied,
            )
            .with_detail("tenant_id", tenant.clone())
            .with_detail("suppressed", w.suppressed)
            .with_detail("window_seconds", self.window.as_secs())
            .with_detail("first_at", w.first_at.to_rfc3339())
            .with_detail("last_at", w.last_at.to_rfc3339())
            .with_detail("resources", w.resources.into_iter().collect::<Vec<_>>())
            .with_detail("scope", w.scopes.into_iter().collect::<Vec<_>>().join(","))
            .with_detail(
                "service",
                w.services.into_iter().collect::<Vec<_>>().join(","),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use forge_core::audit::MemoryAuditSink;

    use super::*;

    fn caller(sub: &str) -> Caller {
        Caller {
            sub: sub.into(),
            tenant_id: "t".into(),
            roles: vec![],
            expires_at: u64::MAX,
        }
    }

    fn refuse(d: &DeniedAudit, who: &Caller, id: &str, action: Action) {
        d.refused(Refusal {
            caller: who,
            resource: id,
            action,
            scope: "cross_tenant",
            service: "forge_scoreboard",
        });
    }

    #[test]
    fn one_record_per_window_and_a_closing_count() {
        let sink = Arc::new(MemoryAuditSink::default());
        let d = DeniedAudit::new(sink.clone(), Duration::from_secs(3600));
        let eve = caller("eve");
        for i in 0..100 {
            refuse(&d, &eve, &format!("scn-{i:012}"), Action::ReadScore);
        }
        refuse(&d, &eve, "scn-000000000000", Action::View);
        let events = sink.events();
        assert_eq!(events.len(), 2, "one per action so far: {events:?}");
        d.flush(false);
        assert_eq!(sink.events().len(), 2, "the windows are still open");
        d.flush(true);
        let events = sink.events();
        assert_eq!(events.len(), 3, "only the score window suppressed anything");
        let closing = &events[2];
        assert_eq!(closing.action, "read_score");
        assert_eq!(closing.details["suppressed"], 99);
        assert_eq!(closing.resource_id, "-");
        assert_eq!(
            closing.details["resources"].as_array().unwrap().len(),
            MAX_RESOURCES
        );
    }

    #[test]
    fn an_expired_window_is_closed_by_the_next_refusal() {
        let sink = Arc::new(MemoryAuditSink::default());
        let d = DeniedAudit::new(sink.clone(), Duration::from_millis(20));
        let bob = caller("bob");
        refuse(&d, &bob, "scn-000000000001", Action::Operate);
        refuse(&d, &bob, "scn-000000000001", Action::Operate);
        std::thread::sleep(Duration::from_millis(30));
        refuse(&d, &bob, "scn-000000000001", Action::Operate);
        let events = sink.events();
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[1].details["suppressed"], 1);
        assert_eq!(events[1].resource_id, "scn-000000000001");
        assert!(events[2].details.get("suppressed").is_none());
    }
}
