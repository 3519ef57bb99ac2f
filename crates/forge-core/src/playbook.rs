//! Playbooks (spec: forge_playbook_runner) and the one deterministic evaluator of expectations.
//!
//! A template's successCriteria map onto playbook steps ([`plan_criteria`]), so criteria and
//! standalone playbooks share one evaluation path: a collector turns a step into an
//! [`Observation`] (I/O, elsewhere), and [`evaluate`] turns step + observation into a verdict.

use serde::{Deserialize, Serialize};

use crate::template::{Evidence, EvidenceType, Expect, ScenarioTemplate};

/// Default per-step timeout when the template gives none.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 10;
/// Longest per-step timeout a template, playbook or API request may ask for. A check runs while
/// the learner waits, and an unbounded value (`u64::MAX`) overflowed the deadline arithmetic.
/// The template schema's `timeout_seconds` maximum is the same number (tested).
pub const MAX_TIMEOUT_SECONDS: u64 = 300;

/// `#[serde(deserialize_with)]` for every optional `timeout_seconds`: a whole number of seconds
/// from 1 to [`MAX_TIMEOUT_SECONDS`], or an error that names the field and the range.
pub(crate) fn timeout_seconds<'de, D>(d: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    match n.as_u64() {
        Some(s) if (1..=MAX_TIMEOUT_SECONDS).contains(&s) => Ok(Some(s)),
        _ => Err(D::Error::custom(format!(
            "timeout_seconds must be a whole number of seconds from 1 to {MAX_TIMEOUT_SECONDS}, got {n}"
        ))),
    }
}

/// `#[serde(deserialize_with)]` for fields that must be JSON objects: serde's derived structs
/// also take arrays (`[1, "x"]` for `{exit_code: 1, stdout_contains: "x"}`), and internally
/// tagged enums arrays whose first element is the tag, which no client means and no schema
/// documents.
pub fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
    serde_json::from_value(serde_json::Value::Object(map)).map_err(D::Error::custom)
}

/// [`object`] for every element of a list.
pub fn objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    Vec::<serde_json::Map<String, serde_json::Value>>::deserialize(d)?
        .into_iter()
        .map(|map| serde_json::from_value(serde_json::Value::Object(map)).map_err(D::Error::custom))
        .collect()
}

/// A standalone playbook file: `playbook: [ {step: execute_command, ...}, ... ]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    #[serde(deserialize_with = "objects")]
    pub playbook: Vec<PlaybookStep>,
}

/// One step. `execute_command` and `check_file` are the spec's; `probe_network` and
/// `inspect_state` carry the DSL's network and state evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlaybookStep {
    ExecuteCommand {
        container: String,
        command: String,
        #[serde(default, deserialize_with = "object")]
        expect: Expect,
        /// Seconds, 1 to [`MAX_TIMEOUT_SECONDS`] (default [`DEFAULT_TIMEOUT_SECONDS`]).
        #[serde(default, deserialize_with = "timeout_seconds")]
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 300))]
        timeout_seconds: Option<u64>,
    },
    CheckFile {
        container: String,
        path: String,
        #[serde(default, deserialize_with = "object")]
        expect: Expect,
    },
    ProbeNetwork {
        container: String,
        /// `host:port` (a TCP connect) or a bare host (one ICMP echo).
        target: String,
        #[serde(default, deserialize_with = "object")]
        expect: Expect,
        /// Seconds, 1 to [`MAX_TIMEOUT_SECONDS`] (default [`DEFAULT_TIMEOUT_SECONDS`]).
        #[serde(default, deserialize_with = "timeout_seconds")]
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 300))]
        timeout_seconds: Option<u64>,
    },
    InspectState {
        container: String,
        #[serde(default, deserialize_with = "object")]
        expect: Expect,
    },
}

impl PlaybookStep {
    pub fn container(&self) -> &str {
        match self {
            Self::ExecuteCommand { container, .. }
            | Self::CheckFile { container, .. }
            | Self::ProbeNetwork { container, .. }
            | Self::InspectState { container, .. } => container,
        }
    }

    pub fn expect(&self) -> &Expect {
        match self {
            Self::ExecuteCommand { expect, .. }
            | Self::CheckFile { expect, .. }
            | Self::ProbeNetwork { expect, .. }
            | Self::InspectState { expect, .. } => expect,
        }
    }

    pub fn evidence_type(&self) -> EvidenceType {
        match self {
            Self::ExecuteCommand { .. } => EvidenceType::Command,
            Self::CheckFile { .. } => EvidenceType::File,
            Self::ProbeNetwork { .. } => EvidenceType::Network,
            Self::InspectState { .. } => EvidenceType::State,
        }
    }

    /// The step's timeout, within 1..=[`MAX_TIMEOUT_SECONDS`] even for a step built in code
    /// rather than parsed (parsing already refuses values outside it).
    pub fn timeout_seconds(&self) -> u64 {
        match self {
            Self::ExecuteCommand {
                timeout_seconds, ..
            }
            | Self::ProbeNetwork {
                timeout_seconds, ..
            } => timeout_seconds
                .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
                .clamp(1, MAX_TIMEOUT_SECONDS),
            _ => DEFAULT_TIMEOUT_SECONDS,
        }
    }

    /// Short human description for tables and messages.
    pub fn describe(&self) -> String {
        match self {
            Self::ExecuteCommand {
                container, command, ..
            } => format!("{container}: `{command}`"),
            Self::CheckFile {
                container, path, ..
            } => format!("{container}: file {path}"),
            Self::ProbeNetwork {
                container, target, ..
            } => format!("{container}: probe {target}"),
            Self::InspectState { container, .. } => format!("{container}: state"),
        }
    }
}

/// The shell command a collector runs in the container to probe `target` with busybox tools:
/// `host:port` is a TCP connect with `nc`, a bare host is one ICMP echo with `ping`.
pub fn network_probe_command(target: &str, timeout_seconds: u64) -> String {
    let t = timeout_seconds.clamp(1, 60);
    match split_target(target) {
        (host, Some(port)) => format!(
            "nc -w {t} {} {port} </dev/null >/dev/null 2>&1",
            shell_quote(host)
        ),
        // busybox ping picks ICMPv6 for an IPv6 literal by itself.
        (host, None) => format!("ping -c 1 -W {t} {} >/dev/null 2>&1", shell_quote(host)),
    }
}

/// A probe target's host and port: `host`, `host:port`, an IPv6 literal (`fd00::10`) or a
/// bracketed one with a port (`[fd00::10]:80`). A port that is not a number is left in the host,
/// for the caller to refuse.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    if let Some(rest) = target.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (host, after.strip_prefix(':'));
    }
    if target.matches(':').count() > 1 {
        return (target, None);
    }
    match target.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (target, None),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A criterion ready to evaluate: its steps, weight and hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriterionPlan {
    pub criterion_id: String,
    pub description: String,
    pub weight: f64,
    pub hint: Option<String>,
    pub steps: Vec<PlaybookStep>,
}

/// The one mapping from a template's successCriteria to playbook steps.
pub fn plan_criteria(t: &ScenarioTemplate) -> Vec<CriterionPlan> {
    let learner = t.learner_container().name.clone();
    t.spec
        .success_criteria
        .iter()
        .map(|c| CriterionPlan {
            criterion_id: c.id.clone(),
            description: c.description.clone(),
            weight: c.weight,
            hint: c.hint.clone(),
            steps: c.evidence.iter().map(|e| step_for(e, &learner)).collect(),
        })
        .collect()
}

fn step_for(e: &Evidence, learner: &str) -> PlaybookStep {
    let container = e.container.clone().unwrap_or_else(|| learner.to_owned());
    let expect = e.expect.clone();
    match e.kind {
        EvidenceType::Command => PlaybookStep::ExecuteCommand {
            container,
            command: e.command.clone().unwrap_or_default(),
            expect,
            timeout_seconds: e.timeout_seconds,
        },
        EvidenceType::File => PlaybookStep::CheckFile {
            container,
            path: e.path.clone().unwrap_or_default(),
            expect,
        },
        EvidenceType::Network => PlaybookStep::ProbeNetwork {
            container,
            target: e.target.clone().unwrap_or_default(),
            expect,
            timeout_seconds: e.timeout_seconds,
        },
        EvidenceType::State => PlaybookStep::InspectState { container, expect },
    }
}

/// What a collector saw when it performed a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    Command {
        #[cfg_attr(
            feature = "openapi",
            schema(minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)
        )]
        exit_code: i64,
        stdout: String,
        stderr: String,
        timed_out: bool,
        #[cfg_attr(feature = "openapi", schema(maximum = 18446744073709551615u64))]
        duration_ms: u64,
    },
    File {
        exists: bool,
        content: Option<String>,
    },
    Network {
        reachable: bool,
        detail: String,
    },
    State {
        running: bool,
        /// Any JSON value (the engine's view of the container).
        #[cfg_attr(feature = "openapi", schema(value_type = utoipa::openapi::schema::Value))]
        detail: serde_json::Value,
    },
    /// The step could not be performed (container gone, engine error …).
    Unavailable {
        reason: String,
    },
}

/// Verdict on one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepOutcome {
    pub passed: bool,
    pub message: String,
}

impl StepOutcome {
    fn fail(message: String) -> Self {
        Self {
            passed: false,
            message,
        }
    }
}

/// Decides whether `obs` meets the step's expectations. Deterministic and total: an observation
/// of the wrong kind fails with a message rather than panicking.
pub fn evaluate(step: &PlaybookStep, obs: &Observation) -> StepOutcome {
    let x = step.expect();
    let mut failures: Vec<String> = Vec::new();
    match (step, obs) {
        (_, Observation::Unavailable { reason }) => {
            return StepOutcome::fail(format!("could not collect evidence: {reason}"));
        }
        (
            PlaybookStep::ExecuteCommand { .. },
            Observation::Command {
                exit_code,
                stdout,
                timed_out,
                ..
            },
        ) => {
            if *timed_out {
                return StepOutcome::fail(format!("timed out after {}s", step.timeout_seconds()));
            }
            if let Some(want) = x.exit_code
                && want != *exit_code
            {
                failures.push(format!("exit code {exit_code}, expected {want}"));
            }
            if let Some(s) = &x.stdout_contains
                && !stdout.contains(s.as_str())
            {
                failures.push(format!("output does not contain `{s}`"));
            }
            if let Some(s) = &x.stdout_not_contains
                && stdout.contains(s.as_str())
            {
                failures.push(format!("output contains `{s}`"));
            }
        }
        (PlaybookStep::CheckFile { path, .. }, Observation::File { exists, content }) => {
            let want_exists = x.file_exists.unwrap_or(true);
            if want_exists != *exists {
                failures.push(if *exists {
                    format!("{path} exists, expected it absent")
                } else {
                    format!("{path} does not exist")
                });
            }
            let text = content.as_deref().unwrap_or("");
            if *exists {
                if let Some(s) = &x.contains
                    && !text.contains(s.as_str())
                {
                    failures.push(format!("{path} does not contain `{s}`"));
                }
                if let Some(s) = &x.not_contains
                    && text.contains(s.as_str())
                {
                    failures.push(format!("{path} contains `{s}`"));
                }
            }
        }
        (PlaybookStep::ProbeNetwork { target, .. }, Observation::Network { reachable, .. }) => {
            let want = x.reachable.unwrap_or(true);
            if want != *reachable {
                failures.push(if *reachable {
                    format!("{target} is reachable, expected it blocked")
                } else {
                    format!("{target} is not reachable")
                });
            }
        }
        (PlaybookStep::InspectState { container, .. }, Observation::State { running, .. }) => {
            let want = x.running.unwrap_or(true);
            if want != *running {
                failures.push(if *running {
                    format!("{container} is running, expected it stopped")
                } else {
                    format!("{container} is not running")
                });
            }
        }
        _ => return StepOutcome::fail("observation does not match the step's kind".into()),
    }
    if failures.is_empty() {
        StepOutcome {
            passed: true,
            message: "ok".into(),
        }
    } else {
        StepOutcome::fail(failures.join("; "))
    }
}

/// Combines the outcomes of a criterion's steps (all must pass) into the spec's CriterionResult.
/// `evidence_refs` are the artifact names the collector stored for the steps.
pub fn criterion_result(
    plan: &CriterionPlan,
    outcomes: &[StepOutcome],
    evidence_refs: Vec<String>,
) -> crate::model::CriterionResult {
    let passed = !outcomes.is_empty()
        && outcomes.len() == plan.steps.len()
        && outcomes.iter().all(|o| o.passed);
    let message = if passed {
        "ok".to_owned()
    } else {
        let first = outcomes
            .iter()
            .find(|o| !o.passed)
            .map(|o| o.message.clone());
        first.unwrap_or_else(|| "no evidence collected".to_owned())
    };
    crate::model::CriterionResult {
        criterion_id: plan.criterion_id.clone(),
        passed,
        evidence_refs,
        message: Some(message),
        weight: plan.weight,
    }
}

/// Parses a standalone playbook (YAML, the spec's format), with positions in errors. The input
/// is bounded like a template's (see [`crate::template::MAX_YAML_BYTES`]).
pub fn parse_playbook(file: &str, text: &str) -> Result<Playbook, crate::template::TemplateErrors> {
    use crate::template::{Diagnostic, TemplateErrors, parse_yaml};
    let doc = parse_yaml(text).map_err(|d| TemplateErrors::new(file, vec![d]))?;
    serde_json::from_value(doc.value.clone()).map_err(|e| {
        let mut d = match failing_step(&doc.value) {
            Some((path, e)) => Diagnostic::new(path, e),
            None => Diagnostic::new("playbook", format!("invalid playbook: {e}")),
        };
        d.locate(&doc);
        TemplateErrors::new(file, vec![d])
    })
}

/// The first step that does not deserialise, with its path (down to `timeout_seconds` when
/// that is what is wrong) and why: serde's own error names neither the step nor the line.
fn failing_step(doc: &serde_json::Value) -> Option<(String, String)> {
    let steps = doc.get("playbook")?.as_array()?;
    steps.iter().enumerate().find_map(|(i, step)| {
        let e = object::<_, PlaybookStep>(step.clone()).err()?.to_string();
        Some(if e.starts_with("timeout_seconds") {
            (format!("playbook[{i}].timeout_seconds"), e)
        } else {
            (
                format!("playbook[{i}]"),
                format!("invalid playbook step: {e}"),
            )
        })
    })
}
