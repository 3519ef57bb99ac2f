//! The audit records of proposals: `llm.proposal` for every one (budget refusals and
//! malformed answers included), with what was proposed and decided.

use chrono::Utc;
use forge_core::audit::{AuditEvent, Outcome};

use super::{Ask, Llm, LlmError, Proposal, ProposalStatus};

impl Llm {
    /// Stores and audits a decided proposal.
    pub(super) fn record(&self, ask: &Ask, p: Proposal) -> Proposal {
        if let Some(dropped) = self.inner.book.insert(&ask.scenario, p.clone()) {
            self.inner.budgets.forget_lab(&dropped);
        }
        let outcome = match p.status {
            ProposalStatus::Denied => Outcome::Denied,
            _ => Outcome::Success,
        };
        let mut ev = AuditEvent::new(
            Utc::now(),
            "llm.proposal",
            ask.asked_by.clone(),
            ask.scenario.as_str(),
            "propose",
            outcome,
        );
        ev = details(ev, &p).with_detail("tenant_id", ask.tenant.clone());
        self.inner.audit.record(ev);
        p
    }

    pub(super) fn audit_failure(&self, ask: &Ask, e: &LlmError) {
        self.inner.audit.record(
            AuditEvent::new(
                Utc::now(),
                "llm.proposal",
                ask.asked_by.clone(),
                ask.scenario.as_str(),
                "propose",
                Outcome::Error,
            )
            .with_detail("asked_kind", ask.kind.as_str())
            .with_detail("error", e.to_string()),
        );
    }
}

/// The audit details every `llm.*` event carries.
pub(super) fn details(ev: AuditEvent, p: &Proposal) -> AuditEvent {
    let mut ev = ev
        .with_detail("proposal_id", p.proposal_id.clone())
        .with_detail("asked_kind", p.asked_kind.as_str())
        .with_detail("status", p.status.to_string())
        .with_detail("tokens", p.tokens);
    for (k, v) in [
        ("kind", p.kind.map(|k| k.as_str().to_owned())),
        ("command", p.command.clone()),
        ("target", p.target.clone()),
        ("container", p.container.clone()),
        ("decision_id", p.decision_id.clone()),
        ("decided_by", p.decided_by.clone()),
    ] {
        if let Some(v) = v {
            ev = ev.with_detail(k, v);
        }
    }
    if !p.reasons.is_empty() {
        ev = ev.with_detail("reasons", p.reasons.clone());
    }
    if !p.approval_reasons.is_empty() {
        ev = ev.with_detail("approval_reasons", p.approval_reasons.clone());
    }
    ev
}
