//! End-to-end life-cycle tests over HTTP against a real platform (everything `forge up` runs,
//! on ephemeral ports) on the real Docker Engine: every track solved to a verified score,
//! recovery after a SIGKILL of the whole process, and `/ready` following the engine. They need
//! root and Docker, so they only build with the `docker` feature (`.ci/run` enables it); the
//! state machine, races, recovery logic and access rules are covered without Docker in the
//! `lifecycle` test binary.
//!
//! Every test labels its labs with its own run id (`forge.test_run`), narrows the supervisor to
//! them, uses a tempdir data dir, and removes every container and namespace it created through
//! a drop guard, also when an assertion fails.

#[path = "docker/agents.rs"]
mod agents;
#[path = "support/api.rs"]
mod api;
#[path = "docker/common.rs"]
mod common;
#[path = "docker/crash.rs"]
mod crash;
#[path = "docker/flows.rs"]
mod flows;
#[path = "docker/ready.rs"]
mod ready;
#[path = "docker/spec_example.rs"]
mod spec_example;
