//! forge_worker_agent (:8084): checks, submissions, evidence collection and the learner's
//! terminal (docs/design.md §5).
//!
//! `POST /v1/scenarios/{id}/check` evaluates the criteria without ending the lab;
//! `POST /v1/scenarios/{id}/submit` (and the orchestrator's timeout) publish
//! `scenario.execute`, which this service consumes: it collects the evidence of every criterion
//! (in parallel, per-command timeouts, through the runtime), hashes each artifact, stages its
//! bytes in the evidence store and publishes `scenario.completed` — criteria and artifact
//! references, never the bytes — for the scoreboard. The criteria's messages in it are the
//! learner's (`feedback`): the signed score they become is read by the learner. Template `setup` steps run inside the runtime's
//! launch, before a lab is reported ready.

mod agents;
mod api;
mod feedback;
pub(crate) mod forward;
mod sessions;
mod terminal;
mod tickets;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use forge_bus::messages::{ExecuteRequested, ScenarioCompleted, StagedArtifact};
use forge_bus::{Bus, BusExt, ConsumerConfig, Outcome, subjects};
use forge_catalog::Catalog;
use forge_core::audit::AuditSink;
use forge_core::template::ScenarioTemplate;
use forge_core::{RunId, ScenarioId, ScenarioStatus};
use forge_evidence::{EvidenceStore, ObjectKey, StoreError};
use forge_runtime::Runtime;
use forge_runtime::template_test::{EvaluatedCriterion, evaluate_criteria};
use forge_store::{ScenarioRecord, Store};
use futures::{StreamExt as _, TryStreamExt as _};
use tracing::Instrument as _;

use crate::authz::ScenarioAccess;
use crate::settle;

pub use api::{CheckReport, CheckedCriterion, router};
pub use sessions::{LINGER, Participant, SCROLLBACK};
pub use tickets::{Mode, TICKET_TTL};

/// Evaluations at once; each runs every criterion's commands in parallel already.
const EXECUTE_CONCURRENCY: usize = 16;

/// What the worker is built from.
pub struct WorkerDeps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub catalog: Arc<Catalog>,
    pub runtime: Arc<dyn Runtime>,
    pub audit: Arc<dyn AuditSink>,
    /// Where collected artifacts are staged for the scoreboard.
    pub evidence: Arc<dyn EvidenceStore>,
    pub access: ScenarioAccess,
    /// The lab host whose labs this worker runs commands in (its runtime's); lab actions for
    /// other hosts' labs are forwarded to them.
    pub host_id: String,
    /// The runner of the labs' agents (crate::agents); `None` runs none.
    pub agents: Option<crate::agents::Agents>,
    /// LLM proposals for this host's labs (crate::llm); `None`: the feature is off.
    pub llm: Option<crate::llm::Llm>,
}

#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    deps: WorkerDeps,
    /// Scenarios with a check under way: one at a time per lab keeps a learner from turning
    /// the check button into a load generator.
    checking: Mutex<HashSet<ScenarioId>>,
    /// For forwarding lab actions to other hosts.
    http: reqwest::Client,
    /// Terminal tickets issued and not yet used.
    tickets: tickets::Tickets,
    /// The console sessions of this host's labs.
    sessions: sessions::Sessions,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("store: {0}")]
    Store(#[from] forge_store::StoreError),
    #[error("bus: {0}")]
    Bus(#[from] forge_bus::BusError),
    #[error("template `{0}` is not in the catalog")]
    UnknownTemplate(String),
    #[error("staging evidence: {0}")]
    Evidence(#[from] StoreError),
}

impl Worker {
    pub fn new(deps: WorkerDeps) -> Self {
        Self {
            inner: Arc::new(Inner {
                deps,
                checking: Mutex::default(),
                http: reqwest::Client::builder()
                    .connect_timeout(std::time::Duration::from_secs(3))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .expect("a client without custom TLS builds"),
                tickets: tickets::Tickets::default(),
                sessions: sessions::Sessions::default(),
            }),
        }
    }

    pub(crate) fn deps(&self) -> &WorkerDeps {
        &self.inner.deps
    }

    pub(crate) fn access(&self) -> &ScenarioAccess {
        &self.inner.deps.access
    }

    fn template(&self, rec: &ScenarioRecord) -> Result<Arc<ScenarioTemplate>, WorkerError> {
        self.deps()
            .catalog
            .get(&rec.template)
            .map(|e| e.template.clone())
            .ok_or_else(|| WorkerError::UnknownTemplate(rec.template.clone()))
    }

    /// Collects and evaluates every criterion of the scenario's lab.
    pub async fn evaluate(
        &self,
        rec: &ScenarioRecord,
    ) -> Result<Vec<EvaluatedCriterion>, WorkerError> {
        let t = self.template(rec)?;
        let started = Instant::now();
        let out = evaluate_criteria(self.deps().runtime.as_ref(), &rec.scenario_id, &t).await;
        metrics::histogram!("forge_evidence_collection_seconds", "track" => rec.track.as_str())
            .record(started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Claims the per-lab check slot; `None` when a check is already running.
    pub(crate) fn begin_check(&self, id: &ScenarioId) -> Option<CheckGuard> {
        let mut set = self
            .inner
            .checking
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        set.insert(id.clone()).then(|| CheckGuard {
            worker: self.clone(),
            id: id.clone(),
        })
    }

    /// What the worker consumes: `scenario.execute`, evaluations at once bounded. Every lab
    /// host has its own durable (`worker-<host>`): each sees every request and evaluates the
    /// labs it runs, and a host that is down finds its requests waiting when it returns.
    pub fn consumer(&self) -> ConsumerConfig {
        let durable = format!("worker-{}", self.deps().host_id);
        ConsumerConfig::new(subjects::SCENARIO_EXECUTE, durable).concurrency(EXECUTE_CONCURRENCY)
    }

    /// One `scenario.execute`: collect, then publish `scenario.completed` (retried on failure).
    pub async fn on_execute(self, req: ExecuteRequested) -> Outcome {
        let span = crate::authz::scenario_span(subjects::SCENARIO_EXECUTE, &req.scenario_id);
        let done = self.handle_execute(&req).instrument(span).await;
        settle(done, subjects::SCENARIO_EXECUTE, &req.scenario_id)
    }

    /// Collects the final evidence and publishes `scenario.completed`.
    pub async fn handle_execute(&self, req: &ExecuteRequested) -> Result<(), WorkerError> {
        let d = self.deps();
        let Some(rec) = d.store.get_any(&req.scenario_id).await? else {
            return Ok(());
        };
        crate::authz::trace_scenario(&tracing::Span::current(), &rec);
        let mine = rec.host_id.as_deref().is_none_or(|h| h == d.host_id);
        if rec.status != ScenarioStatus::Running || !mine {
            return Ok(());
        }
        let evaluated = self.evaluate(&rec).await?;
        let mut criteria = Vec::with_capacity(evaluated.len());
        let mut collected = Vec::new();
        for e in evaluated {
            // The signed score is the learner's to read: a failed criterion says what kind of
            // thing is not right, never the value it was compared with (the bundle keeps what
            // was observed; the template, which instructors have, keeps what was expected).
            let mut result = e.result;
            if !result.passed {
                result.message = Some(feedback::learner_message(e.failed_step).to_owned());
            }
            criteria.push(result);
            collected.extend(e.artifacts);
        }
        collected.extend(self.agent_timeline(&rec.scenario_id));
        let artifacts = self.stage(&rec.scenario_id, collected).await?;
        let completed = ScenarioCompleted {
            scenario_id: rec.scenario_id.clone(),
            run_id: RunId::generate().to_string(),
            tenant_id: rec.tenant_id.clone(),
            track: rec.track,
            template: rec.template.clone(),
            reason: req.reason,
            collected_at: Utc::now(),
            criteria,
            artifacts,
            request_id: rec.request_id.clone(),
        };
        d.bus.publish_msg(&completed).await?;
        Ok(())
    }
}

impl Worker {
    /// Stages each artifact's bytes in the evidence store under its content hash, a few at a
    /// time. A key that exists already holds the same bytes (same hash): a redelivered
    /// `scenario.execute` or a repeated output costs nothing.
    async fn stage(
        &self,
        scenario: &ScenarioId,
        collected: Vec<(forge_core::Artifact, Vec<u8>)>,
    ) -> Result<Vec<StagedArtifact>, WorkerError> {
        let evidence = &self.deps().evidence;
        futures::stream::iter(collected)
            .map(|(artifact, bytes)| async move {
                let key = StagedArtifact::key_for(scenario, &artifact);
                match evidence.put(&ObjectKey::new(key.clone())?, bytes).await {
                    Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
                    Err(e) => return Err(WorkerError::Evidence(e)),
                }
                Ok(StagedArtifact { artifact, key })
            })
            .buffered(4)
            .try_collect()
            .await
    }
}

/// Releases the check slot when dropped.
pub(crate) struct CheckGuard {
    worker: Worker,
    id: ScenarioId,
}

impl Drop for CheckGuard {
    fn drop(&mut self) {
        let mut set = self
            .worker
            .inner
            .checking
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        set.remove(&self.id);
    }
}
