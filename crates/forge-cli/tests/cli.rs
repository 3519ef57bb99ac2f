//! The `forge` binary end to end: each test runs the built binary with a temp data dir and a
//! cleared environment, and checks what it prints and its exit code. Nothing here needs Docker
//! (the bus commands start their own `nats-server`) except the local cluster's test, built with
//! the feature `docker` (root, the Docker Engine).

#[path = "cli/billing.rs"]
mod billing;
#[path = "cli/bus.rs"]
mod bus;
#[cfg(feature = "docker")]
#[path = "cli/cluster.rs"]
mod cluster;
#[path = "cli/config.rs"]
mod config;
#[cfg(feature = "docker")]
#[path = "cli/doctor.rs"]
mod doctor;
#[path = "cli/evidence.rs"]
mod evidence;
#[path = "cli/policy.rs"]
mod policy;
#[cfg(feature = "docker")]
#[path = "cli/prometheus.rs"]
mod prometheus;
#[path = "cli/token.rs"]
mod token;

use std::path::{Path, PathBuf};
use std::process::Command;

/// What one run of `forge` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, code, "{self:#?}");
        self
    }
}

/// `forge --data-dir DIR` with an empty environment (only what the test sets).
pub fn forge(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forge"));
    cmd.env_clear().arg("--data-dir").arg(data_dir);
    cmd
}

pub fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("forge runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

/// The repository's top directory.
pub fn repo() -> PathBuf {
    Path::new(&*std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../..")
}
