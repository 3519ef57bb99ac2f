//! Deciding a parsed proposal: Rust's own refusals first (the kind asked for, the container,
//! an `exec` command that runs without a shell), then the LLM gate with the lab's subnets and
//! container names. Both sets of reasons are kept; an engine that cannot decide is a deny.

use forge_policy::{DecisionContext, PolicyName};
use serde_json::{Value, json};

use super::{Ask, Llm, Proposal, ProposalKind, ProposalStatus, parse};

impl Llm {
    /// Rust's own refusals, before the gate: the kind asked for, the container, and (for an
    /// `exec`) a command that runs without a shell. Sets the container an `exec` runs in.
    pub(super) fn checks(
        &self,
        ask: &Ask,
        proposed: &parse::Proposed,
        container: &mut Option<String>,
    ) -> Vec<String> {
        let mut reasons = Vec::new();
        if proposed.kind != ask.kind {
            reasons.push(format!(
                "asked for {}, the model proposed {}",
                ask.kind.as_str(),
                proposed.kind.as_str()
            ));
        }
        if proposed.kind == ProposalKind::Exec {
            let chosen = proposed
                .container
                .clone()
                .or_else(|| ask.container.clone())
                .unwrap_or_else(|| ask.lab.learner_container.clone());
            if !ask.lab.has_container(&chosen) {
                reasons.push(format!(
                    "proposal.container `{chosen}` is not a container of this lab"
                ));
            } else if ask.container.as_ref().is_some_and(|c| *c != chosen) {
                reasons.push(format!(
                    "proposal.container `{chosen}` is not the container asked for"
                ));
            }
            *container = Some(chosen);
            if let Err(why) = parse::argv(proposed.command.as_deref().unwrap_or_default()) {
                reasons.push(why);
            }
        }
        reasons
    }

    /// Puts the proposal to the LLM gate and merges its outputs into `p`; whether the gate
    /// allows it to run with no human.
    pub(super) async fn decide(
        &self,
        ask: &Ask,
        proposed: &parse::Proposed,
        p: &mut Proposal,
    ) -> bool {
        let mut proposal = json!({"kind": proposed.kind.as_str(), "rationale": proposed.rationale});
        if let Some(c) = &proposed.command {
            proposal["command"] = json!(c);
        }
        if let Some(t) = &proposed.target {
            proposal["target"] = json!(t);
        }
        let input = json!({
            "proposal": proposal,
            "scenario": {
                "id": ask.scenario.as_str(),
                "subnets": ask.lab.subnets,
                "hosts": ask.lab.container_names(),
            },
            "require_human_approval": ask.require_approval,
        });
        let ctx = DecisionContext {
            actor: Some(ask.asked_by.clone()),
            resource_id: Some(ask.scenario.to_string()),
        };
        match self
            .inner
            .policy
            .decide_with(PolicyName::LlmGate, &input, &ctx)
            .await
        {
            Ok(d) => {
                p.decision_id = Some(d.decision_id.clone());
                p.reasons.extend(d.deny_reasons.iter().cloned());
                if let Some(Value::Array(why)) = d.extra.get("approval_reasons") {
                    p.approval_reasons = why
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect();
                    p.approval_reasons.sort();
                }
                if p.reasons.is_empty() && !d.allow {
                    if d.requires_approval() {
                        p.status = ProposalStatus::PendingApproval;
                    } else {
                        p.reasons.push("denied by the llm gate".into());
                    }
                }
                d.allow
            }
            Err(e) => {
                p.reasons.push(format!("the llm gate cannot decide: {e}"));
                false
            }
        }
    }
}
