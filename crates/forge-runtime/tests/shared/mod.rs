//! Test support both test binaries include (`fake` and `runtime`): the fixture templates they
//! launch and the counters they read, so the fake and Docker tests use the same lab files and
//! count the same way.

use std::sync::OnceLock;

use forge_core::template::ScenarioTemplate;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A template from `tests/fixtures`.
pub fn fixture(name: &str) -> ScenarioTemplate {
    let path = format!(
        "{}/tests/fixtures/{name}",
        &*std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    forge_core::template::load(&path, &text)
        .unwrap_or_else(|e| panic!("fixture {name} invalid: {e}"))
}

/// Sum of a counter over all its labels. The first call installs the recorder (once per
/// process: metrics allows one global recorder), so call it before anything records.
pub fn counted(name: &str) -> u64 {
    static SNAP: OnceLock<Snapshotter> = OnceLock::new();
    let snap = SNAP.get_or_init(|| {
        let r = DebuggingRecorder::new();
        let s = r.snapshotter();
        r.install().expect("recorder installed once");
        s
    });
    snap.snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == name)
        .map(|(.., v)| if let DebugValue::Counter(c) = v { c } else { 0 })
        .sum()
}
