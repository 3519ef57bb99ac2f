//! Warm pools (docs/design.md §8): labs launched ahead of time for a template, not yet anyone's
//! scenario, and the pool claims counted per template.
//!
//! A warm lab is launched under the scenario id it will have: the spawn that takes it creates
//! its scenario with that id, so nothing in the lab (container names, labels, the fabric
//! namespace) has to be renamed, and a claimed lab is the same lab a cold spawn would have built.

use chrono::{DateTime, Utc};
use forge_core::ScenarioId;
use serde::{Deserialize, Serialize};

/// A lab in a warm pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmLab {
    /// The id the lab was launched under; the scenario that takes it gets this id.
    pub scenario_id: ScenarioId,
    pub template: String,
    /// The template's content digest when the lab was launched: a spawn takes only labs of the
    /// template it resolved, so a changed template drains its pool.
    pub template_digest: String,
    /// The lab host whose engine runs it.
    pub host_id: String,
    pub network_id: String,
    pub containers: Vec<String>,
    /// When it was launched, set up and healthy.
    pub ready_at: DateTime<Utc>,
}

/// Claims of one template's pool since the store was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolClaims {
    pub template: String,
    /// Spawns that took a warm lab.
    pub hits: u64,
    /// Spawns of a pooled template that found none and were launched cold.
    pub misses: u64,
}
