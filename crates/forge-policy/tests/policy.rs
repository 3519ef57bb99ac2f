//! Integration tests of the policy layer: one test binary, modules under tests/policy/.

#[path = "policy/access.rs"]
mod access;
#[path = "policy/common.rs"]
mod common;
#[path = "policy/errors.rs"]
mod errors;
#[path = "policy/observe.rs"]
mod observe;
#[path = "policy/remote.rs"]
mod remote;
#[path = "policy/robustness.rs"]
mod robustness;
#[path = "policy/runner.rs"]
mod runner;
#[path = "policy/spec_v0.rs"]
mod spec_v0;
#[path = "policy/strict.rs"]
mod strict;
#[path = "policy/vm.rs"]
mod vm;
