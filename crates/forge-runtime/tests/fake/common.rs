//! Shared plumbing: the fixtures (the same files the Docker tests launch) and a launched lab.

use forge_core::ScenarioId;
use forge_runtime::fake::FakeRuntime;
use forge_runtime::{LabHandle, LabSpec, Runtime};

pub use crate::shared::fixture;

/// Launches `name` under a fresh scenario id.
pub async fn launch(rt: &FakeRuntime, name: &str) -> LabHandle {
    let spec = LabSpec::new(ScenarioId::generate(), "tenant-test", fixture(name));
    rt.launch(spec).await.expect("launch")
}

/// A fresh fake with `name` launched on it, for tests of one lab.
pub async fn launched(name: &str) -> (FakeRuntime, ScenarioId) {
    let rt = FakeRuntime::default();
    let scn = launch(&rt, name).await.scenario_id;
    (rt, scn)
}
