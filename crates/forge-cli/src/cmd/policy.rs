//! `forge policy eval|test`: one gate's decision on an input document, and the Rego unit tests
//! (`test_*` rules) like `opa test`.

use std::io::Read;
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
            policies,
        } => eval(policy, &input, policies.policy_dir.as_deref()),
        PolicyCommand::Test { dir, verbose } => test(&dir, verbose),
    }
}

fn eval(policy: PolicyName, input: &Path, policy_dir: Option<&Path>) -> anyhow::Result<u8> {
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
    let mut builder =
        EmbeddedEngine::builder().audit(Arc::new(forge_core::audit::NullAuditSink), "forge-cli");
    if let Some(dir) = policy_dir {
        builder = builder.operator_dir(dir);
    }
    let engine = builder.build().context("cannot load the policies")?;
    let decision = engine.decide(policy, &doc)?;
    println!("{}", serde_json::to_string_pretty(&decision)?);
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
