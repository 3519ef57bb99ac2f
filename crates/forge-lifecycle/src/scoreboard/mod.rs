//! forge_scoreboard (:8086): scores, bundles and signs evaluations, and serves them.
//!
//! Consumes `scenario.completed`: weighted score → `score.json`, deterministic
//! `evidence.tar.zst`, `manifest.json`, `verdict.sig` (forge-evidence) → written once into the
//! evidence store (`<bucket>/<scenario_id>/…`) → `scenario.scored` for the orchestrator. A
//! redelivered message finds the same bundle already published and only re-announces it.
//! `GET /v1/scores/{id}` and the file downloads are tenant-scoped; a cross-tenant attempt is a
//! 404 and an audit event.

mod api;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use forge_bus::messages::{ScenarioCompleted, ScenarioScored, StagedArtifact};
use forge_bus::{Bus, BusExt, ConsumerConfig, subjects};
use forge_core::audit::{AuditEvent, AuditSink, Outcome};
use forge_core::{RunId, ScenarioId, ScoreResult};
use forge_evidence::bundle::{ArtifactInput, Bundle, BundleInput, BundleMeta};
use forge_evidence::{EvidenceStore, Keyring, ObjectKey, publish_bundle};
use forge_store::Store;

use crate::authz::ScenarioAccess;
use crate::settle;

pub use api::{ScoreView, router};

/// Who the scoreboard's audit events name.
const ACTOR: &str = "forge_scoreboard";

pub struct ScoreboardDeps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub evidence: Arc<dyn EvidenceStore>,
    /// The `verdict` keyring.
    pub keyring: Arc<Mutex<Keyring>>,
    pub audit: Arc<dyn AuditSink>,
    pub access: ScenarioAccess,
}

#[derive(Clone)]
pub struct Scoreboard {
    inner: Arc<Inner>,
}

struct Inner {
    deps: ScoreboardDeps,
    /// (track, criterion) → (passed, seen), behind `forge_criteria_pass_rate`.
    pass_counts: Mutex<HashMap<(String, String), (u64, u64)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreboardError {
    #[error("invalid scenario.completed: {0}")]
    Invalid(String),
    #[error("signing key: {0}")]
    Key(#[from] forge_evidence::KeyError),
    #[error("bundle: {0}")]
    Bundle(#[from] forge_evidence::BundleError),
    #[error("evidence store: {0}")]
    Evidence(#[from] forge_evidence::StoreError),
    #[error("bus: {0}")]
    Bus(#[from] forge_bus::BusError),
}

impl Scoreboard {
    /// The bytes of one staged artifact, checked: the reference must be the scenario's own
    /// staging key for that content (a message cannot pull in another lab's evidence), and the
    /// bytes must hash to what the worker recorded. A missing or altered object is a message
    /// that can never succeed (dead letter); a store outage is retried.
    async fn staged(
        &self,
        scenario: &ScenarioId,
        a: &StagedArtifact,
    ) -> Result<ArtifactInput, ScoreboardError> {
        let name = &a.artifact.name;
        if a.key != StagedArtifact::key_for(scenario, &a.artifact) {
            return Err(ScoreboardError::Invalid(format!(
                "artifact {name}: reference `{}` is not this scenario's staging key",
                a.key
            )));
        }
        let key = ObjectKey::new(a.key.clone())?;
        let bytes = match self.deps().evidence.get(&key).await {
            Ok(b) => b,
            Err(forge_evidence::StoreError::NotFound(_)) => {
                return Err(ScoreboardError::Invalid(format!(
                    "artifact {name}: staged object `{key}` does not exist"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let hash =
            forge_core::Artifact::describe(a.artifact.kind, name.clone(), &bytes).content_hash;
        if hash != a.artifact.content_hash || bytes.len() as u64 != a.artifact.size_bytes {
            return Err(ScoreboardError::Invalid(format!(
                "artifact {name}: staged bytes hash to {hash} ({} bytes), not {} ({} bytes)",
                bytes.len(),
                a.artifact.content_hash,
                a.artifact.size_bytes
            )));
        }
        Ok(ArtifactInput::new(a.artifact.kind, name.clone(), bytes))
    }

    pub fn new(deps: ScoreboardDeps) -> Self {
        Self {
            inner: Arc::new(Inner {
                deps,
                pass_counts: Mutex::default(),
            }),
        }
    }

    pub(crate) fn deps(&self) -> &ScoreboardDeps {
        &self.inner.deps
    }

    pub(crate) fn access(&self) -> &ScenarioAccess {
        &self.inner.deps.access
    }

    /// What the scoreboard consumes: `scenario.completed`.
    pub fn consumer() -> ConsumerConfig {
        ConsumerConfig::new(subjects::SCENARIO_COMPLETED, "scoreboard").concurrency(4)
    }

    /// One evaluation: an evaluation that can never be scored (a bad run id, undecodable
    /// evidence) is dead-lettered; anything else that fails (keys, evidence store, bus) is
    /// retried.
    pub async fn on_completed(self, c: ScenarioCompleted) -> forge_bus::Outcome {
        let id = c.scenario_id.clone();
        let span = crate::authz::scenario_span(subjects::SCENARIO_COMPLETED, &id);
        span.record("tenant_id", c.tenant_id.as_str());
        if !c.request_id.is_empty() {
            span.record("request_id", c.request_id.as_str());
        }
        match tracing::Instrument::instrument(self.publish(c), span).await {
            Ok(_) => forge_bus::Outcome::Ack,
            Err(ScoreboardError::Invalid(why)) => forge_bus::Outcome::DeadLetter(why),
            Err(e) => settle(Err(e), subjects::SCENARIO_COMPLETED, &id),
        }
    }

    /// Scores, bundles, signs and publishes one evaluation; announces `scenario.scored`.
    pub async fn publish(&self, c: ScenarioCompleted) -> Result<ScoreResult, ScoreboardError> {
        let d = self.deps();
        let run_id: RunId = c
            .run_id
            .parse()
            .map_err(|e| ScoreboardError::Invalid(format!("{e}")))?;
        let key = ObjectKey::bundle_file(&c.scenario_id, "score.json")?;
        // Already published (a redelivery, or a second evaluation racing the first): the first
        // bundle stands, write-once; only re-announce it.
        if d.evidence.exists(&key).await? {
            let bytes = d.evidence.get(&key).await?;
            let score: ScoreResult = serde_json::from_slice(&bytes)
                .map_err(|e| ScoreboardError::Invalid(format!("stored score.json: {e}")))?;
            self.announce(&c, &score).await?;
            return Ok(score);
        }
        let mut artifacts = Vec::with_capacity(c.artifacts.len());
        for a in &c.artifacts {
            artifacts.push(self.staged(&c.scenario_id, a).await?);
        }
        let input = BundleInput {
            meta: BundleMeta {
                scenario_id: c.scenario_id.clone(),
                run_id,
                track: c.track,
                collected_at: c.collected_at,
                computed_at: Utc::now(),
            },
            criteria: c.criteria.clone(),
            artifacts,
        };
        let signer = d
            .keyring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .signer()?;
        // Compression and signing are CPU work: keep them off the async workers.
        let bundle = tokio::task::spawn_blocking(move || Bundle::build(input, &signer))
            .await
            .map_err(|e| ScoreboardError::Invalid(format!("bundle task: {e}")))??;
        publish_bundle(d.evidence.as_ref(), &bundle)
            .await
            .inspect_err(|e| {
                tracing::warn!(scenario_id = %c.scenario_id, error = %e, "cannot publish the evidence bundle");
                metrics::counter!("forge_evidence_publish_failures_total", "track" => c.track.as_str())
                    .increment(1);
            })?;
        self.observe(&c, &bundle);
        d.audit.record(
            AuditEvent::new(
                Utc::now(),
                "score.published",
                ACTOR,
                c.scenario_id.as_str(),
                "create",
                Outcome::Success,
            )
            .with_detail("tenant_id", c.tenant_id.clone())
            .with_detail("score", bundle.score.score)
            .with_detail("key_id", bundle.manifest.key_id.clone()),
        );
        self.announce(&c, &bundle.score).await?;
        Ok(bundle.score)
    }

    async fn announce(
        &self,
        c: &ScenarioCompleted,
        score: &ScoreResult,
    ) -> Result<(), ScoreboardError> {
        let scored = ScenarioScored {
            scenario_id: c.scenario_id.clone(),
            tenant_id: c.tenant_id.clone(),
            track: c.track,
            template: c.template.clone(),
            reason: c.reason,
            score: score.score,
            passed: score.passed,
            total: score.total,
        };
        self.deps().bus.publish_msg(&scored).await?;
        Ok(())
    }

    fn observe(&self, c: &ScenarioCompleted, b: &Bundle) {
        let track = c.track.as_str();
        let bucket = score_bucket(b.score.score);
        metrics::counter!("forge_score_distribution", "track" => track, "bucket" => bucket)
            .increment(1);
        metrics::histogram!("forge_evidence_size_bytes", "track" => track)
            .record(b.evidence.len() as f64);
        let mut counts = self
            .inner
            .pass_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for r in &b.score.criteria {
            let e = counts
                .entry((track.to_owned(), r.criterion_id.clone()))
                .or_default();
            e.0 += u64::from(r.passed);
            e.1 += 1;
            metrics::gauge!("forge_criteria_pass_rate", "track" => track.to_owned(), "criterion_id" => r.criterion_id.clone())
                .set(e.0 as f64 / e.1 as f64);
        }
    }
}

/// Tenths, `1.0` on its own: `0.0-0.1`, …, `0.9-1.0`, `1.0`.
pub fn score_bucket(score: f64) -> &'static str {
    const B: [&str; 11] = [
        "0.0-0.1", "0.1-0.2", "0.2-0.3", "0.3-0.4", "0.4-0.5", "0.5-0.6", "0.6-0.7", "0.7-0.8",
        "0.8-0.9", "0.9-1.0", "1.0",
    ];
    let i = if score >= 1.0 {
        10
    } else {
        (score.max(0.0) * 10.0).floor() as usize
    };
    B[i.min(10)]
}
