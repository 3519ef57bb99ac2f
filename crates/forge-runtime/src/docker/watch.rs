//! What the supervisor needs from Docker: the engine's `die`/`oom` events of lab containers, the
//! stopped ones, a container's state, and killing a half-revived one.
//!
//! The event subscription asks for events `since` the moment `events` was called: bollard
//! sends the request only when the stream is first polled, and without `since` a death in
//! between would be lost. With it, "subscribe, then scan stopped containers" holds: a death
//! is seen by the stream, the scan, or both (the supervisor copes with both).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{EventsOptions, KillContainerOptions};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{DockerRuntime, labs};
use crate::error::{RuntimeError, status_of};
use crate::exec::{exec_err, inspect};
use crate::{ContainerState, RuntimeEvent, StoppedContainer, labels};

/// `label` filters: every lab container, narrowed by the caller's.
fn label_filter(label_filters: &[String]) -> Vec<String> {
    let mut l = vec![labels::SCENARIO_ID.to_owned()];
    l.extend(label_filters.iter().cloned());
    l
}

/// Now as Docker's `since` (`<seconds>.<nanoseconds>`).
fn now_since() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

pub(super) fn events(
    rt: &DockerRuntime,
    label_filters: &[String],
) -> BoxStream<'static, RuntimeEvent> {
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec!["die".to_owned(), "oom".to_owned()]),
        ("label".to_owned(), label_filter(label_filters)),
    ]);
    let opts = EventsOptions {
        since: Some(now_since()),
        until: None,
        filters: Some(filters),
    };
    rt.docker()
        .events(Some(opts))
        // An error ends the subscription like a dropped connection: callers re-subscribe.
        .take_while(|ev| {
            if let Err(e) = ev {
                tracing::debug!(error = %e, "docker event stream ended");
            }
            futures::future::ready(ev.is_ok())
        })
        .filter_map(|ev| {
            futures::future::ready(ev.ok().and_then(|ev| {
                let attrs = ev.actor?.attributes.unwrap_or_default();
                let scenario_id = attrs.get(labels::SCENARIO_ID)?.clone();
                let container = attrs.get(labels::CONTAINER)?.clone();
                match ev.action.as_deref()? {
                    "die" => Some(RuntimeEvent::Died {
                        scenario_id,
                        container,
                    }),
                    "oom" => Some(RuntimeEvent::OomKilled {
                        scenario_id,
                        container,
                    }),
                    _ => None,
                }
            }))
        })
        .boxed()
}

pub(super) async fn stopped_containers(
    rt: &DockerRuntime,
    label_filters: &[String],
) -> Result<Vec<StoppedContainer>, RuntimeError> {
    let filters = HashMap::from([
        ("label".to_owned(), label_filter(label_filters)),
        (
            "status".to_owned(),
            vec!["exited".to_owned(), "dead".to_owned()],
        ),
    ]);
    let found = labs::list_containers(rt, filters, "list stopped containers").await?;
    Ok(found
        .into_iter()
        .filter_map(|c| {
            let l = c.labels?;
            Some(StoppedContainer {
                scenario_id: l.get(labels::SCENARIO_ID)?.clone(),
                container: l.get(labels::CONTAINER)?.clone(),
            })
        })
        .collect())
}

pub(super) async fn container_state(
    rt: &DockerRuntime,
    target: &str,
    display: &str,
    scenario: &str,
) -> Result<ContainerState, RuntimeError> {
    let info = inspect(rt.docker(), target, display, scenario).await?;
    Ok(info
        .state
        .and_then(|s| s.status)
        .map(|s| ContainerState::from_engine(s.as_ref()))
        .unwrap_or(ContainerState::Unknown))
}

pub(super) async fn kill(
    rt: &DockerRuntime,
    target: &str,
    display: &str,
    scenario: &str,
) -> Result<(), RuntimeError> {
    match rt
        .docker()
        .kill_container(target, None::<KillContainerOptions>)
        .await
    {
        Ok(()) => Ok(()),
        // Not running: already what the caller wants.
        Err(e) if status_of(&e) == Some(409) => Ok(()),
        Err(e) => Err(exec_err(display, scenario, e)),
    }
}
