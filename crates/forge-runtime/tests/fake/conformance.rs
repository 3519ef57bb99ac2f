//! The runtime conformance suite against the fake, with the exec answers a real shell gives
//! scripted through `on_exec`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use forge_core::ScenarioId;
use forge_core::template::ScenarioTemplate;
use forge_runtime::conformance::ConformanceHarness;
use forge_runtime::fake::FakeRuntime;
use forge_runtime::{ExecResult, Runtime};

use crate::common::fixture;

pub struct FakeHarness {
    fake: FakeRuntime,
}

impl FakeHarness {
    pub fn new(fake: FakeRuntime) -> Self {
        fake.on_exec(|call| {
            let (exit_code, stdout) = match call.command.as_str() {
                "echo hello" => (0, "hello\n"),
                "exit 3" => (3, ""),
                _ => return None,
            };
            Some(ExecResult {
                exit_code,
                stdout: stdout.into(),
                stderr: String::new(),
                truncated: false,
                duration: Duration::from_millis(1),
                timed_out: false,
            })
        });
        Self { fake }
    }
}

#[async_trait]
impl ConformanceHarness for FakeHarness {
    fn template(&self) -> ScenarioTemplate {
        fixture("flat-lab.yaml")
    }

    fn labels(&self) -> BTreeMap<String, String> {
        [("forge.test_run".to_owned(), "fake".to_owned())].into()
    }

    async fn put_file(
        &self,
        _rt: &dyn Runtime,
        scenario: &ScenarioId,
        container: &str,
        path: &str,
        bytes: &[u8],
    ) {
        self.fake.put_file(scenario, container, path, bytes);
    }

    async fn crash(&self, _rt: &dyn Runtime, scenario: &ScenarioId, container: &str) {
        self.fake.kill_container(scenario, container);
    }
}

forge_runtime::runtime_conformance!({
    let fake = FakeRuntime::default();
    (fake.clone(), FakeHarness::new(fake))
});
