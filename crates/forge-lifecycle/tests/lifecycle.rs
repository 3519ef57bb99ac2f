//! The scenario life cycle without root or Docker: the whole platform (`Platform::start` with
//! every service, real SQLite, the in-process bus, the signed audit log, embedded policies) on
//! the fake runtime, driven over HTTP. State machine, ack-after-durable and redelivery, recovery
//! after a restart, timeout-versus-submit races, and the access rules of every route; then the
//! same platform on NATS JetStream and PostgreSQL (real servers the tests start on loopback).
//!
//! The Docker-backed end-to-end suite is the `docker` test binary (feature `docker`).

#[path = "lifecycle/access.rs"]
mod access;
#[path = "lifecycle/agents.rs"]
mod agents;
#[path = "support/api.rs"]
mod api;
#[path = "lifecycle/console.rs"]
mod console;
#[path = "lifecycle/create.rs"]
mod create;
#[path = "lifecycle/delivery.rs"]
mod delivery;
#[path = "lifecycle/distributed.rs"]
mod distributed;
#[path = "lifecycle/evidence.rs"]
mod evidence;
#[path = "lifecycle/feedback.rs"]
mod feedback;
#[path = "lifecycle/flows.rs"]
mod flows;
#[path = "lifecycle/harness.rs"]
mod harness;
#[path = "lifecycle/hosts.rs"]
mod hosts;
#[path = "lifecycle/instructor.rs"]
mod instructor;
#[path = "lifecycle/limits.rs"]
mod limits;
#[path = "lifecycle/llm.rs"]
mod llm;
#[path = "lifecycle/openapi.rs"]
mod openapi;
#[path = "lifecycle/pools.rs"]
mod pools;
#[path = "lifecycle/ready.rs"]
mod ready;
#[path = "lifecycle/recovery.rs"]
mod recovery;
#[path = "lifecycle/refunds.rs"]
mod refunds;
#[path = "lifecycle/telemetry.rs"]
mod telemetry;
#[path = "lifecycle/terminal.rs"]
mod terminal;
#[path = "lifecycle/web.rs"]
mod web;
