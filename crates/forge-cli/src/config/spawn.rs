//! The front door's settings: access URLs, idempotency, body limit and billing
//! (docs/spawn-api.md).

use std::str::FromStr;
use std::time::Duration;

use anyhow::bail;
use axum::http::HeaderName;
use clap::{Args, ValueEnum};
use forge_services::billing::{BillingConfig, BillingMode};
use forge_services::spawn::SpawnConfig;

/// `BILLING_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BillingModeArg {
    /// A ledger row per charged spawn, nothing sent
    Stub,
    /// The ledger row plus an outbox item delivered to BILLING_GATEWAY_URL
    Gateway,
}

/// The spawn service's flags. Every variable but `FORGE_ENV` is its flag's name in upper case,
/// so those use clap's bare `env` rather than spelling the name twice.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Spawn service")]
pub struct SpawnArgs {
    /// Deployment environment (dev, staging, production; informative)
    #[arg(long, env = "FORGE_ENV", default_value = "dev", value_name = "ENV")]
    pub environment: String,
    /// Base of the access URLs handed to learners [default: http://<public-host>:<spawn port>]
    #[arg(long, env, value_name = "URL")]
    pub spawn_base_url: Option<String>,
    /// Header that may carry the idempotency key
    #[arg(
        long,
        env,
        default_value = "x-request-id",
        value_name = "NAME",
        value_parser = parse_header_name
    )]
    pub request_id_header: HeaderName,
    /// How long an idempotency key and its response are kept
    #[arg(long, env, default_value = "24h", value_name = "DURATION")]
    pub idempotency_retention: DurationArg,
    /// How long a duplicate waits for the in-flight first before 409
    #[arg(long, env, default_value = "10s", value_name = "DURATION")]
    pub idempotency_wait: DurationArg,
    /// After this an in-flight key whose owner died may be taken over
    #[arg(long, env, default_value = "60s", value_name = "DURATION")]
    pub idempotency_lease: DurationArg,
    /// Largest accepted request body, in bytes (at least 1024)
    #[arg(
        long,
        env,
        default_value_t = forge_http::DEFAULT_BODY_LIMIT,
        value_name = "BYTES"
    )]
    pub spawn_body_limit: usize,
    /// How charges leave the service
    #[arg(long, env, value_enum, default_value_t = BillingModeArg::Stub, value_name = "MODE")]
    pub billing_mode: BillingModeArg,
    /// Where gateway mode POSTs charges (required in gateway mode)
    #[arg(long, env, value_name = "URL")]
    pub billing_gateway_url: Option<String>,
    /// First retry delay of a failed delivery; doubles per attempt
    #[arg(long, env, default_value = "1s", value_name = "DURATION")]
    pub billing_retry_base: DurationArg,
    /// Longest retry delay of a failed delivery
    #[arg(long, env, default_value = "5m", value_name = "DURATION")]
    pub billing_retry_max: DurationArg,
}

/// A duration flag: `30s`, `10m`, `24h`, `7d`. Its own type so that clap parses every
/// duration setting through [`FromStr`] instead of each naming a value parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        forge_auth::parse_ttl(s).map(Self).map_err(|_| {
            format!("`{s}` is not a duration: a whole number with s, m, h or d (30s, 10m, 24h)")
        })
    }
}

/// A header name, lowercased (HTTP/2 requires it).
fn parse_header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::try_from(s.trim().to_ascii_lowercase())
        .map_err(|_| format!("`{s}` is not an HTTP header name"))
}

impl SpawnArgs {
    /// The spawn service's configuration; `default_base_url` is used without SPAWN_BASE_URL.
    /// Errors name the variable at fault.
    pub fn spawn_config(&self, default_base_url: &str) -> anyhow::Result<SpawnConfig> {
        let base_url = match &self.spawn_base_url {
            Some(url) => {
                super::require_http_url("SPAWN_BASE_URL (--spawn-base-url)", url)?;
                url.trim_end_matches('/').to_owned()
            }
            None => default_base_url.to_owned(),
        };
        if self.spawn_body_limit < 1024 {
            bail!(
                "SPAWN_BODY_LIMIT (--spawn-body-limit) must be at least 1024 bytes, got {}",
                self.spawn_body_limit
            );
        }
        if self.idempotency_lease <= self.idempotency_wait {
            bail!(
                "IDEMPOTENCY_LEASE (--idempotency-lease) must be longer than IDEMPOTENCY_WAIT \
                 (--idempotency-wait)"
            );
        }
        if self.billing_retry_max < self.billing_retry_base {
            bail!(
                "BILLING_RETRY_MAX (--billing-retry-max) must not be shorter than \
                 BILLING_RETRY_BASE (--billing-retry-base)"
            );
        }
        let mode = match self.billing_mode {
            BillingModeArg::Stub => BillingMode::Stub,
            BillingModeArg::Gateway => BillingMode::Gateway,
        };
        match (mode, &self.billing_gateway_url) {
            (BillingMode::Gateway, None) => bail!(
                "BILLING_MODE (--billing-mode) is gateway but BILLING_GATEWAY_URL \
                 (--billing-gateway-url) is not set"
            ),
            (_, Some(url)) => {
                super::require_http_url("BILLING_GATEWAY_URL (--billing-gateway-url)", url)?;
            }
            (BillingMode::Stub, None) => {}
        }
        let billing = BillingConfig {
            mode,
            gateway_url: self.billing_gateway_url.clone(),
            retry_base: self.billing_retry_base.0,
            retry_max: self.billing_retry_max.0,
            ..BillingConfig::default()
        };
        Ok(SpawnConfig {
            env: self.environment.clone(),
            base_url,
            request_id_header: self.request_id_header.clone(),
            idempotency_retention: self.idempotency_retention.0,
            idempotency_wait: self.idempotency_wait.0,
            idempotency_lease: self.idempotency_lease.0,
            body_limit: self.spawn_body_limit,
            billing,
            // Filled from the lab hosts' pools (`FORGE_POOLS`) by the platform.
            pooled_templates: Default::default(),
        })
    }
}
