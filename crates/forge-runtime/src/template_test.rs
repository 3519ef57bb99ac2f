//! Criteria evaluation against a live lab, and the core of `forge template test`: proves a
//! template is solvable and not already solved — launch, criteria must NOT all pass, run
//! `spec.solution`, criteria must all pass, tear down (always). Works on any [`Runtime`]; the
//! caller makes sure the template's images exist (`DockerRuntime::ensure_images`). A lab's
//! agents act during the test through [`LabActors`], which the caller supplies (the runtime
//! knows no gate).

use std::collections::BTreeMap;
use std::time::Duration;

use forge_core::playbook::{Observation, criterion_result, evaluate, plan_criteria};
use forge_core::template::{EvidenceType, ScenarioTemplate};
use forge_core::{Artifact, CriterionResult, ScenarioId};
use futures::future::join_all;

use crate::{ExecRequest, LabSpec, Runtime, collect};

/// One criterion's verdict with the artifacts its steps produced.
#[derive(Debug, Clone)]
pub struct EvaluatedCriterion {
    /// The evaluator's verdict; its message may quote the expected value (for instructors,
    /// authors and the signed score, never for learners).
    pub result: CriterionResult,
    pub artifacts: Vec<(Artifact, Vec<u8>)>,
    /// The first step that did not pass, described without any expected value (`None` when
    /// the criterion passed), so a learner can be told what kind of thing is not right yet.
    pub failed_step: Option<FailedStep>,
}

/// What kind of step failed, and nothing of what it expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedStep {
    pub evidence: EvidenceType,
    /// `false` when the evidence could not be collected at all (container gone, engine error):
    /// not the learner's answer that is wrong, the lab that could not be looked at.
    pub collected: bool,
}

/// Collects and evaluates every success criterion of `t` in the running lab (criteria
/// concurrently, steps of one criterion in order). Artifact names are
/// `<criterion>.<step>.<artifact_type>`.
pub async fn evaluate_criteria(
    rt: &dyn Runtime,
    scenario: &ScenarioId,
    t: &ScenarioTemplate,
) -> Vec<EvaluatedCriterion> {
    let plans = plan_criteria(t);
    let jobs = plans.iter().map(|plan| async move {
        let mut outcomes = Vec::new();
        let mut artifacts = Vec::new();
        let mut failed_step = None;
        for (i, step) in plan.steps.iter().enumerate() {
            let (obs, bytes) = collect(rt, scenario, step).await;
            let outcome = evaluate(step, &obs);
            if !outcome.passed && failed_step.is_none() {
                failed_step = Some(FailedStep {
                    evidence: step.evidence_type(),
                    collected: !matches!(obs, Observation::Unavailable { .. }),
                });
            }
            outcomes.push(outcome);
            let kind = step.evidence_type().artifact_type();
            let name = format!("{}.{i}.{}", plan.criterion_id, kind.as_str());
            artifacts.push((Artifact::describe(kind, name, &bytes), bytes));
        }
        let refs = artifacts.iter().map(|(a, _)| a.name.clone()).collect();
        let result = criterion_result(plan, &outcomes, refs);
        EvaluatedCriterion {
            failed_step: if result.passed { None } else { failed_step },
            result,
            artifacts,
        }
    });
    join_all(jobs).await
}

/// One row of the report table.
#[derive(Debug, Clone)]
pub struct CriterionRow {
    pub id: String,
    pub before: bool,
    pub before_message: String,
    /// What the untouched lab returned: each step's observation, summarised and truncated
    /// ([`returned`]).
    pub before_returned: String,
    pub after: Option<bool>,
    pub after_message: String,
    /// What the solved lab returned (empty until the solution ran).
    pub after_returned: String,
}

/// Longest summary of one step's observation in a report row.
const RETURNED_MAX_CHARS: usize = 160;

/// What the lab returned for one criterion, for authors: each step's observation (exit code
/// and output of a command, a file's content, a probe's detail), whitespace collapsed,
/// truncated to [`RETURNED_MAX_CHARS`] characters, steps joined by ` | `.
pub fn returned(c: &EvaluatedCriterion) -> String {
    c.artifacts
        .iter()
        .map(|(_, bytes)| {
            let obs = serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| serde_json::from_value::<Observation>(v["observation"].clone()).ok());
            match obs {
                Some(o) => summarise(&o),
                None => "(no observation)".to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn summarise(o: &Observation) -> String {
    let s = match o {
        Observation::Command {
            exit_code,
            stdout,
            stderr,
            timed_out,
            ..
        } => {
            let out = format!("{stdout} {stderr}");
            if *timed_out {
                format!("timed out: {}", collapse(&out))
            } else {
                format!("exit {exit_code}: {}", collapse(&out))
            }
        }
        Observation::File { exists: false, .. } => "no such file".to_owned(),
        Observation::File { content, .. } => {
            format!("file: {}", collapse(content.as_deref().unwrap_or("")))
        }
        Observation::Network { reachable, detail } => format!(
            "{}: {}",
            if *reachable {
                "reachable"
            } else {
                "unreachable"
            },
            collapse(detail)
        ),
        Observation::State { running, .. } => {
            if *running { "running" } else { "not running" }.to_owned()
        }
        Observation::Unavailable { reason } => format!("unavailable: {}", collapse(reason)),
    };
    truncate(&s, RETURNED_MAX_CHARS)
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The outcome of testing one template.
#[derive(Debug, Clone)]
pub struct TemplateTestReport {
    pub file: String,
    pub template: String,
    pub scenario_id: String,
    pub launch: Option<Duration>,
    pub rows: Vec<CriterionRow>,
    /// Why the test failed, when it did.
    pub failure: Option<String>,
    /// What the lab's agents did (allowed, denied, …), when they ran.
    pub agents: Option<String>,
}

impl TemplateTestReport {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// Human-readable table.
    pub fn render(&self) -> String {
        let mut s = format!(
            "template {} ({}) scenario {}",
            self.template, self.file, self.scenario_id
        );
        if let Some(l) = self.launch {
            s.push_str(&format!(" launched in {} ms", l.as_millis()));
        }
        s.push('\n');
        if !self.rows.is_empty() {
            let w = self
                .rows
                .iter()
                .map(|r| r.id.len())
                .max()
                .unwrap_or(9)
                .max(9);
            s.push_str(&format!("  {:<w$}  before  after\n", "criterion"));
            let mark = |b: bool| if b { "PASS" } else { "fail" };
            for r in &self.rows {
                let after = r.after.map(mark).unwrap_or("-");
                s.push_str(&format!(
                    "  {:<w$}  {:<6}  {}\n",
                    r.id,
                    mark(r.before),
                    after
                ));
                s.push_str(&format!(
                    "      untouched: {} · returned {}\n",
                    r.before_message, r.before_returned
                ));
                if r.after.is_some() {
                    s.push_str(&format!(
                        "      solved:    {} · returned {}\n",
                        r.after_message, r.after_returned
                    ));
                }
            }
        }
        if let Some(a) = &self.agents {
            s.push_str(&format!("  agents: {a}\n"));
        }
        match &self.failure {
            None => s.push_str("result: PASS\n"),
            Some(f) => s.push_str(&format!("result: FAIL: {f}\n")),
        }
        s
    }
}

/// Runs the whole test for one template on `rt` under a fresh scenario id; the lab is always
/// torn down.
pub async fn test_template(
    rt: &dyn Runtime,
    file: &str,
    t: &ScenarioTemplate,
    extra_labels: &BTreeMap<String, String>,
) -> TemplateTestReport {
    test_template_as(rt, ScenarioId::generate(), file, t, extra_labels).await
}

/// What acts in a lab besides the learner while it is tested: its agents. The runtime knows
/// nothing of gates or audit; the caller (`forge template test`) passes the same runner the
/// worker uses, so an agent lab is tested with its attackers and defenders really acting.
#[async_trait::async_trait]
pub trait LabActors: Send + Sync {
    /// Starts acting in the launched lab; returns once the actions due at start have run.
    async fn start(&self, scenario: &ScenarioId, t: &ScenarioTemplate) -> Result<(), String>;
    /// Stops acting (before the lab is torn down); returns a one-line summary for the report.
    async fn stop(&self, scenario: &ScenarioId) -> Option<String>;
}

/// [`test_template`] under a given scenario id.
pub async fn test_template_as(
    rt: &dyn Runtime,
    scenario: ScenarioId,
    file: &str,
    t: &ScenarioTemplate,
    extra_labels: &BTreeMap<String, String>,
) -> TemplateTestReport {
    test_template_with(rt, scenario, file, t, extra_labels, None).await
}

/// [`test_template_as`] with the lab's agents acting (started right after the launch, so the
/// untouched lab is checked after the attack, and stopped before the teardown).
pub async fn test_template_with(
    rt: &dyn Runtime,
    scenario: ScenarioId,
    file: &str,
    t: &ScenarioTemplate,
    extra_labels: &BTreeMap<String, String>,
    actors: Option<&dyn LabActors>,
) -> TemplateTestReport {
    let mut report = TemplateTestReport {
        file: file.into(),
        template: t.metadata.name.clone(),
        scenario_id: scenario.to_string(),
        launch: None,
        rows: Vec::new(),
        failure: None,
        agents: None,
    };
    if t.spec.solution.is_empty() {
        report.failure = Some("template has no spec.solution steps to prove it solvable".into());
        return report;
    }
    let mut spec = LabSpec::new(scenario.clone(), "template-test", t.clone());
    spec.labels = extra_labels.clone();
    spec.labels
        .insert("forge.purpose".into(), "template-test".into());
    // A lab host of its own: a platform on the same engine takes labs of no host for its
    // leftovers (they predate lab hosts) and would tear an author's test lab down mid-test.
    spec.labels
        .entry("forge.host".into())
        .or_insert_with(|| format!("template-test-{}", std::process::id()));
    match rt.launch(spec).await {
        Ok(h) => report.launch = Some(h.timings.total),
        Err(e) => {
            report.failure = Some(format!("launch failed: {e}"));
            return report;
        }
    }
    let started = match actors {
        Some(a) if !t.spec.agents.is_empty() => a
            .start(&scenario, t)
            .await
            .map_err(|e| format!("agents did not start: {e}")),
        _ => Ok(()),
    };
    report.failure = match started {
        Ok(()) => exercise(rt, &scenario, t, &mut report.rows).await.err(),
        Err(e) => Some(e),
    };
    if let Some(a) = actors
        && !t.spec.agents.is_empty()
    {
        report.agents = a.stop(&scenario).await;
    }
    if let Err(e) = rt.teardown(&scenario).await {
        report
            .failure
            .get_or_insert(format!("teardown failed: {e}"));
    }
    report
}

async fn exercise(
    rt: &dyn Runtime,
    scenario: &ScenarioId,
    t: &ScenarioTemplate,
    rows: &mut Vec<CriterionRow>,
) -> Result<(), String> {
    for c in evaluate_criteria(rt, scenario, t).await {
        rows.push(CriterionRow {
            before_returned: returned(&c),
            id: c.result.criterion_id,
            before: c.result.passed,
            before_message: c.result.message.unwrap_or_default(),
            after: None,
            after_message: String::new(),
            after_returned: String::new(),
        });
    }
    if !rows.is_empty() && rows.iter().all(|r| r.before) {
        return Err("every criterion passes on the untouched lab: nothing to solve".into());
    }
    for step in &t.spec.solution {
        let req = ExecRequest::shell(step.command.clone()).timeout(Duration::from_secs(60));
        let r = rt
            .exec(scenario, &step.container, req)
            .await
            .map_err(|e| format!("solution step failed: {e}"))?;
        if r.exit_code != 0 || r.timed_out {
            let out = format!("{}{}", r.stdout, r.stderr);
            return Err(format!(
                "solution step `{}` in {} exited with {}: {}",
                step.command,
                step.container,
                r.exit_code,
                out.trim()
            ));
        }
    }
    for (row, c) in rows
        .iter_mut()
        .zip(evaluate_criteria(rt, scenario, t).await)
    {
        row.after = Some(c.result.passed);
        row.after_returned = returned(&c);
        row.after_message = c.result.message.unwrap_or_default();
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.after != Some(true))
        .map(|r| r.id.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "criteria failing after the solution: {}",
            failed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criterion(observations: &[Observation]) -> EvaluatedCriterion {
        let artifacts = observations
            .iter()
            .map(|o| {
                let bytes = serde_json::to_vec(&serde_json::json!({ "observation": o })).unwrap();
                let kind = forge_core::ArtifactType::CommandOutput;
                (Artifact::describe(kind, "c.0.x", &bytes), bytes)
            })
            .collect();
        EvaluatedCriterion {
            result: CriterionResult {
                criterion_id: "c".into(),
                passed: false,
                evidence_refs: vec![],
                message: None,
                weight: 1.0,
            },
            artifacts,
            failed_step: None,
        }
    }

    #[test]
    fn returned_summarises_each_step_and_truncates() {
        let long = "x".repeat(500);
        let c = criterion(&[
            Observation::Command {
                exit_code: 1,
                stdout: "BIRD 2.0.12 ready.\n  no   OSPF\n".into(),
                stderr: String::new(),
                timed_out: false,
                duration_ms: 3,
            },
            Observation::File {
                exists: false,
                content: None,
            },
            Observation::File {
                exists: true,
                content: Some(long),
            },
        ]);
        let r = returned(&c);
        let parts: Vec<&str> = r.split(" | ").collect();
        assert_eq!(parts[0], "exit 1: BIRD 2.0.12 ready. no OSPF");
        assert_eq!(parts[1], "no such file");
        assert_eq!(parts[2].chars().count(), RETURNED_MAX_CHARS);
        assert!(parts[2].starts_with("file: xxx") && parts[2].ends_with('…'));
    }
}
