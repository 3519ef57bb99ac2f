//! Durable state of FrostGate Forge behind one trait, [`Store`]: scenarios and their state
//! machine, idempotency keys, the billing ledger (charges and refunds) and the outbox.
//!
//! Two implementations, both passing the one conformance suite (`tests/store.rs`):
//! [`SqliteStore`] (a file in the data dir, for `forge up`) and [`PgStore`] (one PostgreSQL
//! database shared by any number of replicas, for distributed mode).
//!
//! Invariants the implementations uphold (docs/design.md §6):
//! - one `(tenant_id, request_id)` yields one scenario and at most one charge, however
//!   concurrently it is inserted, and at most one refund of it, however often it is refunded;
//! - a scenario's status only moves along [`ScenarioStatus::can_move_to`], checked atomically
//!   against the current status (compare-and-set), never read-then-write;
//! - tenant-facing reads are scoped by tenant: [`Store::get`] never returns another tenant's
//!   scenario.

mod idempotency;
mod model;
mod pools;
pub mod postgres;
pub mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, ScenarioStatus};

pub use model::{
    BILLING_TOPIC, Began, Billing, Charge, CheckSummary, IdempotencyBegin, Inserted, LabHost,
    LedgerQuery, NewScenario, OutboxItem, REFUND_PREFIX, REFUND_TOPIC, Refunded, ScenarioRecord,
};
pub use pools::{PoolClaims, WarmLab};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("scenario {0} not found")]
    NotFound(String),
    #[error("scenario {id} is {current}; it cannot move to {to}")]
    Conflict {
        id: String,
        current: ScenarioStatus,
        to: ScenarioStatus,
    },
    #[error("no status in {from:?} may move to {to}")]
    InvalidTransition {
        from: Vec<ScenarioStatus>,
        to: ScenarioStatus,
    },
    #[error(
        "request_id `{request_id}` of tenant {tenant_id} was already used for scenario {existing} \
         with another track or template"
    )]
    RequestIdReused {
        tenant_id: String,
        request_id: String,
        existing: String,
    },
    #[error("tenant {tenant_id} has {active} active scenarios; at most {max} are allowed")]
    QuotaExceeded {
        tenant_id: String,
        active: u64,
        max: u64,
    },
    /// Only an active scenario short of the longest lab time is extended.
    #[error("scenario {id} cannot be extended: {why}")]
    NotExtendable { id: String, why: String },
    /// Only a scenario that ended `failed` without ever running is refunded.
    #[error("scenario {id} is not refundable: {why}")]
    NotRefundable { id: String, why: String },
    #[error("cannot open the database at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error("database error: {0}")]
    Backend(String),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// Every database error is a backend error, as for sqlx (the SQLite backend's constraint and
/// busy failures included): the store's callers never act on SQLite's codes. The extended code
/// is kept in the message, as sqlx's message did, for whoever reads the log.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, Some(msg)) => {
                StoreError::Backend(format!("{msg} (sqlite code {})", f.extended_code))
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// How long [`Store::ping`] waits for the database.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The state store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether the database answers now (readiness probes): one cheap read, within
    /// [`PING_TIMEOUT`].
    async fn ping(&self) -> Result<(), StoreError>;

    // ---- scenarios ----

    /// Inserts a `pending` scenario and, atomically with it, its billing records. When the
    /// tenant already has a scenario for this `request_id` with the same track and template,
    /// nothing is written and that scenario is returned with `created: false` (so a retry after
    /// a crash converges); with another track or template it is [`StoreError::RequestIdReused`].
    async fn insert_pending(
        &self,
        new: &NewScenario,
        billing: Billing<'_>,
    ) -> Result<Inserted, StoreError>;

    /// [`Store::insert_pending`], refused with [`StoreError::QuotaExceeded`] when the tenant
    /// already has `max_active` active scenarios — decided atomically with the insert, so
    /// concurrent spawns cannot overshoot a plan's quota together.
    async fn insert_pending_limited(
        &self,
        new: &NewScenario,
        billing: Billing<'_>,
        max_active: u64,
    ) -> Result<Inserted, StoreError>;

    /// A scenario of `tenant_id`; another tenant's scenario is `None`.
    async fn get(
        &self,
        tenant_id: &str,
        id: &ScenarioId,
    ) -> Result<Option<ScenarioRecord>, StoreError>;

    /// Any tenant's scenario, for platform-internal consumers (orchestrator, reconciler).
    async fn get_any(&self, id: &ScenarioId) -> Result<Option<ScenarioRecord>, StoreError>;

    /// Moves `id` to `to` if its current status is one of `from` and the state machine allows
    /// it, in one atomic step; sets `started_at` on `running` and `ended_at` on a final status.
    /// `error` replaces the stored error when given.
    async fn transition(
        &self,
        id: &ScenarioId,
        from: &[ScenarioStatus],
        to: ScenarioStatus,
        error: Option<&str>,
    ) -> Result<ScenarioRecord, StoreError>;

    /// Scenarios in any of `statuses`, oldest first.
    async fn list_by_status(
        &self,
        statuses: &[ScenarioStatus],
    ) -> Result<Vec<ScenarioRecord>, StoreError>;

    /// Scenarios of `tenant_id` that are pending, creating or running (O(1): a counter kept in
    /// step by `insert_pending` and `transition`).
    async fn count_active(&self, tenant_id: &str) -> Result<u64, StoreError>;

    /// Scenarios of `tenant_id` in any of `statuses`, newest first, at most `limit` of them
    /// (the tenant scope is part of the query: no other tenant's row is read).
    async fn list_for_tenant(
        &self,
        tenant_id: &str,
        statuses: &[ScenarioStatus],
        limit: u32,
    ) -> Result<Vec<ScenarioRecord>, StoreError>;

    /// Moves the expiry of an active (pending, creating, running) scenario `by` later, but
    /// never past `cap`, in one atomic step (concurrent extensions add up); the scenario as
    /// extended. [`StoreError::NotExtendable`] when it has ended or already expires at `cap`.
    async fn extend(
        &self,
        id: &ScenarioId,
        by: Duration,
        cap: DateTime<Utc>,
    ) -> Result<ScenarioRecord, StoreError>;

    /// Records the last check of a running scenario; `false` (nothing written) when it is not
    /// running any more or does not exist.
    async fn record_check(&self, id: &ScenarioId, check: &CheckSummary)
    -> Result<bool, StoreError>;

    /// Records where the lab lives: the fabric namespace and the container names.
    async fn set_runtime_info(
        &self,
        id: &ScenarioId,
        network_id: &str,
        containers: &[String],
    ) -> Result<(), StoreError>;

    // ---- lab hosts (distributed mode) ----

    /// Moves a `pending` scenario to `creating` on lab host `host_id`, in one atomic step: of
    /// any number of hosts claiming it at once, exactly one wins; the others get
    /// [`StoreError::Conflict`] (or [`StoreError::NotFound`]).
    async fn claim(&self, id: &ScenarioId, host_id: &str) -> Result<ScenarioRecord, StoreError>;

    /// Registers `host` or renews its lease: the row is replaced by `host` as given.
    async fn renew_lease(&self, host: &LabHost) -> Result<(), StoreError>;

    /// Every registered lab host, by id, live or not.
    async fn lab_hosts(&self) -> Result<Vec<LabHost>, StoreError>;

    // ---- idempotency keys (IETF Idempotency-Key draft) ----

    /// Claims `(tenant_id, key)` for a request with `request_hash`, atomically: exactly one of
    /// any number of concurrent callers gets [`Began::New`]. An expired key, or an in-flight key
    /// whose lease ran out (its owner died), is claimed afresh.
    async fn begin(&self, req: &IdempotencyBegin<'_>) -> Result<Began, StoreError>;

    /// Stores the final response of a claimed key; replays return it until the key expires.
    async fn complete(
        &self,
        tenant_id: &str,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), StoreError>;

    /// Releases an in-flight key without a stored response (the request may be retried anew).
    async fn abandon(&self, tenant_id: &str, key: &str) -> Result<(), StoreError>;

    /// Deletes expired keys; returns how many.
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    // ---- billing ----

    /// Refunds the charge of scenario `id`, which ended `failed` without ever running, at
    /// `now` for `reason`, in one transaction: the refund row (the charge negated, event id
    /// `refund-<charge event id>`, same tenant and request) and, when the charge went through
    /// the outbox (gateway mode), an outbox item of topic [`REFUND_TOPIC`]. The refund follows
    /// its charge, so the store needs no billing mode: a stub charge gets a stub refund.
    /// Idempotent: a second call writes nothing and returns the refund with `created: false`.
    /// `None`: the scenario was never charged. [`StoreError::NotRefundable`] for a scenario in
    /// another state, [`StoreError::NotFound`] for an unknown one.
    async fn refund(
        &self,
        id: &ScenarioId,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Refunded>, StoreError>;

    /// Ledger rows matching `query`, oldest first: charges and refunds
    /// ([`Charge::is_refund`]).
    async fn ledger(&self, query: &LedgerQuery) -> Result<Vec<Charge>, StoreError>;

    /// Undelivered outbox items due at `now`, oldest first.
    async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError>;

    /// Marks an outbox item delivered; it is never handed out again.
    async fn mark_delivered(&self, event_id: &str, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Records a failed delivery attempt and when to try again.
    async fn mark_attempt_failed(
        &self,
        event_id: &str,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Outbox items not yet delivered.
    async fn outbox_backlog(&self) -> Result<u64, StoreError>;

    // ---- warm pools ----

    /// Adds a launched, healthy lab to its template's pool (its id must be unused).
    async fn put_warm(&self, lab: &WarmLab) -> Result<(), StoreError>;

    /// Takes the oldest warm lab of `template` launched from `digest`, on any host, and counts
    /// the claim as a hit, or as a miss when there is none. Atomic: of concurrent takers, each
    /// gets a different lab or none.
    async fn take_warm(&self, template: &str, digest: &str) -> Result<Option<WarmLab>, StoreError>;

    /// Removes a warm lab from its pool; `false` when a spawn took it first.
    async fn remove_warm(&self, id: &ScenarioId) -> Result<bool, StoreError>;

    /// The warm labs of `host_id`, or of every host, oldest first.
    async fn list_warm(&self, host_id: Option<&str>) -> Result<Vec<WarmLab>, StoreError>;

    /// Hits and misses per pooled template, by template name.
    async fn pool_claims(&self) -> Result<Vec<PoolClaims>, StoreError>;

    /// `pending → running` of the scenario that took warm lab `lab` (its id is the lab's), on
    /// the lab's host, in one atomic step: host, network, containers and `started_at` are set
    /// together. [`StoreError::Conflict`] (or `NotFound`) when it is not pending.
    async fn start_warm(&self, lab: &WarmLab) -> Result<ScenarioRecord, StoreError>;
}
