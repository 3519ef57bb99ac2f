//! `forge policy eval|test`: the policy subcommands, wired into the `forge` binary by forge-cli.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{EmbeddedEngine, PolicyName, run_tests};

/// `forge policy ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// Evaluate one gate on an input document and print the decision as JSON
    Eval {
        /// training_gate, spawn_gate, action_gate or llm_gate (or its package name)
        #[arg(long, value_parser = parse_policy)]
        policy: PolicyName,
        /// JSON input document; `-` reads stdin
        #[arg(long)]
        input: PathBuf,
        /// Operator policy directory loaded on top of the bundled gates (a module with a
        /// gate's package replaces the bundled one)
        #[arg(long)]
        policy_dir: Option<PathBuf>,
    },
    /// Run the Rego unit tests (`test_*` rules) under a directory, like `opa test`
    Test {
        /// Directory of policies and *_test.rego files [default: policies]
        dir: Option<PathBuf>,
        /// Show each test's duration and the failure detail
        #[arg(short, long)]
        verbose: bool,
    },
}

fn parse_policy(s: &str) -> Result<PolicyName, String> {
    s.parse().map_err(|e: crate::PolicyError| e.to_string())
}

/// Runs a policy subcommand and returns the process exit code: `eval` 0 whatever the decision,
/// `test` 1 when any test fails.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<i32> {
    match cmd {
        PolicyCommand::Eval {
            policy,
            input,
            policy_dir,
        } => eval(policy, &input, policy_dir),
        PolicyCommand::Test { dir, verbose } => {
            test(&dir.unwrap_or_else(|| "policies".into()), verbose)
        }
    }
}

fn eval(policy: PolicyName, input: &Path, policy_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let text = if input == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the input from stdin")?;
        s
    } else {
        std::fs::read_to_string(input)
            .with_context(|| format!("cannot read input {}", input.display()))?
    };
    let doc: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("input {} is not valid JSON", input.display()))?;
    let mut builder = EmbeddedEngine::builder().audit(
        std::sync::Arc::new(forge_core::audit::NullAuditSink),
        "forge-cli",
    );
    if let Some(dir) = policy_dir {
        builder = builder.operator_dir(dir);
    }
    let engine = builder.build()?;
    let decision = engine.decide(policy, &doc)?;
    println!("{}", serde_json::to_string_pretty(&decision)?);
    Ok(0)
}

fn test(dir: &Path, verbose: bool) -> anyhow::Result<i32> {
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
