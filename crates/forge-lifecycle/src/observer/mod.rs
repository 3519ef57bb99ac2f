//! forge_observer_hub (:8085): telemetry and audit streams (spec: forge_observer_hub, Audit
//! Trail; docs/design.md §7.8 puts the audit endpoints here).
//!
//! Consumes `telemetry.logs` (PII redacted and flagged), `telemetry.metrics` (label cardinality
//! capped per the spec's limits), `audit.events` (counted, PII flagged; [`streams`]),
//! `scenario.created` (labs per track; [`streams`]) and `scenario.scored` (fairness metrics per
//! track, tier and template). Serves `/audit/keys/current`, `/audit/keys/{key_id}`,
//! `/audit/events/{event_id}/signature`, `GET /v1/audit/recent`, `GET /v1/audit/status`
//! ([`audit_status`]), `GET /v1/telemetry/logs`, `GET /v1/telemetry/labs` and
//! `GET /v1/fairness`.

pub mod audit_status;
mod backlog;
pub mod fairness;
pub mod streams;
pub mod telemetry;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use forge_auth::{Caller, roles};
use forge_bus::messages::{ScenarioCreated, ScenarioScored};
use forge_bus::{Bus, ConsumerConfig, Outcome, subjects};
use forge_catalog::Catalog;
use forge_core::audit::AuditEvent;
use forge_evidence::AuditLog;
use forge_evidence::http::{AuditHttpState, audit_router};
use forge_http::{ApiError, Service};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa::OpenApi;

use self::fairness::{Disparity, Fairness};
use self::streams::{AuditRecord, Labs};
use self::telemetry::{CardinalityGuard, LogEvent, MetricSample, redact_pii};
use crate::authz::ScenarioAccess;
use crate::spawn_consumer;

/// Recent log events kept for `GET /v1/telemetry/logs`.
const RECENT_LOGS: usize = 1000;

pub struct ObserverDeps {
    pub bus: Arc<dyn Bus>,
    pub catalog: Arc<Catalog>,
    pub audit_log: Arc<AuditLog>,
    pub data_dir: PathBuf,
    pub access: ScenarioAccess,
    /// How often the bus backlog is sampled into metrics.
    pub backlog_every: std::time::Duration,
    /// Where the fairness statistics are kept across restarts (`None`: in memory only).
    pub fairness_file: Option<PathBuf>,
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
    audit: Mutex<VecDeque<AuditRecord>>,
    labs: Mutex<Labs>,
    audit_status: audit_status::Cached,
}

impl Observer {
    pub fn new(deps: ObserverDeps) -> Self {
        let fairness = load_fairness(deps.fairness_file.as_deref());
        Self {
            inner: Arc::new(Inner {
                deps,
                logs: Mutex::default(),
                guard: Mutex::default(),
                fairness: Mutex::new(fairness),
                samples: Mutex::default(),
                audit: Mutex::default(),
                labs: Mutex::default(),
                audit_status: Mutex::default(),
            }),
        }
    }

    /// Redacts and stores one log event (message and label values); returns it as stored.
    pub fn ingest_log(&self, mut ev: LogEvent) -> LogEvent {
        let (message, found) = redact_pii(&ev.message);
        let mut kinds: BTreeSet<String> = found.into_iter().collect();
        for value in ev.labels.values_mut() {
            let (text, found) = redact_pii(value);
            if !found.is_empty() {
                *value = text;
                kinds.extend(found);
            }
        }
        for k in &kinds {
            metrics::counter!("forge_pii_flagged_total", "stream" => "logs", "service" => ev.service.clone(), "kind" => k.clone()).increment(1);
        }
        ev.message = message;
        ev.pii = kinds.into_iter().collect();
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
        if let Some(path) = &self.inner.deps.fairness_file
            && let Err(e) = f.save(path)
        {
            tracing::warn!(error = %e, path = %path.display(), "cannot save the fairness statistics");
        }
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

    /// Consumes the telemetry, audit, lab and score streams until `shutdown` turns true.
    /// Telemetry is best effort: a record that does not parse is dead-lettered by the consumer
    /// loop rather than redelivered for ever, and nothing here asks for a retry.
    pub fn run(&self, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let bus = self.inner.deps.bus.clone();
        let config = |subject| ConsumerConfig::new(subject, "observer");
        let logs = spawn_consumer(
            self,
            bus.clone(),
            config(subjects::TELEMETRY_LOGS),
            shutdown.clone(),
            |o, ev: LogEvent| async move {
                o.ingest_log(ev);
                Outcome::Ack
            },
        );
        let samples = spawn_consumer(
            self,
            bus.clone(),
            config(subjects::TELEMETRY_METRICS),
            shutdown.clone(),
            |o, s: MetricSample| async move {
                o.ingest_metric(s);
                Outcome::Ack
            },
        );
        let audit = spawn_consumer(
            self,
            bus.clone(),
            config(subjects::AUDIT_EVENTS),
            shutdown.clone(),
            |o, ev: AuditEvent| async move {
                o.ingest_audit(ev);
                Outcome::Ack
            },
        );
        let labs = spawn_consumer(
            self,
            bus.clone(),
            config(subjects::SCENARIO_CREATED),
            shutdown.clone(),
            |o, c: ScenarioCreated| async move {
                o.ingest_created(&c);
                Outcome::Ack
            },
        );
        let backlog = backlog::spawn(bus.clone(), self.inner.deps.backlog_every, shutdown.clone());
        let scores = spawn_consumer(
            self,
            bus,
            config(subjects::SCENARIO_SCORED),
            shutdown,
            |o, s: ScenarioScored| async move {
                o.ingest_score(&s);
                Outcome::Ack
            },
        );
        tokio::spawn(async move {
            let _ = tokio::join!(logs, samples, audit, labs, scores, backlog);
        })
    }
}

/// The saved fairness statistics, with their gauges set again; empty (and said) when unreadable.
fn load_fairness(path: Option<&std::path::Path>) -> Fairness {
    let Some(path) = path else {
        return Fairness::default();
    };
    let f = Fairness::load(path).unwrap_or_else(|e| {
        tracing::warn!(error = %e, path = %path.display(), "cannot read the fairness statistics; starting afresh");
        Fairness::default()
    });
    for ((track, tier, template), g) in f.groups() {
        let labels = [
            ("track", track.clone()),
            ("tier", tier.clone()),
            ("template", template.clone()),
        ];
        metrics::gauge!("forge_fairness_pass_rate", &labels).set(g.pass_rate());
        metrics::gauge!("forge_fairness_mean_score", &labels).set(g.mean());
    }
    f
}

// Documentation of the hub's own routes (the handlers are below and in `streams`); every
// answer is about the caller's tenant only, and needs forge.observer, forge.instructor or
// forge.orchestrator.
#[utoipa::path(get, path = "/v1/telemetry/logs", tag = "observer",
    params(("service" = Option<String>, Query, description = "only this service's events"),
           ("scenario_id" = Option<String>, Query, description = "only events about this scenario")),
    responses((status = 200, description = "recent log events, PII redacted and flagged (`pii`), newest last", content_type = "application/json"),
              (status = 403, description = "role missing", body = forge_http::ErrorEnvelope)),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn logs_doc() {}

#[utoipa::path(get, path = "/v1/telemetry/labs", tag = "observer",
    params(("track" = Option<String>, Query, description = "only this track")),
    responses((status = 200, description = "`created` (labs per track since the hub started) and `recent` labs", content_type = "application/json"),
              (status = 403, description = "role missing", body = forge_http::ErrorEnvelope)),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn labs_doc() {}

#[utoipa::path(get, path = "/v1/audit/recent", tag = "observer",
    params(("event_type" = Option<String>, Query, description = "only this event type"),
           ("resource_id" = Option<String>, Query, description = "only events about this resource")),
    responses((status = 200, description = "recent audit events whose details name the tenant, PII redacted", content_type = "application/json"),
              (status = 403, description = "role missing", body = forge_http::ErrorEnvelope)),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn audit_recent_doc() {}

#[utoipa::path(get, path = "/v1/fairness", tag = "observer",
    responses((status = 200, description = "`groups` (count, mean score, pass rate per track, tier and template) and `disparities` per track and tier", content_type = "application/json"),
              (status = 403, description = "role missing", body = forge_http::ErrorEnvelope)),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn fairness_doc() {}

/// `GET /audit/keys/current`: the active audit key (documentation of
/// `forge_evidence::http`'s answer).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct AuditKey {
    #[schema(pattern = "^ed25519-[0-9a-f]{16}$")]
    key_id: String,
    #[schema(pattern = "^ed25519$")]
    algorithm: String,
    /// The Ed25519 public key, PEM (SPKI).
    public_key_pem: String,
    #[schema(format = DateTime)]
    created_at: String,
}

/// `GET /audit/keys/{key_id}`: any key the audit keyring ever had, and its life cycle.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct AuditKeyRecord {
    #[schema(pattern = "^ed25519-[0-9a-f]{16}$")]
    key_id: String,
    #[schema(pattern = "^ed25519$")]
    algorithm: String,
    public_key_pem: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(pattern = "^(active|retired|revoked)$")]
    status: String,
    #[schema(format = DateTime)]
    retired_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    /// Until when signatures by a retired key verify.
    #[schema(format = DateTime)]
    valid_until: Option<String>,
    retention_days: i64,
}

/// `GET /audit/events/{event_id}/signature`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct AuditEventSignature {
    event_id: String,
    #[schema(pattern = "^ed25519-[0-9a-f]{16}$")]
    key_id: String,
    /// Standard base64 of the event's 64-byte Ed25519 signature.
    signature: String,
}

// The audit verification routes of `forge_evidence::http`, served here: open (no token), and a
// request with a valid token spends from its tenant's budget like every route of the hub.
#[utoipa::path(get, path = "/audit/keys/current", tag = "audit",
    responses(
        (status = 200, description = "The active audit key", body = AuditKey),
        (status = 404, description = "The keyring has no active key (`no_active_key`)", body = forge_http::ErrorEnvelope),
        (status = 429, description = "Tenant rate limit of a request with a token; see Retry-After", body = forge_http::ErrorEnvelope),
        (status = 500, description = "The audit keyring cannot be read (logged)", body = forge_http::ErrorEnvelope)))]
#[allow(dead_code)]
fn audit_key_current_doc() {}

#[utoipa::path(get, path = "/audit/keys/{key_id}", tag = "audit",
    params(("key_id" = String, Path, description = "Audit key id", pattern = "^ed25519-[0-9a-f]{16}$")),
    responses(
        (status = 200, description = "The key and its status (`revoked` keys included)", body = AuditKeyRecord),
        (status = 400, description = "Not a key id (`invalid_key_id`)", body = forge_http::ErrorEnvelope),
        (status = 404, description = "The audit keyring never had this key (`unknown_key`)", body = forge_http::ErrorEnvelope),
        (status = 429, description = "Tenant rate limit of a request with a token; see Retry-After", body = forge_http::ErrorEnvelope),
        (status = 500, description = "The audit keyring cannot be read (logged)", body = forge_http::ErrorEnvelope)))]
#[allow(dead_code)]
fn audit_key_doc() {}

#[utoipa::path(get, path = "/audit/events/{event_id}/signature", tag = "audit",
    params(("event_id" = String, Path, description = "Audit event id", min_length = 1, max_length = 256)),
    responses(
        (status = 200, description = "The event's detached signature", body = AuditEventSignature),
        (status = 400, description = "Not an event id (`invalid_event_id`)", body = forge_http::ErrorEnvelope),
        (status = 404, description = "No such event in this process's audit log (`unknown_event`)", body = forge_http::ErrorEnvelope),
        (status = 429, description = "Tenant rate limit of a request with a token; see Retry-After", body = forge_http::ErrorEnvelope)))]
#[allow(dead_code)]
fn audit_signature_doc() {}

#[derive(OpenApi)]
#[openapi(
    paths(
        logs_doc,
        labs_doc,
        audit_recent_doc,
        fairness_doc,
        audit_key_current_doc,
        audit_key_doc,
        audit_signature_doc
    ),
    components(schemas(AuditKey, AuditKeyRecord, AuditEventSignature))
)]
struct ApiDoc;

pub fn router(state: Observer) -> Router {
    let access = state.inner.deps.access.clone();
    let audit = audit_router(AuditHttpState {
        data_dir: state.inner.deps.data_dir.clone(),
        log: state.inner.deps.audit_log.clone(),
    });
    let routes = Router::new()
        .route("/v1/telemetry/logs", get(recent_logs))
        .route("/v1/telemetry/labs", get(streams::recent_labs))
        .route("/v1/audit/recent", get(streams::recent_audit))
        .route("/v1/audit/status", get(audit_status::audit_status))
        .route("/v1/fairness", get(fairness))
        .with_state(state)
        .merge(audit);
    let mut doc = ApiDoc::openapi();
    doc.merge(audit_status::AuditStatusDoc::openapi());
    let limit = forge_http::DEFAULT_BODY_LIMIT;
    // The instructor's and operator's pages (on the spawn service) read these with a bearer
    // token from another origin.
    crate::service_router(Service::Observer, doc, routes, &access, limit)
        .layer(tower_http::cors::CorsLayer::permissive())
}

fn require_observer(caller: &Caller) -> Result<(), ApiError> {
    if [roles::OBSERVER, roles::ORCHESTRATOR, roles::INSTRUCTOR]
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
