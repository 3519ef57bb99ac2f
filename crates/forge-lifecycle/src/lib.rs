//! The scenario life cycle of FrostGate Forge (docs/design.md §5), one module per spec service:
//!
//! - [`orchestrator`] (:8083): training gate, lab launch, state machine, timeouts, teardown,
//!   recovery after a crash;
//! - [`worker`] (:8084): checks, submissions, evidence collection, the learner's terminal;
//! - [`runner`] (:8087): the deterministic evaluator of success criteria and playbooks;
//! - [`scoreboard`] (:8086): score, evidence bundle, signature, score API;
//! - [`observer`] (:8085): telemetry hygiene, fairness metrics, audit key endpoints;
//! - [`telemetry`]: what every service publishes for the observer (logs, metrics, audit
//!   events), in embedded and distributed mode alike;
//! - [`agents`]: the runner of a lab's scripted attackers and defenders, under the action gate;
//! - [`llm`]: LLM proposals (commands, hints) behind the LLM gate, optional;
//! - [`access`]: the learner's access page on the spawn service's port;
//! - [`authz`]: the one check of who may do what to a scenario;
//! - [`readiness`]: what each service's `/ready` checks (engine, store, bus, evidence, policy);
//! - [`platform`]: all of them (plus the spawn service and the OPA endpoint) in one process,
//!   which is `forge up`, on backends the caller passes in.
//!
//! The services talk over the bus only (`forge_bus::messages`), so each can run in its own
//! process in distributed mode; in embedded mode they share one in-process bus.

pub mod access;
pub mod agents;
pub mod authz;
pub mod llm;
pub mod observer;
pub mod orchestrator;
pub mod platform;
pub mod readiness;
pub mod runner;
pub mod scoreboard;
pub mod telemetry;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use forge_bus::{Bus, ConsumerConfig, Outcome, consume};
use forge_core::ScenarioId;
use forge_http::Service;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::authz::ScenarioAccess;

/// How long a message whose handling failed (store or bus unavailable, policy engine down)
/// waits before it is delivered again, in every service.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The outcome of handling one message about `id`: ack when done, otherwise a logged retry.
pub(crate) fn settle<E: std::fmt::Display>(
    done: Result<(), E>,
    subject: &str,
    id: &ScenarioId,
) -> Outcome {
    match done {
        Ok(()) => Outcome::Ack,
        Err(e) => {
            tracing::warn!(error = %e, subject, scenario_id = %id, "message will be redelivered");
            Outcome::Retry(RETRY_AFTER)
        }
    }
}

/// A lifecycle service's finished router: its `routes` (state applied) with the tenant's rate
/// limit, the token verifier and the scenario access check ([`ScenarioAccess::install`]), plus
/// `/health`, `/ready`, `/metrics` and `/openapi.json`, which stay open and unlimited, then the
/// body limit, JSON fallbacks and request ids.
pub(crate) fn service_router(
    service: Service,
    openapi: utoipa::openapi::OpenApi,
    routes: Router,
    access: &ScenarioAccess,
    body_limit: usize,
) -> Router {
    let routes = access
        .install(routes)
        .merge(forge_http::common_routes(service, openapi));
    forge_http::finish(routes, body_limit)
}

/// Runs the one consumer loop for a service until `shutdown`: every message on `config`'s
/// durable, parsed as `T`, goes to `handle(service, message)`, whose outcome settles it.
pub(crate) fn spawn_consumer<S, T, F, Fut>(
    service: &S,
    bus: Arc<dyn Bus>,
    config: ConsumerConfig,
    shutdown: watch::Receiver<bool>,
    handle: F,
) -> JoinHandle<()>
where
    S: Clone + Send + Sync + 'static,
    T: DeserializeOwned + Send + 'static,
    F: Fn(S, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let service = service.clone();
    tokio::spawn(consume(bus, config, shutdown, move |msg: T, _| {
        handle(service.clone(), msg)
    }))
}

/// Runs `tick` every `every` (the first at once; a slow tick delays the next, never stacks
/// them) until `shutdown` turns true: the periodic work of the services (host leases, the bus
/// backlog, audit log checks).
pub(crate) fn spawn_every<F, Fut>(
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut tick: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            tick().await;
        }
    })
}
