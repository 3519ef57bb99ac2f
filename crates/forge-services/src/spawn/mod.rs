//! forge_spawn_service (:8082): the front door (spec: Spawn Service API; docs/design.md §5).
//!
//! `POST /v1/spawn` → authenticate (JWT) → role `forge.spawn` → tenant from the token only →
//! per-tenant rate limit → validate body, request_id, track, template → claim the idempotency
//! key → spawn gate (policy) → training gate for the template (policy; a deny is a 403
//! before anything is stored or charged) → persist `pending` with its billing records → publish
//! `spawn.request` → audit → `201 {request_id, scenario_id, access_url, expires_at}`.
//! Plus `GET /health`, `GET /ready`, `GET /metrics`, `GET /openapi.json`. See docs/spawn-api.md.

pub mod api;
pub mod config;
pub mod gate;
mod handler;
pub mod request;
mod warm;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::routing::post;
use forge_auth::Verifier;
use forge_bus::Bus;
use forge_catalog::Catalog;
use forge_core::audit::AuditSink;
use forge_core::template::policy_input;
use forge_http::{Readiness, Service};
use forge_store::Store;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::billing::BillingMode;
use crate::billing::dispatcher::GatewayDispatcher;
use crate::ratelimit::RateLimiter;
use crate::tenants::TenantDirectory;

pub use api::{SpawnResponse, openapi};
pub use config::SpawnConfig;
pub use gate::{GateDecision, GateError, SpawnGate, StaticGate};

/// What the spawn service is built from; the caller chooses every backend.
pub struct SpawnDeps {
    pub config: SpawnConfig,
    pub verifier: Arc<Verifier>,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub gate: Arc<dyn SpawnGate>,
    pub audit: Arc<dyn AuditSink>,
    pub catalog: Arc<Catalog>,
    pub tenants: Arc<TenantDirectory>,
}

/// Router state of the spawn service. Cheap to clone.
#[derive(Clone)]
pub struct SpawnState {
    inner: Arc<Inner>,
    /// The checks behind `/ready` (none unless [`SpawnState::with_readiness`] set them).
    readiness: Readiness,
}

struct Inner {
    deps: SpawnDeps,
    limiter: RateLimiter,
    billing_wake: Arc<Notify>,
    /// The training gate's input for each catalog template, flattened once: the catalog does
    /// not change under a running service, and flattening a template is a serialisation of it.
    training_inputs: HashMap<String, serde_json::Value>,
}

impl SpawnState {
    pub fn new(deps: SpawnDeps) -> Self {
        Self {
            inner: Arc::new(Inner {
                training_inputs: deps
                    .catalog
                    .entries()
                    .map(|e| {
                        let t = &e.template;
                        (t.metadata.name.clone(), policy_input(t))
                    })
                    .collect(),
                deps,
                limiter: RateLimiter::new(),
                billing_wake: Arc::new(Notify::new()),
            }),
            readiness: Readiness::new(),
        }
    }

    /// The service with `readiness` behind its `/ready` (the dependencies its caller gave it:
    /// store, bus, the spawn gate's policy engine).
    pub fn with_readiness(self, readiness: Readiness) -> Self {
        Self { readiness, ..self }
    }

    pub fn config(&self) -> &SpawnConfig {
        &self.inner.deps.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.deps.store
    }

    /// Notified whenever a billing event is queued for the gateway.
    pub fn billing_wake(&self) -> Arc<Notify> {
        self.inner.billing_wake.clone()
    }

    fn deps(&self) -> &SpawnDeps {
        &self.inner.deps
    }
}

/// The spawn service's routes, ready to serve (or to merge into `forge up`'s listener set).
pub fn router(state: SpawnState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] with `extra` routes merged in before [`forge_http::finish`], so they share the body
/// limit, the JSON fallbacks and request ids.
fn router_with(state: SpawnState, extra: Router) -> Router {
    let limit = state.config().body_limit;
    let verifier = state.inner.deps.verifier.clone();
    let readiness = state.readiness.clone();
    let doc = openapi(&state.inner.deps.catalog);
    let api = Router::new()
        .route("/v1/spawn", post(handler::spawn))
        .with_state(state);
    let routes = forge_http::common_routes(Service::Spawn, doc)
        .merge(api)
        .merge(extra)
        .layer(Extension(verifier));
    readiness.install(forge_http::finish(routes, limit))
}

/// Serves the spawn service on `listener` until `shutdown` resolves, with its background work:
/// the billing gateway dispatcher (gateway mode) and the hourly purge of expired idempotency
/// keys. Returns once in-flight requests finished and the background tasks stopped.
pub async fn serve(
    listener: TcpListener,
    state: SpawnState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, Router::new(), shutdown).await
}

/// [`serve`] with more routes on the same port (the learner's access page in `forge up`).
pub async fn serve_with(
    listener: TcpListener,
    state: SpawnState,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();
    if state.config().billing.mode == BillingMode::Gateway {
        let dispatcher = GatewayDispatcher::new(
            state.store().clone(),
            state.config().billing.clone(),
            state.billing_wake(),
        )
        .map_err(std::io::Error::other)?;
        tasks.push(tokio::spawn(dispatcher.run(stopped())));
    }
    tasks.push(tokio::spawn(purge_idempotency_keys(
        state.store().clone(),
        stopped(),
    )));
    let app = router_with(state, extra);
    let result = forge_http::serve(listener, app, shutdown).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    result
}

async fn purge_idempotency_keys(store: Arc<dyn Store>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
        match store.purge_expired(chrono::Utc::now()).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "expired idempotency keys purged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
        }
    }
}
