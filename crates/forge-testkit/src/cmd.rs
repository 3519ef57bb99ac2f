//! Host commands (`docker`, `ip`) run by tests and benchmarks, where a failure is a failed test.

use std::process::Command;

/// Runs `argv` and returns its stdout; panics with its stderr when it fails.
pub fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", argv[0]));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
