//! What each service's `GET /ready` checks ([`forge_http::Readiness`]): the dependencies it
//! cannot work without, under the names `/ready` reports them by.
//!
//! | service | checks |
//! | --- | --- |
//! | spawn | `store`, `bus`, `policy` |
//! | orchestrator | `engine`, `store`, `bus`, `policy` |
//! | worker | `engine`, `store`, `bus` |
//! | scoreboard | `store`, `bus`, `evidence` |
//! | observer | `bus` |
//! | runner | `engine`, `store` |
//! | opa | `policy` (its own engine: [`forge_policy::server::router`] registers it) |
//!
//! `engine` pings the lab runtime ([`Runtime::ping`]), `store` reads the state store
//! ([`Store::ping`]), `bus` asks the bus ([`Bus::ping`]), `evidence` checks the evidence store
//! can take a write ([`EvidenceStore::ping`]) and `policy` asks the engine the gates decide
//! through ([`PolicyEngine::check`]). Each is bounded by its backend's short timeout and by
//! [`forge_http::CHECK_TIMEOUT`].

use std::sync::Arc;

use axum::Router;
use forge_bus::Bus;
use forge_evidence::EvidenceStore;
use forge_http::{Readiness, Service};
use forge_policy::PolicyEngine;
use forge_runtime::Runtime;
use forge_store::Store;

use crate::platform::Backends;

/// A dependency a service's `/ready` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dependency {
    /// The lab runtime (the Docker Engine).
    Engine,
    /// The state store (SQLite or PostgreSQL).
    Store,
    /// The bus (in-process or NATS JetStream).
    Bus,
    /// The evidence store (a local directory or S3).
    Evidence,
    /// The policy engine (embedded or a remote OPA).
    Policy,
}

impl Dependency {
    /// The check's name in `/ready`'s answer.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Engine => "engine",
            Self::Store => "store",
            Self::Bus => "bus",
            Self::Evidence => "evidence",
            Self::Policy => "policy",
        }
    }

    /// What `service` depends on, in the order it registers the checks.
    pub fn of(service: Service) -> &'static [Dependency] {
        use Dependency::*;
        match service {
            Service::Spawn => &[Store, Bus, Policy],
            Service::Orchestrator => &[Engine, Store, Bus, Policy],
            Service::Worker => &[Engine, Store, Bus],
            Service::Scoreboard => &[Store, Bus, Evidence],
            Service::Observer => &[Bus],
            Service::Runner => &[Engine, Store],
            Service::Opa => &[Policy],
        }
    }
}

/// The backends a platform's services are checked against.
#[derive(Clone)]
pub struct Dependencies {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub evidence: Arc<dyn EvidenceStore>,
    /// `None` in a process that runs no lab service.
    pub runtime: Option<Arc<dyn Runtime>>,
    /// What the gates ask (the platform's, not the OPA endpoint's own engine).
    pub policy: Arc<dyn PolicyEngine>,
}

impl Dependencies {
    pub fn of(backends: &Backends) -> Self {
        Self {
            store: backends.store.clone(),
            bus: backends.bus.clone(),
            evidence: backends.evidence.clone(),
            runtime: backends.runtime.clone(),
            policy: backends.policy.clone(),
        }
    }

    /// The checks of `service` ([`Dependency::of`]) on these backends.
    pub fn readiness(&self, service: Service) -> Readiness {
        Dependency::of(service)
            .iter()
            .fold(Readiness::new(), |r, d| self.add(r, *d))
    }

    /// `app` of `service` with its `/ready` checks; the OPA endpoint's router brings its own.
    pub fn install(&self, service: Service, app: Router) -> Router {
        match service {
            Service::Opa => app,
            _ => self.readiness(service).install(app),
        }
    }

    fn add(&self, r: Readiness, dependency: Dependency) -> Readiness {
        let name = dependency.name();
        match dependency {
            Dependency::Engine => {
                let runtime = self.runtime.clone();
                r.check(name, move || {
                    let runtime = runtime.clone();
                    async move {
                        match runtime {
                            Some(rt) => rt.ping().await.map_err(|e| e.to_string()),
                            None => Err("this process has no lab runtime".to_owned()),
                        }
                    }
                })
            }
            Dependency::Store => {
                let store = self.store.clone();
                r.check(name, move || {
                    let store = store.clone();
                    async move { store.ping().await }
                })
            }
            Dependency::Bus => {
                let bus = self.bus.clone();
                r.check(name, move || {
                    let bus = bus.clone();
                    async move { bus.ping().await }
                })
            }
            Dependency::Evidence => {
                let evidence = self.evidence.clone();
                r.check(name, move || {
                    let evidence = evidence.clone();
                    async move { evidence.ping().await }
                })
            }
            Dependency::Policy => {
                let policy = self.policy.clone();
                r.check(name, move || {
                    let policy = policy.clone();
                    async move { policy.check().await }
                })
            }
        }
    }
}
