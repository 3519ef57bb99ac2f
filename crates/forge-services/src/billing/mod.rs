//! Billing of spawns (issue 5 item 8).
//!
//! - `BILLING_MODE=stub`: every spawn that passes the gate writes one ledger row, in the same
//!   transaction as the scenario — no scenario without its charge, no charge twice (the ledger
//!   is unique per `(tenant_id, request_id)`).
//! - `BILLING_MODE=gateway`: the same ledger row plus an outbox item in that transaction; a
//!   [`dispatcher::GatewayDispatcher`] POSTs each item to `BILLING_GATEWAY_URL` with
//!   `Idempotency-Key: <event_id>` until the gateway accepts it, backing off exponentially with
//!   jitter. A gateway outage loses nothing (the outbox is durable) and never charges twice (the
//!   key is stable, so the gateway dedupes retries; we stop once it said yes).
//!
//! - Refunds: a charged scenario that ends `failed` before it ever ran (launch failure, the
//!   training gate at build, a lost host) is refunded by the orchestrator through
//!   `forge_store::Store::refund`: a ledger row with the amount negated and event id
//!   `refund-<charge event id>`, once, plus an outbox item (topic `billing.refund`) exactly
//!   when the charge had one, so the dispatcher delivers it like a charge (the payload is the
//!   refund row plus `kind`, `refund_of` and `reason`).
//!
//! [`report`] sums the ledger per tenant and period (`forge billing report`), net of refunds.

pub mod dispatcher;
pub mod report;

use std::time::Duration;

use chrono::{DateTime, Utc};
use forge_core::{ScenarioId, Track};
use forge_store::Charge;
use sha2::{Digest, Sha256};

use crate::tenants::Tenant;

/// `BILLING_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BillingMode {
    #[default]
    Stub,
    Gateway,
}

impl std::str::FromStr for BillingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "stub" => Ok(Self::Stub),
            "gateway" => Ok(Self::Gateway),
            other => Err(format!(
                "billing mode must be stub or gateway, got `{other}`"
            )),
        }
    }
}

/// How billing events leave the service.
#[derive(Debug, Clone, PartialEq)]
pub struct BillingConfig {
    pub mode: BillingMode,
    /// Where gateway mode POSTs events (`BILLING_GATEWAY_URL`).
    pub gateway_url: Option<String>,
    /// First retry delay (`BILLING_RETRY_BASE`, default 1s); doubles per failed attempt.
    pub retry_base: Duration,
    /// Longest retry delay (`BILLING_RETRY_MAX`, default 5m).
    pub retry_max: Duration,
    /// Per-request timeout of a delivery (default 10s).
    pub request_timeout: Duration,
    /// How often the outbox is checked when nothing wakes the dispatcher (default 1s).
    pub poll_interval: Duration,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            mode: BillingMode::Stub,
            gateway_url: None,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl BillingConfig {
    /// Gateway mode towards `url`.
    pub fn gateway(url: impl Into<String>) -> Self {
        Self {
            mode: BillingMode::Gateway,
            gateway_url: Some(url.into()),
            ..Self::default()
        }
    }
}

/// The ledger event id of a tenant's request: stable across retries and restarts, so it can be
/// the gateway's Idempotency-Key.
pub fn event_id(tenant_id: &str, request_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(tenant_id.as_bytes());
    h.update([0]);
    h.update(request_id.as_bytes());
    format!("chg_{}", &hex::encode(h.finalize())[..32])
}

/// What one spawn costs.
#[allow(clippy::too_many_arguments)]
pub fn charge(
    tenant: &Tenant<'_>,
    currency: &str,
    request_id: &str,
    scenario_id: &ScenarioId,
    track: Track,
    template: &str,
    tier: &str,
    now: DateTime<Utc>,
) -> Charge {
    Charge {
        event_id: event_id(tenant.id, request_id),
        tenant_id: tenant.id.to_owned(),
        request_id: request_id.to_owned(),
        scenario_id: scenario_id.clone(),
        track,
        template: template.to_owned(),
        tier: tier.to_owned(),
        plan: tenant.plan_name.to_owned(),
        // Validated at load: every entitled track prices every tier. A track the plan does not
        // price cannot pass the gate, so 0 here is unreachable in practice.
        amount_cents: tenant.plan.price_cents(track, tier).unwrap_or(0),
        currency: currency.to_owned(),
        created_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_and_scoped() {
        assert_eq!(event_id("a", "r1"), event_id("a", "r1"));
        assert_ne!(event_id("a", "r1"), event_id("b", "r1"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(event_id("ab", "c"), event_id("a", "bc"));
        assert!(event_id("a", "r").starts_with("chg_") && event_id("a", "r").len() == 36);
        assert_eq!("gateway".parse::<BillingMode>(), Ok(BillingMode::Gateway));
        assert!(
            "live"
                .parse::<BillingMode>()
                .unwrap_err()
                .contains("stub or gateway")
        );
    }
}
