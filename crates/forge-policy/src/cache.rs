//! Memoised decisions of the embedded engine.
//!
//! A gate is a pure function of (input, policies, data) unless a module calls a builtin whose
//! answer changes between calls, and an [`crate::EmbeddedEngine`] never changes its policies or
//! data after it is built. So a decision can be reused for the same canonical input: the training
//! gate in particular sees the same few templates on every spawn. A reused decision still gets a
//! fresh decision id and is still counted and audited; only the evaluation is skipped.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value};

use crate::PolicyName;
use crate::loader::Module;

/// Builtins whose result is not a function of their arguments; a module that mentions one turns
/// the cache off (a conservative textual check: a false positive only costs speed).
const NONDETERMINISTIC: [&str; 6] = [
    "time.now_ns",
    "rand.intn",
    "uuid.rfc4122",
    "http.send",
    "opa.runtime",
    "time.now",
];

/// The parts of a decision that depend only on the input.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub allow: bool,
    pub deny_reasons: Vec<String>,
    pub extra: Map<String, Value>,
}

#[derive(Debug)]
pub(crate) struct DecisionCache {
    capacity: usize,
    entries: Mutex<HashMap<(PolicyName, String), Outcome>>,
}

impl DecisionCache {
    /// A cache of up to `capacity` decisions, or `None` when caching is off or unsafe for
    /// `modules`.
    pub fn new(capacity: usize, modules: &[Module]) -> Option<Self> {
        let pure = !modules
            .iter()
            .any(|m| NONDETERMINISTIC.iter().any(|b| m.text.contains(b)));
        (capacity > 0 && pure).then(|| Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        })
    }

    pub fn get(&self, policy: PolicyName, input_hash: &str) -> Option<Outcome> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // The key is built only on a hit path's lookup; a String clone is cheaper than hashing
        // twice with a borrowed-key wrapper.
        entries.get(&(policy, input_hash.to_owned())).cloned()
    }

    pub fn put(&self, policy: PolicyName, input_hash: String, outcome: Outcome) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Wholesale reset instead of LRU bookkeeping: the working set (templates, tenants) is
        // small, and a reset only costs one re-evaluation per live input.
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert((policy, input_hash), outcome);
    }
}
