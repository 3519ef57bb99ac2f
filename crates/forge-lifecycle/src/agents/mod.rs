//! The agent runner: a lab's scripted attackers and defenders (`spec.agents`), acting through
//! the runtime under the action gate.
//!
//! Every action is put to the action gate (`PolicyName::ActionGate`) before anything runs: the
//! agent as actor (`agent:<name>`, role `forge.agent`), the gate's kind and the target, the
//! lab's subnets and the exploits used so far. A command's other IPv4 literals are put to the
//! gate too, so a command cannot aim where its target does not. A deny (or an engine that
//! cannot answer) means the action does not run. Exploits are counted under a lock from the
//! decision on, so a script never runs more than `attacker_max_exploits` of them, however many
//! of its actions race. Each attempt is an `agent.action` audit event and an entry of the
//! lab's hash-chained [`Timeline`], which the worker stages into the evidence bundle; alerts
//! are kept for the learner's check.
//!
//! One runner serves both the worker (per lab, from `scenario.created` to the evaluation) and
//! `forge template test` (through [`LabActors`]), so a tested lab is attacked as a learner's is.

mod actions;
mod actors;

pub use actors::summary;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use forge_core::ScenarioId;
use forge_core::audit::{AuditEvent, AuditSink, Outcome};
use forge_core::template::{Agent, AgentAction, ScenarioTemplate, agents, plan_lab};
use forge_core::timeline::{ActionOutcome, GateVerdict, Timeline, TimelineEntry};
use forge_policy::{DecisionContext, PolicyEngine, PolicyName};
use forge_runtime::Runtime;
use forge_runtime::template_test::evaluate_criteria;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The role every agent acts with at the gate.
pub const AGENT_ROLE: &str = "forge.agent";
/// How often file and criterion triggers look again.
const TRIGGER_POLL: Duration = Duration::from_secs(1);
/// Criterion triggers run commands in the lab: they look less often.
const CRITERION_POLL: Duration = Duration::from_secs(3);

/// Something an agent raised for the learner to see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentAlert {
    pub at: DateTime<Utc>,
    pub agent: String,
    pub message: String,
}

/// The runner of every lab's agents on one host.
#[derive(Clone)]
pub struct Agents {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<dyn Runtime>,
    policy: Arc<dyn PolicyEngine>,
    audit: Arc<dyn AuditSink>,
    labs: Mutex<HashMap<ScenarioId, Arc<LabRun>>>,
    /// Timelines of labs whose agents were stopped, so a redelivered evaluation stages the
    /// same bytes; the oldest go first past [`FINISHED_KEPT`].
    finished: Mutex<std::collections::VecDeque<(ScenarioId, Timeline)>>,
}

/// Stopped labs' timelines kept for redeliveries.
const FINISHED_KEPT: usize = 256;

/// One lab's agents at work.
struct LabRun {
    lab: Lab,
    state: Mutex<RunState>,
    /// Held from an exploit's decision to its count, so two exploits never both see the last
    /// unit of the budget.
    exploits: tokio::sync::Mutex<()>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What the gate needs to know about the lab, fixed at start.
struct Lab {
    scenario: ScenarioId,
    template: Arc<ScenarioTemplate>,
    subnets: Vec<String>,
    /// Each container's first IPv4 address: the target of actions on the agent's own host.
    addresses: HashMap<String, String>,
    max_exploits: i64,
}

struct RunState {
    timeline: Timeline,
    alerts: Vec<AgentAlert>,
    exploits_used: u32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Agents {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        policy: Arc<dyn PolicyEngine>,
        audit: Arc<dyn AuditSink>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                runtime,
                policy,
                audit,
                labs: Mutex::default(),
                finished: Mutex::default(),
            }),
        }
    }

    /// Starts the agents of a running lab (nothing when it has none, or they run already).
    /// The returned receivers complete once each action due at start has run once.
    pub fn start(
        &self,
        scenario: &ScenarioId,
        template: Arc<ScenarioTemplate>,
    ) -> Vec<oneshot::Receiver<()>> {
        if template.spec.agents.is_empty() {
            return Vec::new();
        }
        let mut labs = lock(&self.inner.labs);
        if labs.contains_key(scenario) {
            return Vec::new();
        }
        let addresses = plan_lab(&template)
            .map(|p| {
                p.containers
                    .into_iter()
                    .filter_map(|c| {
                        let a = c.attachments.iter().find_map(|a| a.address)?;
                        Some((c.name, a.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let run = Arc::new(LabRun {
            lab: Lab {
                scenario: scenario.clone(),
                subnets: template
                    .spec
                    .network
                    .subnets
                    .iter()
                    .map(|s| s.cidr.to_string())
                    .collect(),
                addresses,
                max_exploits: template.spec.limits.attacker_max_exploits,
                template: template.clone(),
            },
            state: Mutex::new(RunState {
                timeline: Timeline::new(
                    scenario.as_str(),
                    template.spec.limits.attacker_max_exploits,
                ),
                alerts: Vec::new(),
                exploits_used: 0,
            }),
            exploits: tokio::sync::Mutex::new(()),
            tasks: Mutex::default(),
        });
        labs.insert(scenario.clone(), run.clone());
        drop(labs);
        let lifetime = template.spec.limits.timeout_minutes.saturating_mul(60);
        let until = tokio::time::Instant::now() + Duration::from_secs(lifetime + 60);
        let mut started = Vec::new();
        let mut tasks = Vec::new();
        for (ai, agent) in template.spec.agents.iter().enumerate() {
            for (k, act) in agent.actions.iter().enumerate() {
                let (tx, rx) = oneshot::channel();
                if act.when.at.is_some() {
                    started.push(rx);
                }
                let (me, run) = (self.clone(), run.clone());
                tasks.push(tokio::spawn(async move {
                    // A lab that ends without an evaluation (failed, lost) never stops its
                    // agents through the worker: they stop on their own at its latest end.
                    let _ = tokio::time::timeout_at(until, me.act(&run, ai, k, tx)).await;
                }));
            }
        }
        lock(&run.tasks).extend(tasks);
        tracing::info!(scenario_id = %scenario, agents = template.spec.agents.len(), "agents started");
        started
    }

    /// What the lab's agents raised for the learner so far.
    pub fn alerts(&self, scenario: &ScenarioId) -> Vec<AgentAlert> {
        lock(&self.inner.labs)
            .get(scenario)
            .map(|r| lock(&r.state).alerts.clone())
            .unwrap_or_default()
    }

    /// The lab's timeline so far, when its agents run here.
    pub fn timeline(&self, scenario: &ScenarioId) -> Option<Timeline> {
        lock(&self.inner.labs)
            .get(scenario)
            .map(|r| lock(&r.state).timeline.clone())
    }

    /// Stops the lab's agents (an action under way is abandoned, and not in the timeline) and
    /// returns their timeline.
    pub fn stop(&self, scenario: &ScenarioId) -> Option<Timeline> {
        let run = lock(&self.inner.labs).remove(scenario)?;
        for t in lock(&run.tasks).drain(..) {
            t.abort();
        }
        let timeline = lock(&run.state).timeline.clone();
        Some(timeline)
    }

    /// Stops the lab's agents if they run, and returns the timeline they left (also when they
    /// were stopped before).
    pub fn finish(&self, scenario: &ScenarioId) -> Option<Timeline> {
        let mut finished = lock(&self.inner.finished);
        if let Some(t) = self.stop(scenario) {
            if finished.len() >= FINISHED_KEPT {
                finished.pop_front();
            }
            finished.push_back((scenario.clone(), t));
        }
        finished
            .iter()
            .find(|(id, _)| id == scenario)
            .map(|(_, t)| t.clone())
    }

    /// One action's life: its trigger, then its runs.
    async fn act(&self, run: &LabRun, ai: usize, k: usize, started: oneshot::Sender<()>) {
        let agent = &run.lab.template.spec.agents[ai];
        let act = &agent.actions[k];
        let mut started = Some(started);
        if act.when.at.is_none() {
            started.take();
        }
        self.trigger(run, act).await;
        let runs = 1 + act.repeat.map_or(0, |r| r.times);
        for n in 0..runs {
            if n > 0 {
                let every = act.repeat.map_or(1, |r| r.every_seconds);
                tokio::time::sleep(Duration::from_secs(every)).await;
            }
            self.perform(run, agent, act, k).await;
            if let Some(tx) = started.take() {
                let _ = tx.send(());
            }
        }
    }

    /// Waits until the action is due.
    async fn trigger(&self, run: &LabRun, act: &AgentAction) {
        let rt = self.inner.runtime.as_ref();
        let scenario = &run.lab.scenario;
        let w = &act.when;
        if let Some(s) = w.after_seconds {
            tokio::time::sleep(Duration::from_secs(s)).await;
        } else if let Some(f) = &w.file {
            loop {
                if let Ok(c) = rt.read_file(scenario, &f.container, &f.path, 1 << 20).await {
                    let text = String::from_utf8_lossy(&c.bytes);
                    if f.contains.as_deref().is_none_or(|x| text.contains(x)) {
                        return;
                    }
                }
                tokio::time::sleep(TRIGGER_POLL).await;
            }
        } else if let Some(id) = &w.criterion {
            let mut only = (*run.lab.template).clone();
            only.spec.success_criteria.retain(|c| &c.id == id);
            loop {
                let done = evaluate_criteria(rt, scenario, &only).await;
                if !done.is_empty() && done.iter().all(|c| c.result.passed) {
                    return;
                }
                tokio::time::sleep(CRITERION_POLL).await;
            }
        }
    }

    /// One run of one action: gate, budget, command, record.
    async fn perform(&self, run: &LabRun, agent: &Agent, act: &AgentAction, k: usize) {
        let lab = &run.lab;
        let own = lab.addresses.get(&agent.container).cloned();
        let target = act.target.clone().or(own).unwrap_or_default();
        let planned = actions::plan(act, &target);
        let gate_kind = act.kind.gate_kind();
        // Every address the action names goes to the gate: its target, and for commands each
        // literal in them.
        let mut targets = vec![target.clone()];
        if let Some(cmd) = &act.command {
            for ip in agents::ipv4_literals(cmd) {
                if !targets.contains(&ip) {
                    targets.push(ip);
                }
            }
        }
        let is_exploit = gate_kind == "exploit";
        let budget = if is_exploit {
            Some(run.exploits.lock().await)
        } else {
            None
        };
        let used = lock(&run.state).exploits_used;
        let mut verdict = self
            .decide(lab, agent, gate_kind, &targets, &planned.shown, used)
            .await;
        if verdict.allow && is_exploit && i64::from(used) >= lab.max_exploits {
            // The gate said yes; the template's budget still says no (defence in depth).
            verdict.allow = false;
            verdict.reasons.push(format!(
                "exploit budget exhausted: {used} of {} exploits used",
                lab.max_exploits
            ));
        }
        if verdict.allow && is_exploit {
            lock(&run.state).exploits_used += 1;
        }
        drop(budget);
        let (outcome, exit_code, output) = if !verdict.allow {
            (ActionOutcome::Denied, None, String::new())
        } else if let Some(req) = planned.exec {
            match self
                .inner
                .runtime
                .exec(&lab.scenario, &agent.container, req)
                .await
            {
                Ok(r) => {
                    let ok = r.exit_code == 0 && !r.timed_out;
                    let out = format!("{}{}", r.stdout, r.stderr);
                    (
                        if ok {
                            ActionOutcome::Succeeded
                        } else {
                            ActionOutcome::Failed
                        },
                        Some(r.exit_code),
                        actions::excerpt(out.trim()),
                    )
                }
                Err(e) => (ActionOutcome::Error, None, e.to_string()),
            }
        } else {
            let message = act.message.clone().unwrap_or_default();
            lock(&run.state).alerts.push(AgentAlert {
                at: Utc::now(),
                agent: agent.name.clone(),
                message: message.clone(),
            });
            (ActionOutcome::Succeeded, None, message)
        };
        let entry = {
            let mut st = lock(&run.state);
            let exploits_used = st.exploits_used;
            st.timeline
                .push(TimelineEntry {
                    seq: 0,
                    at: Utc::now(),
                    agent: agent.name.clone(),
                    role: agent.role.clone(),
                    action: act.id_or(k),
                    kind: act.kind.as_str().into(),
                    gate_kind: gate_kind.into(),
                    target: target.clone(),
                    gate: verdict,
                    outcome,
                    exit_code,
                    output,
                    exploits_used,
                    prev: String::new(),
                    hash: String::new(),
                })
                .clone()
        };
        self.audit(lab, &entry, &planned.shown);
    }

    /// The gate's verdict on every address the action names; any deny denies the action, and
    /// an engine that cannot answer is a deny (fail closed).
    async fn decide(
        &self,
        lab: &Lab,
        agent: &Agent,
        gate_kind: &str,
        targets: &[String],
        shown: &str,
        used: u32,
    ) -> GateVerdict {
        let sub = format!("agent:{}", agent.name);
        let ctx = DecisionContext {
            actor: Some(sub.clone()),
            resource_id: Some(lab.scenario.to_string()),
        };
        let mut verdict = GateVerdict {
            allow: true,
            reasons: Vec::new(),
            decision_id: String::new(),
        };
        for target in targets {
            let input = serde_json::json!({
                "actor": {"sub": sub, "roles": [AGENT_ROLE], "agent_role": agent.role},
                "action": {"kind": gate_kind, "target": target, "command": shown},
                "scenario": {
                    "id": lab.scenario.as_str(),
                    "subnets": lab.subnets,
                    "attacker_max_exploits": lab.max_exploits,
                    "exploits_used": used,
                },
            });
            match self
                .inner
                .policy
                .decide_with(PolicyName::ActionGate, &input, &ctx)
                .await
            {
                Ok(d) => {
                    if !verdict.decision_id.is_empty() {
                        verdict.decision_id.push(',');
                    }
                    verdict.decision_id.push_str(&d.decision_id);
                    if !d.allow {
                        verdict.allow = false;
                        verdict.reasons.extend(d.deny_reasons);
                    }
                }
                Err(e) => {
                    verdict.allow = false;
                    verdict
                        .reasons
                        .push(format!("the action gate cannot decide: {e}"));
                }
            }
        }
        if !verdict.allow && verdict.reasons.is_empty() {
            verdict.reasons.push("denied by the action gate".into());
        }
        verdict
    }

    fn audit(&self, lab: &Lab, e: &TimelineEntry, shown: &str) {
        let outcome = match e.outcome {
            ActionOutcome::Denied => Outcome::Denied,
            ActionOutcome::Error => Outcome::Error,
            ActionOutcome::Succeeded | ActionOutcome::Failed => Outcome::Success,
        };
        let mut ev = AuditEvent::new(
            e.at,
            "agent.action",
            format!("agent:{}", e.agent),
            lab.scenario.as_str(),
            "execute",
            outcome,
        )
        .with_detail("agent", e.agent.clone())
        .with_detail("role", e.role.clone())
        .with_detail("action", e.action.clone())
        .with_detail("kind", e.kind.clone())
        .with_detail("gate_kind", e.gate_kind.clone())
        .with_detail("target", e.target.clone())
        .with_detail("command", shown)
        .with_detail("allow", e.gate.allow)
        .with_detail("decision_id", e.gate.decision_id.clone())
        .with_detail(
            "result",
            serde_json::to_value(e.outcome).unwrap_or_default(),
        )
        .with_detail("exploits_used", e.exploits_used)
        .with_detail("seq", e.seq);
        if !e.gate.reasons.is_empty() {
            ev = ev.with_detail("deny_reasons", e.gate.reasons.clone());
        }
        if let Some(c) = e.exit_code {
            ev = ev.with_detail("exit_code", c);
        }
        self.inner.audit.record(ev);
        metrics::counter!("forge_agent_actions_total",
            "kind" => e.kind.clone(),
            "result" => if e.gate.allow { "allowed" } else { "denied" })
        .increment(1);
    }
}
