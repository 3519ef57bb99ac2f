//! The agent timeline: what a lab's agents asked to do, what the action gate decided, and
//! what happened, in order. It travels in the evidence bundle as an `agent_timeline` artifact.
//!
//! Entries are hash-chained (each names the SHA-256 of the one before, and its own over its
//! content), so the offline verifier can tell an edited, dropped or reordered entry even where
//! the bundle's hashes were recomputed to match; the bundle's signature covers the whole file.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `schema` of a timeline document.
pub const TIMELINE_SCHEMA: &str = "frostgate.forge/agent-timeline/v1";
/// The artifact's name in a bundle.
pub const TIMELINE_ARTIFACT: &str = "agents.timeline.json";
/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the gate said about one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateVerdict {
    pub allow: bool,
    /// Empty when allowed.
    pub reasons: Vec<String>,
    /// The policy decision's id (also in the `policy.decision` audit event); empty when no
    /// decision could be had (engine unavailable: the action is denied).
    pub decision_id: String,
}

/// What came of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    /// Denied by the gate (or the runner's own budget check): nothing ran.
    Denied,
    /// Ran and exited 0.
    Succeeded,
    /// Ran and failed (non-zero exit, timeout): the attack did not work.
    Failed,
    /// Could not be run (engine error, container gone).
    Error,
}

/// One action attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub agent: String,
    pub role: String,
    pub action: String,
    /// The DSL kind (`ssh_guess`, `block`, …).
    pub kind: String,
    /// The gate's kind (`connect`, `exec`, …).
    pub gate_kind: String,
    pub target: String,
    pub gate: GateVerdict,
    pub outcome: ActionOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// What the tool printed, cut to a few KiB.
    #[serde(default)]
    pub output: String,
    /// Exploits run in this lab after this entry.
    pub exploits_used: u32,
    pub prev: String,
    pub hash: String,
}

impl TimelineEntry {
    /// SHA-256 (hex) of the entry's JSON with `hash` empty.
    pub fn compute_hash(&self) -> String {
        let mut e = self.clone();
        e.hash = String::new();
        let bytes = serde_json::to_vec(&e).expect("a timeline entry serialises");
        hex::encode(Sha256::digest(bytes))
    }
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeline {
    pub schema: String,
    pub scenario_id: String,
    pub attacker_max_exploits: i64,
    pub entries: Vec<TimelineEntry>,
}

impl Timeline {
    pub fn new(scenario_id: impl Into<String>, attacker_max_exploits: i64) -> Self {
        Self {
            schema: TIMELINE_SCHEMA.into(),
            scenario_id: scenario_id.into(),
            attacker_max_exploits,
            entries: Vec::new(),
        }
    }

    /// Appends `e`, numbering and chaining it.
    pub fn push(&mut self, mut e: TimelineEntry) -> &TimelineEntry {
        e.seq = self.entries.len() as u64;
        e.prev = self
            .entries
            .last()
            .map_or_else(|| GENESIS.to_owned(), |l| l.hash.clone());
        e.hash = e.compute_hash();
        self.entries.push(e);
        self.entries.last().expect("just pushed")
    }

    /// The artifact's bytes: pretty JSON plus a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("a timeline serialises");
        b.push(b'\n');
        b
    }

    /// Parses and checks a timeline artifact: schema, numbering, chain, hashes, and that no
    /// more exploits ran than the budget allowed.
    pub fn verify(bytes: &[u8]) -> Result<Timeline, String> {
        let t: Timeline =
            serde_json::from_slice(bytes).map_err(|e| format!("not an agent timeline: {e}"))?;
        if t.schema != TIMELINE_SCHEMA {
            return Err(format!("schema `{}` is not {TIMELINE_SCHEMA}", t.schema));
        }
        let mut prev = GENESIS.to_owned();
        let mut used = 0u32;
        for (i, e) in t.entries.iter().enumerate() {
            if e.seq != i as u64 {
                return Err(format!("entry {i} is numbered {}", e.seq));
            }
            if e.prev != prev {
                return Err(format!(
                    "entry {i} does not follow entry {}",
                    i.wrapping_sub(1)
                ));
            }
            if e.compute_hash() != e.hash {
                return Err(format!("entry {i} does not match its hash"));
            }
            let ran = e.outcome != ActionOutcome::Denied;
            if ran && !e.gate.allow {
                return Err(format!(
                    "entry {i} ran without an allow from the action gate"
                ));
            }
            if e.gate_kind == "exploit" && ran {
                used += 1;
            }
            if e.exploits_used != used {
                return Err(format!(
                    "entry {i} counts {} exploits, the entries before it {used}",
                    e.exploits_used
                ));
            }
            prev = e.hash.clone();
        }
        if i64::from(used) > t.attacker_max_exploits {
            return Err(format!(
                "{used} exploits ran, more than attacker_max_exploits {}",
                t.attacker_max_exploits
            ));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(gate_kind: &str, allow: bool, outcome: ActionOutcome, used: u32) -> TimelineEntry {
        TimelineEntry {
            seq: 0,
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            agent: "red".into(),
            role: "attacker".into(),
            action: "x".into(),
            kind: "exploit".into(),
            gate_kind: gate_kind.into(),
            target: "10.0.0.5".into(),
            gate: GateVerdict {
                allow,
                reasons: vec![],
                decision_id: "d".into(),
            },
            outcome,
            exit_code: None,
            output: String::new(),
            exploits_used: used,
            prev: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_chained_timeline_verifies_and_an_edit_does_not() {
        let mut t = Timeline::new("scn-000000000001", 1);
        t.push(entry("exploit", true, ActionOutcome::Succeeded, 1));
        t.push(entry("exploit", false, ActionOutcome::Denied, 1));
        assert!(Timeline::verify(&t.to_bytes()).is_ok());
        let edited = String::from_utf8(t.to_bytes())
            .unwrap()
            .replace("\"denied\"", "\"succeeded\"");
        assert!(Timeline::verify(edited.as_bytes()).is_err());
        let mut dropped = t.clone();
        dropped.entries.remove(0);
        assert!(Timeline::verify(&dropped.to_bytes()).is_err());
    }

    #[test]
    fn more_exploits_than_the_budget_do_not_verify() {
        let mut t = Timeline::new("scn-000000000001", 0);
        t.push(entry("exploit", true, ActionOutcome::Succeeded, 1));
        let err = Timeline::verify(&t.to_bytes()).unwrap_err();
        assert!(err.contains("more than attacker_max_exploits"), "{err}");
    }
}
