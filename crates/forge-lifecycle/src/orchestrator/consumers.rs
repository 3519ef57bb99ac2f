//! What the orchestrator consumes: `spawn.request` (build the lab, or adopt the warm lab the
//! spawn took when it names this host; pulled only while this host has a free slot), `scenario.scored` (record the end; the owning host tears the lab down),
//! and the runtime supervisor's lab events (fail a lab that could not be kept whole). Bus
//! messages go through the one consumer loop (`forge_bus::consume`) and are acked only once the
//! state change they cause is durable. Every host shares the `orchestrator` durables: a message
//! goes to one of them.

use forge_bus::messages::{EndReason, ScenarioScored, SpawnRequested};
use forge_bus::{ConsumerConfig, Delivery, consume, subjects};
use forge_core::{ScenarioId, ScenarioStatus};
use forge_runtime::LabEvent;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::Orchestrator;
use crate::{settle, spawn_consumer};

/// `spawn.request` handlers at once; launches themselves are bounded by
/// `OrchestratorConfig::max_parallel_launches`, so this only keeps admission from queueing
/// behind a slow launch.
const SPAWN_CONCURRENCY: usize = 64;
const DURABLE: &str = "orchestrator";

impl Orchestrator {
    /// Runs the consumers until `shutdown` turns true: `spawn.request`, `scenario.scored`, and
    /// the runtime supervisor's lab events when given; and the host's lease and reconcile loop.
    pub fn run(
        &self,
        shutdown: watch::Receiver<bool>,
        lab_events: Option<mpsc::UnboundedReceiver<LabEvent>>,
    ) -> JoinHandle<()> {
        let bus = self.deps().bus.clone();
        let config = ConsumerConfig::new(subjects::SPAWN_REQUEST, DURABLE)
            .concurrency(SPAWN_CONCURRENCY)
            .gate(self.inner.slots.gate());
        let this = self.clone();
        let spawns = tokio::spawn(consume(
            bus.clone(),
            config,
            shutdown.clone(),
            move |req: SpawnRequested, d: Delivery| {
                let this = this.clone();
                async move {
                    let slot = d.reserved.take().expect("the spawn consumer is gated");
                    let span =
                        crate::authz::scenario_span(subjects::SPAWN_REQUEST, &req.scenario_id);
                    span.record("tenant_id", req.tenant_id.as_str());
                    span.record("request_id", req.request_id.as_str());
                    // A retried spawn's message may not name the warm lab the first try
                    // started: the pool knows it.
                    let warm = req
                        .warm_host
                        .as_deref()
                        .or_else(|| this.is_pool_lab(&req.scenario_id).then_some(this.host_id()));
                    let done = match warm {
                        None => {
                            tracing::Instrument::instrument(
                                this.spawn_in(&req.scenario_id, slot),
                                span,
                            )
                            .await
                        }
                        Some(h) if h == this.host_id() => {
                            tracing::Instrument::instrument(
                                this.adopt_warm(&req.scenario_id, Some(slot)),
                                span,
                            )
                            .await
                        }
                        // Another host's warm lab: that host adopts it on its next tick.
                        Some(_) => Ok(()),
                    };
                    settle(done, subjects::SPAWN_REQUEST, &req.scenario_id)
                }
            },
        ));
        let host = self.run_host(shutdown.clone());
        let pools = self.run_pools(shutdown.clone());
        let config = ConsumerConfig::new(subjects::SCENARIO_SCORED, DURABLE);
        let scored = spawn_consumer(
            self,
            bus,
            config.concurrency(8),
            shutdown.clone(),
            |o, s: ScenarioScored| async move {
                let to = match s.reason {
                    EndReason::Submit => ScenarioStatus::Completed,
                    EndReason::Timeout => ScenarioStatus::Timeout,
                };
                let span = crate::authz::scenario_span(subjects::SCENARIO_SCORED, &s.scenario_id);
                let done =
                    tracing::Instrument::instrument(o.finish(&s.scenario_id, to, None), span).await;
                settle(done, subjects::SCENARIO_SCORED, &s.scenario_id)
            },
        );
        let this = self.clone();
        tokio::spawn(async move {
            if let Some(rx) = lab_events {
                this.consume_lab_events(rx, shutdown).await;
            }
            let _ = tokio::join!(spawns, scored, host, pools);
            this.cancel_all_timers();
        })
    }

    async fn consume_lab_events(
        &self,
        mut rx: mpsc::UnboundedReceiver<LabEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let ev = tokio::select! {
                e = rx.recv() => e,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let Some(ev) = ev else { return };
            match ev {
                LabEvent::Restarted {
                    scenario_id,
                    container,
                    attempt,
                } => {
                    tracing::info!(%scenario_id, %container, attempt, "lab container restarted and re-plumbed");
                }
                LabEvent::Failed {
                    scenario_id,
                    container,
                    reason,
                } => {
                    let Ok(id) = scenario_id.parse::<ScenarioId>() else {
                        continue;
                    };
                    if self.pool_lab_failed(&id).await {
                        continue;
                    }
                    let Ok(Some(rec)) = self.deps().store.get_any(&id).await else {
                        continue;
                    };
                    let why = format!("container {container} could not be kept running: {reason}");
                    let from = [ScenarioStatus::Creating, ScenarioStatus::Running];
                    if let Err(e) = self.fail(&rec, &from, &why).await {
                        tracing::warn!(error = %e, %scenario_id, "failing a broken lab");
                    }
                }
            }
        }
    }
}
