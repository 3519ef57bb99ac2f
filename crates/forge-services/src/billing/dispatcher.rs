//! Delivers billing outbox items to the billing gateway.
//!
//! Each item is POSTed as JSON (the [`forge_store::Charge`]; a refund's adds `kind`, `refund_of`
//! and `reason`) with `Idempotency-Key: <event_id>`.
//! 2xx (or 409: the gateway already has it) marks it delivered; anything else (5xx, 4xx,
//! connection refused, timeout) schedules a retry after `min(max, base·2^attempts)`, jittered
//! to 50–100 % so that a recovering gateway is not hit by every item at once. Items are never
//! dropped: a 4xx is logged as an error for an operator but retried all the same.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use forge_store::{OutboxItem, Store, StoreError};
use rand::Rng;
use tokio::sync::Notify;

use super::BillingConfig;

/// Outbox items handled per pass.
const BATCH: u32 = 100;

/// The gateway delivery loop.
pub struct GatewayDispatcher {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    url: String,
    config: BillingConfig,
    wake: Arc<Notify>,
}

impl GatewayDispatcher {
    /// `wake` is notified by the spawn service when it queues an event, for prompt delivery.
    pub fn new(
        store: Arc<dyn Store>,
        config: BillingConfig,
        wake: Arc<Notify>,
    ) -> Result<Self, String> {
        let url = config
            .gateway_url
            .clone()
            .ok_or("BILLING_MODE=gateway needs BILLING_GATEWAY_URL")?;
        forge_auth::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| format!("cannot build the billing http client: {e}"))?;
        Ok(Self {
            store,
            client,
            url,
            config,
            wake,
        })
    }

    /// Delivers until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            // Register before the pass so an event queued during it wakes the next wait.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Err(e) = self.deliver_due().await {
                tracing::error!(error = %e, "billing outbox pass failed");
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = &mut woken => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// One pass over the due items; returns how many were delivered.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let mut delivered = 0;
        loop {
            let due = self.store.due_outbox(Utc::now(), BATCH).await?;
            let full = due.len() == BATCH as usize;
            for item in due {
                if self.deliver(&item).await? {
                    delivered += 1;
                }
            }
            if !full {
                return Ok(delivered);
            }
        }
    }

    async fn deliver(&self, item: &OutboxItem) -> Result<bool, StoreError> {
        let result = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", &item.event_id)
            .json(&item.payload)
            .send()
            .await;
        let failure = match result {
            Ok(resp) if resp.status().is_success() || resp.status().as_u16() == 409 => {
                self.store
                    .mark_delivered(&item.event_id, Utc::now())
                    .await?;
                metrics::counter!("forge_billing_deliveries_total", "result" => "delivered")
                    .increment(1);
                return Ok(true);
            }
            Ok(resp) => {
                let status = resp.status();
                if status.is_client_error() {
                    tracing::error!(event_id = %item.event_id, %status,
                        "billing gateway refused an event; retrying, check the gateway");
                }
                format!("gateway answered {status}")
            }
            Err(e) => format!("gateway unreachable: {e}"),
        };
        let delay = self.backoff(item.attempts);
        tracing::warn!(event_id = %item.event_id, attempts = item.attempts + 1,
            retry_in_ms = delay.as_millis() as u64, error = %failure, "billing delivery failed");
        metrics::counter!("forge_billing_deliveries_total", "result" => "failed").increment(1);
        let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        self.store
            .mark_attempt_failed(&item.event_id, next, &failure)
            .await?;
        Ok(false)
    }

    /// `min(max, base·2^attempts)`, jittered to 50–100 %.
    fn backoff(&self, attempts: u32) -> Duration {
        backoff(
            self.config.retry_base,
            self.config.retry_max,
            attempts,
            rand::rng().random_range(0.5..=1.0),
        )
    }
}

pub(crate) fn backoff(base: Duration, max: Duration, attempts: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempts.min(20));
    // A floor keeps a zero base from turning a failing pass into a busy loop.
    exp.min(max).mul_f64(jitter).max(Duration::from_millis(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let b = Duration::from_secs(1);
        let m = Duration::from_secs(60);
        assert_eq!(backoff(b, m, 0, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(b, m, 3, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(b, m, 10, 1.0), m);
        assert_eq!(backoff(b, m, 400, 1.0), m, "no overflow on many attempts");
        assert_eq!(backoff(b, m, 3, 0.5), Duration::from_secs(4));
    }
}
