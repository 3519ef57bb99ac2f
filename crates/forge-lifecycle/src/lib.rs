//! The scenario life cycle of FrostGate Forge (design.md §5), one module per spec service:
//!
//! - [`orchestrator`] (:8083): training gate, lab launch, state machine, timeouts, teardown,
//!   recovery after a crash;
//! - [`worker`] (:8084): checks, submissions, evidence collection, the learner's terminal;
//! - [`runner`] (:8087): the deterministic evaluator of success criteria and playbooks;
//! - [`scoreboard`] (:8086): score, evidence bundle, signature, score API;
//! - [`observer`] (:8085): telemetry hygiene, fairness metrics, audit key endpoints;
//! - [`access`]: the learner's access page on the spawn service's port;
//! - [`platform`]: all of them (plus the spawn service and the OPA endpoint) in one process,
//!   which is `forge up`.
//!
//! The services talk over the bus only ([`messages`]), so each can run in its own process in
//! distributed mode; in embedded mode they share one in-process bus.

pub mod access;
pub mod messages;
pub mod observer;
pub mod orchestrator;
pub mod platform;
pub mod runner;
pub mod scoreboard;
pub mod worker;
