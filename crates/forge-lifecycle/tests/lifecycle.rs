//! End-to-end life-cycle tests over HTTP against a real `Platform::start` (everything `forge up`
//! runs, on ephemeral ports) and the real Docker Engine (issue 7's acceptance list).
//!
//! Every test labels its labs with its own run id (`forge.test_run`), narrows the supervisor to
//! them, uses a tempdir data dir, and removes every container and namespace it created through
//! a drop guard, also when an assertion fails.

#[path = "lifecycle/common.rs"]
mod common;
#[path = "lifecycle/crash.rs"]
mod crash;
#[path = "lifecycle/flows.rs"]
mod flows;
