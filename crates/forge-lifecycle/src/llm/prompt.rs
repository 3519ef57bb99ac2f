//! What the model is told: the lab's objectives, subnets and containers, and the one JSON
//! object it must answer with.
//!
//! The context is built from the template only: names, descriptions, objectives, hints the
//! template gives learners anyway, subnets and planned addresses. Never a container's
//! environment (where secrets live), never a criterion's expected value, never evidence.

use forge_core::template::{ScenarioTemplate, plan_lab};
use serde::Serialize;

use super::client::Message;
use super::parse::ProposalKind;

/// One container the model may name.
#[derive(Debug, Clone, Serialize)]
pub struct LabContainer {
    pub name: String,
    pub addresses: Vec<String>,
    pub learner: bool,
}

/// What the model and the gate know about a lab.
#[derive(Debug, Clone, Serialize)]
pub struct LabContext {
    pub scenario_id: String,
    pub template: String,
    pub description: String,
    pub objectives: String,
    /// `id: description` of each success criterion.
    pub criteria: Vec<String>,
    /// The lab's IPv4 subnets (CIDR): the gate's notion of "inside the lab".
    pub subnets: Vec<String>,
    pub containers: Vec<LabContainer>,
    /// The learner's container, where a proposal runs when it names none.
    #[serde(skip)]
    pub learner_container: String,
}

impl LabContext {
    pub fn of(scenario_id: &str, t: &ScenarioTemplate) -> Self {
        let plan = plan_lab(t).ok();
        let containers = t
            .spec
            .assets
            .containers
            .iter()
            .map(|c| LabContainer {
                name: c.name.clone(),
                addresses: plan
                    .as_ref()
                    .and_then(|p| p.container(&c.name))
                    .map(|pc| {
                        pc.attachments
                            .iter()
                            .filter_map(|a| a.address.map(|a| a.to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
                learner: c.learner,
            })
            .collect();
        Self {
            scenario_id: scenario_id.to_owned(),
            template: t.metadata.name.clone(),
            description: t.description().to_owned(),
            objectives: t
                .metadata
                .annotations
                .get("objectives")
                .cloned()
                .unwrap_or_default(),
            criteria: t
                .spec
                .success_criteria
                .iter()
                .map(|c| format!("{}: {}", c.id, c.description))
                .collect(),
            subnets: t
                .spec
                .network
                .subnets
                .iter()
                .map(|s| s.cidr.trunc().to_string())
                .collect(),
            containers,
            learner_container: t.learner_container().name.clone(),
        }
    }

    pub fn has_container(&self, name: &str) -> bool {
        self.containers.iter().any(|c| c.name == name)
    }

    pub fn container_names(&self) -> Vec<String> {
        self.containers.iter().map(|c| c.name.clone()).collect()
    }
}

const SYSTEM: &str = "You assist in a sandboxed network-security training lab. You may act \
only inside the lab described below: its subnets and its containers, nothing else. Never touch \
/evidence or /var/lib/forge, never shut hosts down, never reach the internet.\n\
Answer with exactly ONE JSON object and nothing else (no prose, no code fences):\n\
{\"kind\": \"exec\" | \"hint\" | \"explain\", \"command\": string (required for exec), \
\"target\": string (an address or container name of the lab, optional), \"container\": string \
(the lab container to run in, optional), \"rationale\": string (why; for a hint or an \
explanation, the text the learner reads)}.\n\
An exec command runs as a single program with arguments, without a shell: no pipes, ';', '&&', \
redirections, '$' or backticks.";

/// The conversation for one proposal of `kind` about `lab`, with the asker's `question`.
pub fn messages(lab: &LabContext, kind: ProposalKind, question: Option<&str>) -> Vec<Message> {
    let context = serde_json::to_string_pretty(lab).unwrap_or_default();
    let ask = match kind {
        ProposalKind::Exec => "Propose the next command to run (kind exec).",
        ProposalKind::Hint => "Give the learner a hint for the next step (kind hint).",
        ProposalKind::Explain => "Explain to the learner what is going on (kind explain).",
    };
    let mut user = format!("The lab:\n{context}\n\n{ask}");
    if let Some(q) = question {
        user.push_str("\nThe question: ");
        user.push_str(q);
    }
    vec![
        Message {
            role: "system",
            content: SYSTEM.to_owned(),
        },
        Message {
            role: "user",
            content: user,
        },
    ]
}
