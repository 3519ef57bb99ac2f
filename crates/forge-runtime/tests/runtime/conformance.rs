//! The runtime conformance suite against the Docker backend. Every lab carries the run id and
//! a per-check case label; the harness tears down that case's labs when it is dropped, also
//! when a check panics. Files are put in place through the runtime's exec (the harness
//! default).

use std::collections::BTreeMap;

use async_trait::async_trait;
use forge_core::ScenarioId;
use forge_core::template::ScenarioTemplate;
use forge_runtime::Runtime;
use forge_runtime::conformance::ConformanceHarness;
use forge_testkit::sweep;

use crate::common::*;

struct DockerHarness {
    case: String,
}

impl DockerHarness {
    fn new() -> Self {
        let tail = &uuid::Uuid::new_v4().simple().to_string()[..8];
        Self {
            case: format!("conformance-{}-{tail}", run_id()),
        }
    }
}

#[async_trait]
impl ConformanceHarness for DockerHarness {
    fn template(&self) -> ScenarioTemplate {
        fixture("flat-lab.yaml")
    }

    fn scenario_id(&self) -> ScenarioId {
        scenario_id()
    }

    fn labels(&self) -> BTreeMap<String, String> {
        [
            (TEST_RUN_LABEL.to_owned(), run_id().to_owned()),
            (TEST_CASE_LABEL.to_owned(), self.case.clone()),
            // A host of its own, as in `common::spec`.
            ("forge.host".to_owned(), format!("test-{}", run_id())),
        ]
        .into()
    }

    async fn crash(&self, _rt: &dyn Runtime, scenario: &ScenarioId, container: &str) {
        run(&[
            "docker",
            "kill",
            &forge_runtime::container_name(scenario, container),
        ]);
    }
}

impl Drop for DockerHarness {
    fn drop(&mut self) {
        sweep::teardown_labs(Some((TEST_CASE_LABEL, &self.case)), []);
    }
}

forge_runtime::runtime_conformance!((runtime().await, DockerHarness::new()));
