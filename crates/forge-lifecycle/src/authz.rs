//! The one scenario access check. Every route that takes a scenario id goes through
//! [`ScenarioAccess::authorize`]: load the scenario within the caller's tenant, decide by role
//! and ownership, and audit a refusal the same way every time.
//!
//! Who may do what (roles are the table in `forge_auth::roles`, all tenant-scoped):
//!
//! | action | allowed |
//! |---|---|
//! | [`Action::View`], [`Action::Operate`] | the scenario's owner, an instructor, the orchestrator role |
//! | [`Action::ReadScore`] | the scenario's owner; tenant-wide an instructor, the orchestrator role or `forge.score.read_all` |
//! | [`Action::RunPlaybook`] | an instructor or the orchestrator role (checked before any lookup) |
//! | [`Action::Supervise`] | an instructor or the orchestrator role (checked before any lookup) |
//!
//! Routes about a tenant's labs as a whole (the list of live labs, the lab hosts) take no id:
//! they call [`require_role`], a 403 naming the roles that would do.
//!
//! `forge.score.read` (the spec's learner role) grants no tenant-wide reading: a learner reads
//! the scores of their own scenarios and no classmate's. The observer role reads aggregate
//! telemetry and fairness statistics, not individual learners' results.
//!
//! Anyone else gets the same 404 as for an id that does not exist (no existence oracle across
//! tenants or owners). A refusal of an existing scenario, in this tenant or another, is counted
//! and audited as `access.denied` naming the caller, the scenario and the action, aggregated
//! per (tenant, caller, action) and window so probes cannot grow the audit log at will
//! ([`denials`]).
//!
//! Routes with an `{id}` path parameter take an [`Authorized<P>`] extractor (`P` names the
//! action) and get the caller and the scenario; others call [`ScenarioAccess::authorize`]. A
//! router gets the check and the token verifier as request extensions, and every authenticated
//! request the tenant's rate limit ([`limits`]), from [`ScenarioAccess::install`].

pub mod denials;
pub mod limits;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::{Extension, Router};
use forge_auth::{Caller, Verifier, roles};
use forge_core::ScenarioId;
use forge_core::audit::AuditSink;
use forge_http::{ApiError, Service};
use forge_services::tenants::TenantDirectory;
use forge_store::{ScenarioRecord, Store};

use self::denials::{DeniedAudit, Refusal};
use self::limits::{LimitLayer, TenantLimits};

/// What the caller wants to do with a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read its status and details.
    View,
    /// Work in the lab: check, submit, exec, terminal, end it.
    Operate,
    /// Read its score and bundle files.
    ReadScore,
    /// Run a standalone playbook in it (any container).
    RunPlaybook,
    /// Supervise it as its teacher: extend its time (the owner may not).
    Supervise,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Operate => "operate",
            Action::ReadScore => "read_score",
            Action::RunPlaybook => "run_playbook",
            Action::Supervise => "supervise",
        }
    }

    /// Roles that grant the action on any scenario of the caller's tenant.
    fn tenant_roles(self) -> &'static [&'static str] {
        match self {
            Action::View | Action::Operate | Action::RunPlaybook | Action::Supervise => {
                &[roles::INSTRUCTOR, roles::ORCHESTRATOR]
            }
            Action::ReadScore => &[
                roles::INSTRUCTOR,
                roles::ORCHESTRATOR,
                roles::SCORE_READ_ALL,
            ],
        }
    }

    /// Whether the owner of a scenario may do this without a role.
    fn owner_may(self) -> bool {
        !matches!(self, Action::RunPlaybook | Action::Supervise)
    }

    /// Whether `caller` may do this to `rec` (already known to be in the caller's tenant).
    pub fn allows(self, caller: &Caller, rec: &ScenarioRecord) -> bool {
        caller.tenant_id == rec.tenant_id
            && ((self.owner_may() && caller.sub == rec.owner_sub)
                || self.tenant_roles().iter().any(|r| caller.has_role(r)))
    }
}

/// The check, with what it needs: the verifier for tokens, the store to look up, the tenants'
/// request budgets, and the aggregated audit of refusals.
#[derive(Clone)]
pub struct ScenarioAccess {
    verifier: Arc<Verifier>,
    store: Arc<dyn Store>,
    limits: TenantLimits,
    denials: DeniedAudit,
    actor: &'static str,
}

impl ScenarioAccess {
    /// The check with the default rate for every tenant ([`ScenarioAccess::with_tenants`] sets
    /// the plans) and 60 s audit windows.
    pub fn new(verifier: Arc<Verifier>, store: Arc<dyn Store>, audit: Arc<dyn AuditSink>) -> Self {
        Self {
            verifier,
            store,
            limits: TenantLimits::new(Arc::new(TenantDirectory::empty())),
            denials: DeniedAudit::new(audit, denials::DEFAULT_WINDOW),
            actor: "forge_platform",
        }
    }

    /// Rates from the tenants' plans (`api_rate`).
    pub fn with_tenants(self, tenants: Arc<TenantDirectory>) -> Self {
        Self {
            limits: TenantLimits::new(tenants),
            ..self
        }
    }

    /// Writes the closing records of the audit windows that have run their time (all of them
    /// when `all`, at shutdown). The platform calls it periodically.
    pub fn flush_denials(&self, all: bool) {
        self.denials.flush(all);
    }

    /// How long one audit window of refusals lasts.
    pub fn denial_window(&self) -> Duration {
        self.denials.window()
    }

    /// The same check, recording `service` as where a refusal happened.
    pub fn for_service(&self, service: Service) -> Self {
        Self {
            actor: service.name(),
            ..self.clone()
        }
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Gives every route of `router` the tenant's rate limit (a request with a valid token
    /// spends one from its tenant's budget, or gets 429), the token verifier (for [`Caller`])
    /// and this check (for [`Authorized`]). Install it before merging routes that must stay
    /// open (`/health`, `/ready`, `/metrics`).
    pub fn install(&self, router: Router) -> Router {
        let layer = LimitLayer {
            verifier: self.verifier.clone(),
            limits: self.limits.clone(),
            service: self.actor,
        };
        router
            .layer(axum::middleware::from_fn_with_state(layer, limits::limit))
            .layer(Extension(self.verifier.clone()))
            .layer(Extension(self.clone()))
    }

    /// The scenario `id` if `caller` may do `action` to it; otherwise the 404 (or, for an
    /// action that needs a role the caller lacks, a 403 before anything is looked up).
    pub async fn authorize(
        &self,
        caller: &Caller,
        id: &str,
        action: Action,
    ) -> Result<ScenarioRecord, ApiError> {
        if !action.owner_may() && !action.tenant_roles().iter().any(|r| caller.has_role(r)) {
            return Err(ApiError::forbidden(
                "missing_role",
                format!("role {} is required", action.tenant_roles().join(" or ")),
            ));
        }
        let not_found =
            || ApiError::not_found("scenario_not_found", format!("scenario `{id}` not found"));
        let Ok(sid) = id.parse::<ScenarioId>() else {
            return Err(not_found());
        };
        let found = self
            .store
            .get(&caller.tenant_id, &sid)
            .await
            .map_err(ApiError::internal)?;
        match found {
            Some(rec) if action.allows(caller, &rec) => {
                trace_scenario(&tracing::Span::current(), &rec);
                Ok(rec)
            }
            Some(_) => {
                self.deny(caller, &sid, action, "same_tenant");
                Err(not_found())
            }
            None => {
                // Another tenant's scenario: the caller learns nothing, the audit log does.
                if self
                    .store
                    .get_any(&sid)
                    .await
                    .map_err(ApiError::internal)?
                    .is_some()
                {
                    self.deny(caller, &sid, action, "cross_tenant");
                }
                Err(not_found())
            }
        }
    }

    fn deny(&self, caller: &Caller, id: &ScenarioId, action: Action, scope: &'static str) {
        self.denials.refused(Refusal {
            caller,
            resource: id.as_str(),
            action,
            scope,
            service: self.actor,
        });
    }
}

/// The action an [`Authorized`] route needs, as a type.
pub trait Permission: Send + Sync + 'static {
    const ACTION: Action;
}

/// [`Action::View`].
pub struct CanView;
/// [`Action::Operate`].
pub struct CanOperate;
/// [`Action::ReadScore`].
pub struct CanReadScore;
/// [`Action::Supervise`].
pub struct CanSupervise;

impl Permission for CanView {
    const ACTION: Action = Action::View;
}
impl Permission for CanOperate {
    const ACTION: Action = Action::Operate;
}
impl Permission for CanReadScore {
    const ACTION: Action = Action::ReadScore;
}
impl Permission for CanSupervise {
    const ACTION: Action = Action::Supervise;
}

/// The 403 of a route about the caller's tenant as a whole, unless the caller has one of
/// `any_of` (within the token's tenant, like every role).
pub fn require_role(caller: &Caller, any_of: &[&str]) -> Result<(), ApiError> {
    if any_of.iter().any(|r| caller.has_role(r)) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "missing_role",
        format!("role {} is required", any_of.join(" or ")),
    ))
}

/// Whether `caller` works with any lab of its tenant (an instructor or the platform), rather
/// than only with its own.
pub fn supervises(caller: &Caller) -> bool {
    Action::Supervise
        .tenant_roles()
        .iter()
        .any(|r| caller.has_role(r))
}

/// The extractor of every route with an `{id}` path parameter: the authenticated caller and
/// the scenario they may do `P` to, or the check's 401/404.
pub struct Authorized<P> {
    pub caller: Caller,
    pub scenario: ScenarioRecord,
    permission: PhantomData<P>,
}

impl<S: Send + Sync, P: Permission> FromRequestParts<S> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Some(access) = parts.extensions.get::<ScenarioAccess>().cloned() else {
            return Err(ApiError::internal(
                "route has no scenario access check installed",
            ));
        };
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
        let Some(id) = params
            .iter()
            .find(|(k, _)| *k == "id")
            .map(|(_, v)| v.to_owned())
        else {
            return Err(ApiError::internal("route has no {id} parameter"));
        };
        let scenario = access.authorize(&caller, &id, P::ACTION).await?;
        Ok(Self {
            caller,
            scenario,
            permission: PhantomData,
        })
    }
}

/// Records on `span` which scenario its work is about: the scenario and tenant ids, and as
/// `request_id` the request id of the scenario's spawn, which every service's log lines about
/// the scenario carry (HTTP routes, bus consumers).
pub fn trace_scenario(span: &tracing::Span, rec: &forge_store::ScenarioRecord) {
    span.record("scenario_id", rec.scenario_id.as_str());
    span.record("tenant_id", rec.tenant_id.as_str());
    span.record("request_id", rec.request_id.as_str());
}

/// A span for handling a bus message about `scenario_id` (fields filled by [`trace_scenario`]
/// once the scenario is read).
pub fn scenario_span(what: &'static str, scenario_id: &forge_core::ScenarioId) -> tracing::Span {
    tracing::info_span!(
        "message",
        subject = what,
        scenario_id = %scenario_id,
        tenant_id = tracing::field::Empty,
        request_id = tracing::field::Empty,
    )
}
