//! forge_observer_hub (:8085): telemetry and audit streams (spec: forge_observer_hub, Audit
//! Trail; design.md §7.8 puts the audit endpoints here).
//!
//! Consumes `telemetry.logs` (PII redacted and flagged), `telemetry.metrics` (label cardinality
//! capped per the spec's limits) and `scenario.scored` (fairness metrics per track, tier and
//! template). Serves `/audit/keys/current`, `/audit/keys/{key_id}`,
//! `/audit/events/{event_id}/signature`, `GET /v1/telemetry/logs` and `GET /v1/fairness`.

pub mod fairness;
pub mod telemetry;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRef, Query, State};
use axum::routing::get;
use forge_auth::{Caller, Verifier, roles};
use forge_bus::{Bus, subjects};
use forge_catalog::Catalog;
use forge_evidence::AuditLog;
use forge_evidence::http::{AuditHttpState, audit_router};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa::OpenApi;

use self::fairness::{Disparity, Fairness};
use self::telemetry::{CardinalityGuard, LogEvent, MetricSample, redact_pii};
use crate::messages::{INSTRUCTOR_ROLE, SCENARIO_SCORED, ScenarioScored};
use forge_services::http::{self, ApiError};

pub const SERVICE_NAME: &str = "forge_observer_hub";
pub const DEFAULT_PORT: u16 = 8085;
/// Role of operators who read telemetry.
pub const OBSERVER_ROLE: &str = "forge.observer";
/// Recent log events kept for `GET /v1/telemetry/logs`.
const RECENT_LOGS: usize = 1000;

pub struct ObserverDeps {
    pub bus: Arc<dyn Bus>,
    pub catalog: Arc<Catalog>,
    pub audit_log: Arc<AuditLog>,
    pub data_dir: PathBuf,
    pub verifier: Arc<Verifier>,
}

#[derive(Clone)]
pub struct Observer {
    inner: Arc<Inner>,
}

struct Inner {
    deps: ObserverDeps,
    logs: Mutex<VecDeque<LogEvent>>,
    guard: Mutex<CardinalityGuard>,
    fairness: Mutex<Fairness>,
    samples: Mutex<HashMap<String, u64>>,
}

impl FromRef<Observer> for Arc<Verifier> {
    fn from_ref(o: &Observer) -> Self {
        o.inner.deps.verifier.clone()
    }
}

impl Observer {
    pub fn new(deps: ObserverDeps) -> Self {
        Self {
            inner: Arc::new(Inner {
                deps,
                logs: Mutex::default(),
                guard: Mutex::default(),
                fairness: Mutex::default(),
                samples: Mutex::default(),
            }),
        }
    }

    /// Redacts and stores one log event; returns it as stored.
    pub fn ingest_log(&self, mut ev: LogEvent) -> LogEvent {
        let (message, kinds) = redact_pii(&ev.message);
        for k in &kinds {
            metrics::counter!("forge_pii_flagged_total", "service" => ev.service.clone(), "kind" => k.clone()).increment(1);
        }
        ev.message = message;
        ev.pii = kinds;
        let guarded = self
            .inner
            .guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(&ev.service, &mut ev.labels);
        self.count_limits(&ev.service, guarded);
        metrics::counter!("forge_telemetry_events_total", "stream" => "logs").increment(1);
        let mut logs = self.inner.logs.lock().unwrap_or_else(|e| e.into_inner());
        if logs.len() == RECENT_LOGS {
            logs.pop_front();
        }
        logs.push_back(ev.clone());
        ev
    }

    /// Applies the cardinality limits to one metric sample and counts it.
    pub fn ingest_metric(&self, mut s: MetricSample) -> MetricSample {
        let guarded = self
            .inner
            .guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(&s.service, &mut s.labels);
        self.count_limits(&s.service, guarded);
        metrics::counter!("forge_telemetry_events_total", "stream" => "metrics").increment(1);
        *self
            .inner
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(s.service.clone())
            .or_default() += 1;
        s
    }

    fn count_limits(&self, service: &str, g: telemetry::Guarded) {
        if g.keys_dropped > 0 {
            metrics::counter!("forge_cardinality_limited_total", "service" => service.to_owned(), "reason" => "label_keys")
                .increment(g.keys_dropped as u64);
        }
        if g.overflowed {
            metrics::counter!("forge_cardinality_limited_total", "service" => service.to_owned(), "reason" => "combinations")
                .increment(1);
        }
    }

    /// Records one scored lab in the fairness statistics and refreshes their gauges.
    pub fn ingest_score(&self, s: &ScenarioScored) {
        let tier = self
            .inner
            .deps
            .catalog
            .get(&s.template)
            .and_then(|e| e.template.tier().map(str::to_owned))
            .unwrap_or_else(|| "-".into());
        let mut f = self
            .inner
            .fairness
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f.record(s.track.as_str(), &tier, &s.template, s.score);
        if let Some(g) = f.group(s.track.as_str(), &tier, &s.template) {
            let labels = [
                ("track", s.track.as_str().to_owned()),
                ("tier", tier.clone()),
                ("template", s.template.clone()),
            ];
            metrics::gauge!("forge_fairness_pass_rate", &labels).set(g.pass_rate());
            metrics::gauge!("forge_fairness_mean_score", &labels).set(g.mean());
        }
        for d in f.disparities() {
            metrics::gauge!("forge_fairness_disparity", "track" => d.track, "tier" => d.tier)
                .set(d.pass_rate_ratio);
        }
    }

    /// Consumes the telemetry and score streams until `shutdown` turns true.
    pub fn run(&self, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let streams = [
                subjects::TELEMETRY_LOGS,
                subjects::TELEMETRY_METRICS,
                SCENARIO_SCORED,
            ];
            let tasks: Vec<_> = streams
                .into_iter()
                .map(|subject| tokio::spawn(this.clone().consume(subject, shutdown.clone())))
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        })
    }

    async fn consume(self, subject: &'static str, mut shutdown: watch::Receiver<bool>) {
        let bus = self.inner.deps.bus.clone();
        let mut sub = match bus.subscribe(subject, "observer").await {
            Ok(s) => s,
            Err(e) => return tracing::error!(error = %e, subject, "observer cannot subscribe"),
        };
        loop {
            let msg = tokio::select! {
                m = sub.next() => m,
                _ = shutdown.changed() => return,
            };
            let Ok(msg) = msg else { return };
            // Telemetry is best effort: a malformed record is dropped (and acked) rather than
            // redelivered forever.
            match subject {
                s if s == subjects::TELEMETRY_LOGS => {
                    if let Ok(ev) = msg.json::<LogEvent>() {
                        self.ingest_log(ev);
                    }
                }
                s if s == subjects::TELEMETRY_METRICS => {
                    if let Ok(sample) = msg.json::<MetricSample>() {
                        self.ingest_metric(sample);
                    }
                }
                _ => {
                    if let Ok(s) = msg.json::<ScenarioScored>() {
                        self.ingest_score(&s);
                    }
                }
            }
            let _ = msg.ack().await;
        }
    }
}

#[derive(OpenApi)]
#[openapi(info(
    title = "forge_observer_hub",
    description = "Telemetry, fairness and audit verification"
))]
struct ApiDoc;

pub fn router(state: Observer) -> Router {
    let audit = audit_router(AuditHttpState {
        data_dir: state.inner.deps.data_dir.clone(),
        log: state.inner.deps.audit_log.clone(),
    });
    let routes = Router::new()
        .route("/v1/telemetry/logs", get(recent_logs))
        .route("/v1/fairness", get(fairness))
        .merge(http::common_routes(SERVICE_NAME, ApiDoc::openapi()))
        .with_state(state)
        .merge(audit);
    http::finish(routes, http::DEFAULT_BODY_LIMIT)
}

pub async fn serve(
    listener: TcpListener,
    state: Observer,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

fn require_observer(caller: &Caller) -> Result<(), ApiError> {
    if [OBSERVER_ROLE, roles::ORCHESTRATOR, INSTRUCTOR_ROLE]
        .iter()
        .any(|r| caller.has_role(r))
    {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "missing_role",
            "role forge.observer, forge.instructor or forge.orchestrator is required",
        ))
    }
}

#[derive(serde::Deserialize)]
struct LogQuery {
    service: Option<String>,
    scenario_id: Option<String>,
}

/// Recent log events of the caller's tenant (PII already redacted).
async fn recent_logs(
    State(o): State<Observer>,
    caller: Caller,
    Query(q): Query<LogQuery>,
) -> Result<axum::Json<Vec<LogEvent>>, ApiError> {
    require_observer(&caller)?;
    let logs = o.inner.logs.lock().unwrap_or_else(|e| e.into_inner());
    let out = logs
        .iter()
        .filter(|e| e.tenant_id.as_deref() == Some(caller.tenant_id.as_str()))
        .filter(|e| q.service.as_ref().is_none_or(|s| &e.service == s))
        .filter(|e| {
            q.scenario_id
                .as_ref()
                .is_none_or(|s| e.scenario_id.as_ref() == Some(s))
        })
        .cloned()
        .collect();
    Ok(axum::Json(out))
}

#[derive(serde::Serialize)]
struct FairnessView {
    groups: Vec<serde_json::Value>,
    disparities: Vec<Disparity>,
}

/// Outcome statistics per track, tier and template, and the disparity within each tier.
async fn fairness(
    State(o): State<Observer>,
    caller: Caller,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    require_observer(&caller)?;
    let f = o.inner.fairness.lock().unwrap_or_else(|e| e.into_inner());
    let groups = f
        .groups()
        .map(|((track, tier, template), g)| {
            serde_json::json!({
                "track": track, "tier": tier, "template": template,
                "count": g.count, "mean_score": g.mean(), "pass_rate": g.pass_rate(),
            })
        })
        .collect();
    let view = FairnessView {
        groups,
        disparities: f.disparities(),
    };
    Ok(axum::Json(serde_json::to_value(view).unwrap_or_default()))
}
