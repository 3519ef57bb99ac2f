//! Integration tests of forge-runtime against the real Docker Engine on this host.
//!
//! Safety: every container is labelled `forge.test_run=<run id>`, every namespace name carries
//! the run id, guards tear everything down even when an assertion fails, and network traffic
//! only goes to listeners the tests start (in labs, in a test namespace, on docker0's address).
//! Run as root: `cargo test -p forge-runtime --test runtime`.

#[path = "runtime/common.rs"]
mod common;
#[path = "runtime/conformance.rs"]
mod conformance;
#[path = "runtime/debian_images.rs"]
mod debian_images;
#[path = "runtime/egress.rs"]
mod egress;
#[path = "runtime/exec.rs"]
mod exec;
#[path = "runtime/hardening.rs"]
mod hardening;
#[path = "runtime/isolation.rs"]
mod isolation;
#[path = "runtime/lifecycle.rs"]
mod lifecycle;
#[path = "runtime/links.rs"]
mod links;
#[path = "shared/mod.rs"]
mod shared;
