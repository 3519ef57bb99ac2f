//! Pure domain core of FrostGate Forge: identifiers, the spec's data models, the scenario DSL
//! (parse, validate, flatten for policy input), playbooks and scoring.
//!
//! Invariant: nothing in this crate does I/O (no files, sockets, clocks other than values passed
//! in, processes). Callers read bytes and hand them in; this crate only computes.

pub mod audit;
pub mod ids;
pub mod model;
pub mod playbook;
pub mod scoring;
pub mod template;
pub mod timeline;

pub use ids::{IdError, RunId, ScenarioId};
pub use model::{
    Artifact, ArtifactType, CriterionResult, EvidenceBundle, ScenarioState, ScenarioStatus,
    ScoreResult, SpawnRequest, Track,
};
pub use scoring::calculate_score;
