//! The policy layer of FrostGate Forge.
//!
//! Four gates decide what the platform may do (spec: OPA Policy Structure):
//! [`PolicyName::TrainingGate`] (may this template run), [`PolicyName::SpawnGate`] (may this
//! caller spawn now), [`PolicyName::ActionGate`] (may this agent act in its lab) and
//! [`PolicyName::LlmGate`] (may this LLM proposal run, or does a human need to look first).
//! They are Rego modules in `policies/`, evaluated by one of two backends behind
//! [`PolicyEngine`]:
//!
//! - [`EmbeddedEngine`]: regorus in-process, the bundled policies compiled into the binary plus
//!   operator policies (Rego v0 or v1) from a directory;
//! - [`RemoteEngine`]: a real OPA (or `forge serve opa`) over the Data API at `OPA_URL`, with a
//!   bearer token from a [`TokenSource`] (`OPA_TOKEN`, or tokens the platform mints itself).
//!
//! Every decision is a [`Decision`] with actionable `deny_reasons`, counted in
//! `forge_opa_decisions_total{policy,result}` and audited as a `policy.decision` event.
//! [`server`] serves an embedded engine over OPA's Data API; [`run_tests`] runs Rego unit tests
//! like `opa test` (`forge policy test`, in forge-cli).

mod cache;
mod convert;
mod decision;
mod embedded;
mod engine;
mod error;
pub mod loader;
mod names;
mod remote;
mod testing;
mod token;
mod vm;

pub mod server;

pub use decision::{Decision, DecisionContext, DecisionObserver, input_hash};
pub use embedded::{EmbeddedEngine, EmbeddedEngineBuilder};
pub use engine::{PolicyConfig, PolicyEngine};
pub use error::PolicyError;
pub use names::PolicyName;
pub use remote::{DEFAULT_TIMEOUT, RemoteEngine};
pub use testing::{TestReport, TestResult, run_tests};
pub use token::{MintedToken, StaticToken, TokenSource};
