//! The front door of FrostGate Forge, on the HTTP plumbing of `forge-http`:
//!
//! - [`spawn`]: forge_spawn_service (:8082), the front door;
//! - [`tenants`], [`ratelimit`], [`billing`]: what the front door enforces and records.
//!
//! Every service takes its backends (store, bus, policy gate, audit sink) as trait objects, so
//! `forge up` (SQLite, in-process bus) and distributed mode run the same code.

pub mod billing;
pub mod ratelimit;
pub mod spawn;
pub mod tenants;
