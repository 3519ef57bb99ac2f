//! Clean-up of what tests and benchmarks left on the local Docker Engine: labs torn down through
//! the runtime, containers removed by label with the `docker` CLI. Everything here runs from
//! drop guards, so it works without an ambient tokio runtime (a guard may drop inside one, or
//! while a test panics), ignores failures (there is nothing left to report them to) and never
//! panics on the caller's thread.

use std::collections::BTreeSet;
use std::future::Future;
use std::process::Command;

use forge_core::ScenarioId;
use forge_runtime::{DockerRuntime, Runtime};

/// Runs `work` to completion on a thread of its own with a fresh current-thread runtime, and
/// waits for it. A drop guard cannot `block_on` the runtime it may be dropped in, and a panic
/// in `work` must not abort an unwinding test, so it stays on that thread.
pub fn block_on_own_thread<F, Fut>(work: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(work());
    })
    .join();
}

/// Tears down, through a fresh connection to the local engine, the labs in `ids` and, with
/// `label = Some((key, value))`, every listed lab whose label `key` is `value`. Waits until
/// done; see [`block_on_own_thread`].
pub fn teardown_labs(label: Option<(&str, &str)>, ids: impl IntoIterator<Item = String>) {
    let label = label.map(|(k, v)| (k.to_owned(), v.to_owned()));
    let mut ids: BTreeSet<String> = ids.into_iter().collect();
    block_on_own_thread(move || async move {
        let Ok(docker) = DockerRuntime::connect().await else {
            return;
        };
        // Only list when asked: a guard of one lab knows its id and needs no listing.
        if let Some((key, value)) = label
            && let Ok(labs) = docker.list_labs().await
        {
            ids.extend(
                labs.into_iter()
                    .filter(|l| l.labels.get(&key) == Some(&value))
                    .map(|l| l.scenario_id),
            );
        }
        for id in ids {
            if let Ok(sid) = id.parse::<ScenarioId>() {
                let _ = docker.teardown(&sid).await;
            }
        }
    });
}

/// The ids `docker <args>` prints (`ps -q …`, `network ls -q …`), one a word.
pub fn docker_ids(args: &[&str]) -> std::io::Result<Vec<String>> {
    let out = Command::new("docker").args(args).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// `docker rm -f` every container, in any state, labelled `label` (`key=value`): what a
/// teardown through the runtime missed.
pub fn remove_labelled_containers(label: &str) {
    let filter = format!("label={label}");
    let Ok(ids) = docker_ids(&["ps", "-aq", "--filter", &filter]) else {
        return;
    };
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
}
