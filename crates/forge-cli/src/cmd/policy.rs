//! `forge policy eval|test`: one gate's decision on an input document (or on each line of a
//! JSON-lines file), and the Rego unit tests (`test_*` rules) like `opa test`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use forge_policy::{EmbeddedEngine, PolicyName, run_tests};

use crate::config::PolicyDirArg;

/// `forge policy …`
#[derive(Debug, Clone, Subcommand)]
pub enum PolicyCommand {
    /// Evaluate one gate on an input document and print the decision as JSON (exit 0 whatever
    /// the decision)
    Eval {
        /// training_gate, spawn_gate, action_gate or llm_gate (or its package name)
        #[arg(long, value_parser = parse_policy)]
        policy: PolicyName,
        /// JSON input document; `-` reads stdin
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Read one input document per line (JSON lines) and print one compact decision per
        /// line, or `{"error": "..."}` for a line that is not JSON or cannot be decided, so
        /// many inputs cost one process and one policy compilation
        #[arg(long)]
        lines: bool,
        #[command(flatten)]
        policies: PolicyDirArg,
    },
    /// Run the Rego unit tests (`test_*` rules) under a directory, like `opa test` (exit 1 when
    /// any fails)
    Test {
        /// Directory of policies and *_test.rego files
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// Show each test's duration and the failure detail
        #[arg(short, long)]
        verbose: bool,
    },
}

fn parse_policy(s: &str) -> Result<PolicyName, String> {
    s.parse()
        .map_err(|e: forge_policy::PolicyError| e.to_string())
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<u8> {
    match cmd {
        PolicyCommand::Eval {
            policy,
            input,
            lines,
            policies,
        } => eval(policy, &input, lines, policies.policy_dir.as_deref()),
        PolicyCommand::Test { dir, verbose } => test(&dir, verbose),
    }
}

fn eval(
    policy: PolicyName,
    input: &Path,
    lines: bool,
    policy_dir: Option<&Path>,
) -> anyhow::Result<u8> {
    let reader: Box<dyn Read> = if input == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(input)
                .with_context(|| format!("cannot read input {}", input.display()))?,
        )
    };
    let mut builder =
        EmbeddedEngine::builder().audit(Arc::new(forge_core::audit::NullAuditSink), "forge-cli");
    if let Some(dir) = policy_dir {
        builder = builder.operator_dir(dir);
    }
    let engine = builder.build().context("cannot load the policies")?;
    if lines {
        return eval_lines(&engine, policy, input, reader);
    }
    let mut text = String::new();
    BufReader::new(reader)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read input {}", input.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("input {} is not valid JSON", input.display()))?;
    let decision = engine.decide(policy, &doc)?;
    println!("{}", serde_json::to_string_pretty(&decision)?);
    Ok(0)
}

/// One decision per input line. A bad line answers with an error line instead of ending the
/// run, so output line N always belongs to input line N.
fn eval_lines(
    engine: &EmbeddedEngine,
    policy: PolicyName,
    input: &Path,
    reader: Box<dyn Read>,
) -> anyhow::Result<u8> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in BufReader::new(reader).lines().enumerate() {
        let line =
            line.with_context(|| format!("cannot read line {} of {}", n + 1, input.display()))?;
        let answer = serde_json::from_str::<serde_json::Value>(&line)
            .map_err(|e| format!("line {} is not valid JSON: {e}", n + 1))
            .and_then(|doc| engine.decide(policy, &doc).map_err(|e| e.to_string()));
        let text = match answer {
            Ok(decision) => serde_json::to_string(&decision)?,
            Err(error) => serde_json::json!({ "error": error }).to_string(),
        };
        writeln!(out, "{text}")?;
    }
    out.flush()?;
    Ok(0)
}

fn test(dir: &Path, verbose: bool) -> anyhow::Result<u8> {
    let report =
        run_tests(dir).with_context(|| format!("cannot run the tests in {}", dir.display()))?;
    for r in &report.results {
        let status = if r.passed { "PASS" } else { "FAIL" };
        match (&r.failure, verbose) {
            (Some(why), _) => println!("{status} {} ({why})", r.name),
            (None, true) => println!("{status} {} ({:?})", r.name, r.duration),
            (None, false) => println!("{status} {}", r.name),
        }
        if verbose && !r.passed {
            println!("     in {}", r.file);
        }
    }
    if report.results.is_empty() {
        println!("no test_* rules found in {}", dir.display());
    }
    println!("{} passed, {} failed", report.passed(), report.failed());
    Ok(if report.success() { 0 } else { 1 })
}
