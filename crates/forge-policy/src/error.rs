//! The one error type of the policy layer.
//!
//! Variants are split by what the caller does about them: a broken policy file is an operator
//! problem reported at start-up ([`PolicyError::Parse`], [`PolicyError::Compile`]), bad input is
//! the caller's fault (a 400), and an unreachable remote OPA is a dependency failure the spawn
//! API maps to 502 ([`PolicyError::Unavailable`]).

use std::path::PathBuf;

/// Everything that can go wrong loading, evaluating or querying policies.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy or data file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A module is not valid Rego; `message` comes from regorus and names file, line and column.
    #[error("policy {file} does not parse: {message}")]
    Parse { file: String, message: String },

    /// The modules parse but do not form a valid policy set (conflicting rules, unknown
    /// functions, a package defined twice, ...).
    #[error("policies do not compile: {0}")]
    Compile(String),

    /// A data document (`data.json`, or data handed to the builder) is not a JSON object.
    #[error("invalid data document {source_name}: {message}")]
    Data {
        source_name: String,
        message: String,
    },

    /// The policy name is not one of the four gates.
    #[error("unknown policy {0} (known: training_gate, spawn_gate, action_gate, llm_gate)")]
    UnknownPolicy(String),

    /// No loaded module declares the policy's package.
    #[error("policy {policy} is not loaded (no module declares package {package})")]
    NotLoaded { policy: String, package: String },

    /// The input is not a JSON object (or not JSON at all).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// Evaluation failed inside the engine (a policy bug, a timeout, or a remote OPA error
    /// reported with a 500).
    #[error("evaluating {policy} failed: {message}")]
    Eval { policy: String, message: String },

    /// The remote OPA could not be reached, timed out, answered 5xx or answered garbage.
    #[error("policy engine at {url} is unavailable: {reason}")]
    Unavailable { url: String, reason: String },

    /// The remote OPA refused the query (4xx), e.g. because it considers the input invalid.
    #[error("policy engine at {url} rejected the query with status {status}: {message}")]
    Rejected {
        url: String,
        status: u16,
        message: String,
    },

    /// The OPA URL is not a valid http(s) URL.
    #[error("invalid OPA url {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

impl PolicyError {
    /// Whether the error is the caller's fault (bad input, unknown policy) rather than the
    /// platform's; HTTP front ends map these to 400.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::InvalidInput(_) | Self::UnknownPolicy(_))
    }

    /// Whether the engine's own time limit stopped the evaluation (a policy too slow for its
    /// input): HTTP front ends answer it like their own deadline, 503.
    pub fn is_timeout(&self) -> bool {
        // regorus reports its execution timer as text only.
        matches!(self, Self::Eval { message, .. } if message.contains("exceeded time limit"))
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Reshapes a regorus diagnostic (`error: \n--> file:line:col\n  | snippet\nerror: what`) into
/// `file:line:col: what` followed by the snippet, so the first line says everything.
pub(crate) fn tidy(message: &str) -> String {
    let location = message
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "));
    let what = message
        .lines()
        .rev()
        .find_map(|l| l.trim_start().strip_prefix("error: "))
        .filter(|w| !w.trim().is_empty());
    match (location, what) {
        (Some(location), Some(what)) => {
            let snippet: Vec<&str> = message.lines().filter(|l| l.contains('|')).collect();
            format!("{location}: {what}\n{}", snippet.join("\n"))
                .trim_end()
                .to_owned()
        }
        _ => message.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tidy_puts_location_and_reason_first() {
        let raw = "error: \n--> a.rego:6:1\n  |\n6 | }\n  | ^\nerror: expecting expression";
        assert_eq!(
            super::tidy(raw),
            "a.rego:6:1: expecting expression\n  |\n6 | }\n  | ^"
        );
        assert_eq!(super::tidy("  plain  "), "plain");
    }
}
