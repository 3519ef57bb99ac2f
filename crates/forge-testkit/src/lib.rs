//! Dev and bench-only support for FrostGate Forge: code shared by benchmarks and tests of
//! several crates that must not ship in a production library. Use it only from
//! `[dev-dependencies]`.
//!
//! - [`cli_baseline`]: the plain-`docker`-CLI lab the launch and spawn benchmarks are measured
//!   against, and the percentile helpers they print with.
//! - [`cmd`]: running a host command that must succeed.
//! - [`sweep`]: removing what a test or benchmark left on the engine (labs, labelled
//!   containers), from drop guards.
//! - [`servers`]: real backend servers for a test (nats-server with JetStream, PostgreSQL), on
//!   free loopback ports, stopped by their PID.

pub mod cli_baseline;
pub mod cmd;
pub mod servers;
pub mod sweep;
