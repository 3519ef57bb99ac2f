//! Tests of the in-memory [`forge_runtime::fake::FakeRuntime`]: the runtime conformance suite,
//! its test controls, and the supervisor driven through it. No root, no Docker: this binary
//! passes with `DOCKER_HOST=unix:///nonexistent`.
//! `cargo test -p forge-runtime --features fake --test fake`.

#[path = "fake/common.rs"]
mod common;
#[path = "fake/conformance.rs"]
mod conformance;
#[path = "fake/controls.rs"]
mod controls;
#[path = "shared/mod.rs"]
mod shared;
#[path = "fake/supervisor.rs"]
mod supervisor;
