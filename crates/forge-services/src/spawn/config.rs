//! Configuration of the spawn service (spec: forge_spawn_service, Environment Variables): a
//! plain struct; the `forge` binary fills it from its flags and variables (README.md,
//! Configuration, lists them with their defaults).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::HeaderName;
use forge_http::Service;

use crate::billing::BillingConfig;

#[derive(Debug, Clone)]
pub struct SpawnConfig {
    /// `dev`, `staging` or `production` (informative).
    pub env: String,
    /// Base of `access_url` (`{base_url}/access/{scenario_id}`), without a trailing slash.
    pub base_url: String,
    /// Header that may carry the idempotency key (lowercase).
    pub request_id_header: HeaderName,
    /// How long a key and its response are kept.
    pub idempotency_retention: Duration,
    /// How long a duplicate waits for the in-flight first before 409.
    pub idempotency_wait: Duration,
    /// After this an in-flight key whose owner died may be taken over; longer than the wait.
    pub idempotency_lease: Duration,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    pub billing: BillingConfig,
    /// Templates with a warm pool on some lab host: their spawns take a warm lab first.
    pub pooled_templates: BTreeSet<String>,
}

impl Default for SpawnConfig {
    fn default() -> Self {
        Self {
            env: "dev".to_owned(),
            base_url: format!("http://localhost:{}", Service::Spawn.default_port()),
            request_id_header: HeaderName::from_static("x-request-id"),
            idempotency_retention: Duration::from_secs(24 * 3600),
            idempotency_wait: Duration::from_secs(10),
            idempotency_lease: Duration::from_secs(60),
            body_limit: forge_http::DEFAULT_BODY_LIMIT,
            billing: BillingConfig::default(),
            pooled_templates: BTreeSet::new(),
        }
    }
}
