//! A Rego unit-test runner in the manner of `opa test`: every rule named `test_*` is evaluated
//! on its own and passes when it is `true`.
//!
//! Test rules are found by scanning each module for rule heads that start with `test_` and
//! confirming each candidate with regorus (`has_declared_rule_rooted_at`), so a name that only
//! appears in a comment or string is never run as a test.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::PolicyError;
use crate::loader;

/// The result of one test rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    /// `data.<package>.<rule>`, as `opa test` prints it.
    pub name: String,
    /// The module that declares it.
    pub file: String,
    pub passed: bool,
    /// Why it failed: `undefined`, `evaluated to <value>`, or the evaluation error.
    pub failure: Option<String>,
    #[serde(serialize_with = "micros")]
    pub duration: Duration,
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_micros())
}

/// All test results of one run, in module order then declaration order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TestReport {
    pub results: Vec<TestResult>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    pub fn success(&self) -> bool {
        self.failed() == 0
    }
}

/// Loads every `*.rego` (policies and `*_test.rego`) and `data.json` under `dir` and runs every
/// `test_*` rule. Modules that do not parse or compile are an error, not a failed test.
pub fn run_tests(dir: &Path) -> Result<TestReport, PolicyError> {
    let contents = loader::read_dir(dir, true)?;
    let modules = contents
        .sources
        .into_iter()
        .map(loader::parse_module)
        .collect::<Result<Vec<_>, _>>()?;

    let mut engine = loader::new_engine();
    for m in &modules {
        loader::add_module(&mut engine, m)?;
    }
    for (name, doc) in contents.data {
        loader::add_data(&mut engine, name, doc)?;
    }
    loader::prepare(&mut engine)?;

    let mut report = TestReport::default();
    for m in &modules {
        for rule in test_rules(&engine, &m.name, &m.text) {
            let name = format!("data.{}.{rule}", m.package);
            let mut e = engine.clone();
            let started = Instant::now();
            let outcome = e.eval_rule(name.clone());
            let duration = started.elapsed();
            let failure = match outcome {
                Ok(regorus::Value::Bool(true)) => None,
                Ok(regorus::Value::Undefined) => Some("undefined".to_owned()),
                Ok(v) => Some(format!("evaluated to {v}")),
                Err(err) => Some(format!("error: {}", crate::error::tidy(&err.to_string()))),
            };
            report.results.push(TestResult {
                name,
                file: m.name.clone(),
                passed: failure.is_none(),
                failure,
                duration,
            });
        }
    }
    Ok(report)
}

/// Names of the `test_*` rules `file` declares, in order, each once.
fn test_rules(engine: &regorus::Engine, file: &str, text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let head = line.trim_start();
        let head = head.strip_prefix("default ").unwrap_or(head).trim_start();
        if !head.starts_with("test_") {
            continue;
        }
        let name: String = head
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if out.contains(&name) {
            continue;
        }
        if matches!(engine.has_declared_rule_rooted_at(file, &name), Ok(true)) {
            out.push(name);
        }
    }
    out
}
