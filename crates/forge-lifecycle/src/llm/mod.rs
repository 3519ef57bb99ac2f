//! LLM proposals behind the LLM gate (optional; off unless an endpoint is configured).
//!
//! An OpenAI-compatible chat-completions endpoint ([`LlmConfig`]: URL and model, an optional
//! bearer key) proposes a lab's next command (`exec`), a hint or an explanation for the
//! learner. [`Llm::propose`] is the whole path, and the seam an agent runner asks:
//!
//! 1. both token budgets ([`budget`]: per lab, per tenant and UTC day) must have room, or the
//!    proposal is denied before the model is called;
//! 2. the model gets the lab's context ([`prompt`]: objectives, subnets, containers; never
//!    secrets or evidence) and must answer with one JSON object, parsed strictly ([`parse`]);
//! 3. the proposal is put to the LLM gate (`PolicyName::LlmGate`) with the lab's subnets and
//!    container names; Rust adds its own deny reasons first (an `exec` command with shell
//!    metacharacters, a container the lab does not have, a kind other than the one asked for);
//! 4. allowed with no deny reason: an `exec` runs through `Runtime::exec` in its container as
//!    argv (no shell), a hint or explanation is answered; the gate's `requires_approval`: the
//!    proposal waits for an instructor ([`Llm::approve`], [`Llm::reject`]); anything else is
//!    denied and nothing runs. An engine that cannot decide is a deny (fail closed).
//!
//! Every proposal (`llm.proposal`), approval or rejection (`llm.approval`) and run (`llm.run`)
//! is an audit event; the gate's decision is audited by the policy engine as always. Proposals
//! live in the memory of the lab's host's worker ([`book`]), like terminal tickets.

pub mod api;
mod audit;
mod book;
mod budget;
mod client;
mod gate;
mod parse;
mod prompt;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use forge_core::ScenarioId;
use forge_core::audit::{AuditEvent, AuditSink, Outcome};
use forge_policy::PolicyEngine;
use forge_runtime::{ExecRequest, Runtime};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use parse::ProposalKind;
pub use prompt::LabContext;

/// The completion's `max_tokens` of one call (less when a budget has less left).
pub const MAX_COMPLETION_TOKENS: u64 = 512;
/// How long an approved or allowed command may run.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Output kept of a run, per stream.
const MAX_OUTPUT: usize = 16 * 1024;

/// Where proposals come from. `None` in the platform's config: the feature is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// Base URL of the OpenAI-compatible API (`…/v1`); `/chat/completions` is appended.
    pub url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    /// Tokens (`usage.total_tokens`) one lab may spend over its life.
    pub max_tokens_per_lab: u64,
    /// Tokens one tenant's labs may spend per UTC day (on one lab host).
    pub max_tokens_per_tenant: u64,
    /// Bound of one call, connect to last byte.
    pub timeout: Duration,
}

impl LlmConfig {
    pub const DEFAULT_LAB_TOKENS: u64 = 20_000;
    pub const DEFAULT_TENANT_TOKENS: u64 = 500_000;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// `url` and `model` with the default budgets and timeout.
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            model: model.into(),
            api_key: None,
            max_tokens_per_lab: Self::DEFAULT_LAB_TOKENS,
            max_tokens_per_tenant: Self::DEFAULT_TENANT_TOKENS,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("llm configuration: {0}")]
    Config(String),
    #[error("the llm endpoint cannot answer: {0}")]
    Unavailable(String),
    #[error("the llm endpoint's answer is not a chat completion: {0}")]
    BadAnswer(String),
    #[error("no proposal `{0}` in this lab")]
    UnknownProposal(String),
    #[error("proposal `{id}` is {status}, not pending approval")]
    NotPending { id: String, status: ProposalStatus },
}

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    /// Refused (budget, malformed answer, Rust's checks or the gate); nothing ran.
    Denied,
    /// Waits for an instructor.
    PendingApproval,
    /// Approved; its command is running.
    Approved,
    /// Rejected by an instructor; nothing ran.
    Rejected,
    /// Its command ran (see `output`).
    Ran,
    /// Its command could not be run (see `reasons`).
    Failed,
    /// A hint or explanation, delivered.
    Answered,
}

impl std::fmt::Display for ProposalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = serde_json::to_value(self).unwrap_or(Value::Null);
        f.write_str(v.as_str().unwrap_or("unknown"))
    }
}

/// What a command printed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// One proposal and everything decided about it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Proposal {
    #[schema(pattern = "^prp-[0-9a-f]{12}$")]
    pub proposal_id: String,
    pub scenario_id: String,
    pub asked_by: String,
    pub asked_at: DateTime<Utc>,
    /// What was asked for.
    pub asked_kind: ProposalKind,
    pub status: ProposalStatus,
    /// What the model proposed (absent when its answer was refused before parsing).
    pub kind: Option<ProposalKind>,
    pub command: Option<String>,
    pub target: Option<String>,
    /// Where an `exec` runs.
    pub container: Option<String>,
    /// The model's reason; for a hint or explanation, the text for the learner.
    pub rationale: Option<String>,
    /// Why it was denied (Rust's checks and the gate's deny reasons).
    pub reasons: Vec<String>,
    /// Why the gate wants a human to approve it.
    pub approval_reasons: Vec<String>,
    /// The gate's decision id.
    pub decision_id: Option<String>,
    /// Tokens the call cost (0 when the model was not called).
    pub tokens: u64,
    /// The instructor who approved or rejected it.
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub output: Option<RunOutput>,
}

/// A request for a proposal: the seam an agent runner (or the API) calls.
#[derive(Debug, Clone)]
pub struct Ask {
    pub scenario: ScenarioId,
    pub tenant: String,
    /// Who asks (`sub`, or `agent:<name>`); the audit actor.
    pub asked_by: String,
    pub kind: ProposalKind,
    pub question: Option<String>,
    /// The container an `exec` must run in, when the asker confines it.
    pub container: Option<String>,
    /// Asks the gate for a human's approval even of a harmless proposal.
    pub require_approval: bool,
    pub lab: LabContext,
}

/// The proposal path of one lab host: client, budgets, gate, runtime, audit, proposals.
#[derive(Clone)]
pub struct Llm {
    inner: Arc<Inner>,
}

struct Inner {
    client: client::ChatClient,
    budgets: budget::Budgets,
    book: book::Book,
    policy: Arc<dyn PolicyEngine>,
    runtime: Arc<dyn Runtime>,
    audit: Arc<dyn AuditSink>,
}

impl Llm {
    pub fn new(
        config: &LlmConfig,
        policy: Arc<dyn PolicyEngine>,
        runtime: Arc<dyn Runtime>,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Self, LlmError> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(LlmError::Config(format!(
                "url must be http:// or https://, got `{}`",
                config.url
            )));
        }
        if config.model.trim().is_empty() {
            return Err(LlmError::Config("model must not be empty".into()));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client: client::ChatClient::new(config)?,
                budgets: budget::Budgets::new(
                    config.max_tokens_per_lab,
                    config.max_tokens_per_tenant,
                ),
                book: book::Book::default(),
                policy,
                runtime,
                audit,
            }),
        })
    }

    /// Asks the model for a proposal and decides it (see the module's doc); an allowed one
    /// runs or is answered before this returns. `Err` only when the endpoint cannot answer.
    pub async fn propose(&self, ask: Ask) -> Result<Proposal, LlmError> {
        let mut p = Proposal {
            proposal_id: format!("prp-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            scenario_id: ask.scenario.to_string(),
            asked_by: ask.asked_by.clone(),
            asked_at: Utc::now(),
            asked_kind: ask.kind,
            status: ProposalStatus::Denied,
            kind: None,
            command: None,
            target: None,
            container: None,
            rationale: None,
            reasons: Vec::new(),
            approval_reasons: Vec::new(),
            decision_id: None,
            tokens: 0,
            decided_by: None,
            decided_at: None,
            output: None,
        };
        let budgets = &self.inner.budgets;
        let reservation = match budgets.reserve(&ask.scenario, &ask.tenant, MAX_COMPLETION_TOKENS) {
            Ok(r) => r,
            Err(why) => {
                p.reasons.push(why);
                return Ok(self.record(&ask, p));
            }
        };
        let messages = prompt::messages(&ask.lab, ask.kind, ask.question.as_deref());
        let answer = self
            .inner
            .client
            .complete(&messages, reservation.granted)
            .await;
        let completion = match answer {
            Ok(c) => c,
            Err(e) => {
                let spent = match e {
                    LlmError::BadAnswer(_) => reservation.granted,
                    _ => 0,
                };
                budgets.settle(reservation, spent);
                self.audit_failure(&ask, &e);
                return Err(e);
            }
        };
        // Without a reported usage: the reservation plus the prompt at ~4 characters a token.
        let prompt_chars: usize = messages.iter().map(|m| m.content.len()).sum();
        let spent = completion
            .total_tokens
            .unwrap_or(reservation.granted + prompt_chars as u64 / 4);
        budgets.settle(reservation, spent);
        p.tokens = spent;
        let proposed = match parse::parse(&completion.content) {
            Ok(x) => x,
            Err(why) => {
                p.reasons.push(why);
                return Ok(self.record(&ask, p));
            }
        };
        p.kind = Some(proposed.kind);
        p.command = proposed.command.clone();
        p.target = proposed.target.clone();
        p.rationale = Some(proposed.rationale.clone());
        p.reasons = self.checks(&ask, &proposed, &mut p.container);
        let allowed = self.decide(&ask, &proposed, &mut p).await;
        if allowed && p.reasons.is_empty() {
            p.status = ProposalStatus::Approved;
        }
        let p = self.record(&ask, p);
        if p.status == ProposalStatus::Approved {
            return Ok(self.carry_out(&ask.scenario, p).await);
        }
        Ok(p)
    }

    /// The lab's proposals, oldest first.
    pub fn list(&self, scenario: &ScenarioId) -> Vec<Proposal> {
        self.inner.book.list(scenario)
    }

    /// Tokens spent by the lab and, today, its tenant; and both budgets.
    pub fn usage(&self, scenario: &ScenarioId, tenant: &str) -> ((u64, u64), (u64, u64)) {
        (
            self.inner.budgets.used(scenario, tenant),
            self.inner.budgets.limits(),
        )
    }

    /// An instructor approves a pending proposal: it runs (or is answered) now, once.
    pub async fn approve(
        &self,
        scenario: &ScenarioId,
        id: &str,
        by: &str,
    ) -> Result<Proposal, LlmError> {
        let p = self.transition(scenario, id, by, ProposalStatus::Approved)?;
        Ok(self.carry_out(scenario, p).await)
    }

    /// An instructor rejects a pending proposal: it never runs.
    pub fn reject(&self, scenario: &ScenarioId, id: &str, by: &str) -> Result<Proposal, LlmError> {
        self.transition(scenario, id, by, ProposalStatus::Rejected)
    }

    /// Pending → `to` under the book's lock, so two approvals run a command once.
    fn transition(
        &self,
        scenario: &ScenarioId,
        id: &str,
        by: &str,
        to: ProposalStatus,
    ) -> Result<Proposal, LlmError> {
        let done = self.inner.book.update(scenario, id, |p| {
            if p.status != ProposalStatus::PendingApproval {
                return Err(LlmError::NotPending {
                    id: id.to_owned(),
                    status: p.status,
                });
            }
            p.status = to;
            p.decided_by = Some(by.to_owned());
            p.decided_at = Some(Utc::now());
            Ok(p.clone())
        });
        let p = done.ok_or_else(|| LlmError::UnknownProposal(id.to_owned()))??;
        let verdict = if to == ProposalStatus::Approved {
            "approved"
        } else {
            "rejected"
        };
        let ev = AuditEvent::new(
            Utc::now(),
            "llm.approval",
            by,
            scenario.as_str(),
            verdict,
            Outcome::Success,
        );
        self.inner.audit.record(audit::details(ev, &p));
        Ok(p)
    }

    /// Runs an approved `exec` (argv, no shell) or answers a hint; records and audits it.
    async fn carry_out(&self, scenario: &ScenarioId, mut p: Proposal) -> Proposal {
        if p.kind != Some(ProposalKind::Exec) {
            p.status = ProposalStatus::Answered;
        } else {
            let container = p.container.clone().unwrap_or_default();
            // The command split before the gate; it splits the same way now.
            let argv = parse::argv(p.command.as_deref().unwrap_or_default()).unwrap_or_default();
            let req = ExecRequest::argv(argv)
                .timeout(RUN_TIMEOUT)
                .max_output(MAX_OUTPUT);
            match self.inner.runtime.exec(scenario, &container, req).await {
                Ok(out) => {
                    p.status = ProposalStatus::Ran;
                    p.output = Some(RunOutput {
                        exit_code: out.exit_code,
                        stdout: out.stdout,
                        stderr: out.stderr,
                        timed_out: out.timed_out,
                        duration_ms: out.duration.as_millis() as u64,
                    });
                }
                Err(e) => {
                    p.status = ProposalStatus::Failed;
                    p.reasons.push(format!("cannot run the command: {e}"));
                }
            }
            let outcome = if p.status == ProposalStatus::Ran {
                Outcome::Success
            } else {
                Outcome::Error
            };
            let mut ev = AuditEvent::new(
                Utc::now(),
                "llm.run",
                p.asked_by.clone(),
                scenario.as_str(),
                "execute",
                outcome,
            );
            ev = audit::details(ev, &p);
            if let Some(o) = &p.output {
                ev = ev.with_detail("exit_code", o.exit_code);
            }
            self.inner.audit.record(ev);
        }
        let stored = p.clone();
        self.inner
            .book
            .update(scenario, &p.proposal_id, move |slot| *slot = stored);
        p
    }
}
