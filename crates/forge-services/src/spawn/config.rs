//! Configuration of the spawn service (spec: forge_spawn_service, Environment Variables).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `FORGE_ENV` | `dev` | dev, staging or production (informative) |
//! | `SPAWN_BASE_URL` | `http://localhost:8082` | base of `access_url` |
//! | `REQUEST_ID_HEADER` | `x-request-id` | header that may carry the idempotency key |
//! | `IDEMPOTENCY_RETENTION` | `24h` | how long a key and its response are kept |
//! | `IDEMPOTENCY_WAIT` | `10s` | how long a duplicate waits for the in-flight first before 409 |
//! | `IDEMPOTENCY_LEASE` | `60s` | after this an in-flight key whose owner died may be taken over |
//! | `SPAWN_BODY_LIMIT` | `65536` | largest accepted request body, in bytes |
//! | `BILLING_MODE` | `stub` | `stub` (ledger only) or `gateway` (ledger + outbox → gateway) |
//! | `BILLING_GATEWAY_URL` | — | required in gateway mode |
//! | `BILLING_RETRY_BASE` / `BILLING_RETRY_MAX` | `1s` / `5m` | delivery backoff bounds |
//!
//! Durations take `s`, `m`, `h` or `d` (`30s`, `24h`).

use std::time::Duration;

use axum::http::HeaderName;

use crate::billing::{BillingConfig, BillingMode};

#[derive(Debug, Clone)]
pub struct SpawnConfig {
    pub env: String,
    /// Base of `access_url` (`{base_url}/access/{scenario_id}`), without a trailing slash.
    pub base_url: String,
    pub request_id_header: HeaderName,
    pub idempotency_retention: Duration,
    pub idempotency_wait: Duration,
    pub idempotency_lease: Duration,
    pub body_limit: usize,
    pub billing: BillingConfig,
}

impl Default for SpawnConfig {
    fn default() -> Self {
        Self {
            env: "dev".to_owned(),
            base_url: "http://localhost:8082".to_owned(),
            request_id_header: HeaderName::from_static("x-request-id"),
            idempotency_retention: Duration::from_secs(24 * 3600),
            idempotency_wait: Duration::from_secs(10),
            idempotency_lease: Duration::from_secs(60),
            body_limit: crate::http::DEFAULT_BODY_LIMIT,
            billing: BillingConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid spawn service configuration: {0}")]
pub struct ConfigError(pub String);

impl SpawnConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// From any variable lookup (tests pass a map).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |k: &str| {
            var(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let dur = |k: &str, default: Duration| -> Result<Duration, ConfigError> {
            match var(k) {
                None => Ok(default),
                Some(v) => forge_auth::parse_ttl(&v).map_err(|e| ConfigError(format!("{k}: {e}"))),
            }
        };
        let d = Self::default();
        let request_id_header = match var("REQUEST_ID_HEADER") {
            None => d.request_id_header,
            Some(h) => HeaderName::try_from(h.to_ascii_lowercase()).map_err(|_| {
                ConfigError(format!("REQUEST_ID_HEADER `{h}` is not a header name"))
            })?,
        };
        let body_limit = match var("SPAWN_BODY_LIMIT") {
            None => d.body_limit,
            Some(v) => v.parse().ok().filter(|n| *n >= 1024).ok_or_else(|| {
                ConfigError(format!("SPAWN_BODY_LIMIT must be bytes ≥ 1024, got `{v}`"))
            })?,
        };
        let mode: BillingMode = match var("BILLING_MODE") {
            None => BillingMode::Stub,
            Some(m) => m.parse().map_err(ConfigError)?,
        };
        let gateway_url = var("BILLING_GATEWAY_URL");
        if mode == BillingMode::Gateway {
            match gateway_url.as_deref() {
                None => {
                    return Err(ConfigError(
                        "BILLING_MODE=gateway needs BILLING_GATEWAY_URL".into(),
                    ));
                }
                Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                    return Err(ConfigError(format!(
                        "BILLING_GATEWAY_URL `{u}` must be an http:// or https:// URL"
                    )));
                }
                Some(_) => {}
            }
        }
        let config = Self {
            env: var("FORGE_ENV").unwrap_or(d.env),
            base_url: var("SPAWN_BASE_URL")
                .unwrap_or(d.base_url)
                .trim_end_matches('/')
                .to_owned(),
            request_id_header,
            idempotency_retention: dur("IDEMPOTENCY_RETENTION", d.idempotency_retention)?,
            idempotency_wait: dur("IDEMPOTENCY_WAIT", d.idempotency_wait)?,
            idempotency_lease: dur("IDEMPOTENCY_LEASE", d.idempotency_lease)?,
            body_limit,
            billing: BillingConfig {
                mode,
                gateway_url,
                retry_base: dur("BILLING_RETRY_BASE", d.billing.retry_base)?,
                retry_max: dur("BILLING_RETRY_MAX", d.billing.retry_max)?,
                ..d.billing
            },
        };
        if config.idempotency_lease <= config.idempotency_wait {
            return Err(ConfigError(
                "IDEMPOTENCY_LEASE must be longer than IDEMPOTENCY_WAIT".into(),
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let c = SpawnConfig::from_lookup(env(&[])).unwrap();
        assert_eq!(c.base_url, "http://localhost:8082");
        assert_eq!(c.request_id_header, "x-request-id");
        assert_eq!(c.idempotency_retention, Duration::from_secs(86_400));
        let c = SpawnConfig::from_lookup(env(&[
            ("SPAWN_BASE_URL", "https://labs.example/"),
            ("REQUEST_ID_HEADER", "Idempotency-Key"),
            ("IDEMPOTENCY_RETENTION", "2h"),
            ("BILLING_MODE", "gateway"),
            ("BILLING_GATEWAY_URL", "http://127.0.0.1:9/charge"),
        ]))
        .unwrap();
        assert_eq!(c.base_url, "https://labs.example");
        assert_eq!(c.request_id_header, "idempotency-key");
        assert_eq!(c.idempotency_retention, Duration::from_secs(7200));
        assert_eq!(c.billing.mode, BillingMode::Gateway);
    }

    #[test]
    fn bad_values_are_named() {
        for (pairs, needle) in [
            (&[("BILLING_MODE", "gateway")][..], "BILLING_GATEWAY_URL"),
            (&[("BILLING_MODE", "free")][..], "stub or gateway"),
            (
                &[("IDEMPOTENCY_RETENTION", "forever")][..],
                "IDEMPOTENCY_RETENTION",
            ),
            (&[("SPAWN_BODY_LIMIT", "12")][..], "SPAWN_BODY_LIMIT"),
            (
                &[("REQUEST_ID_HEADER", "bad header")][..],
                "REQUEST_ID_HEADER",
            ),
        ] {
            let pairs: &'static [(&str, &str)] = pairs;
            let e = SpawnConfig::from_lookup(env(pairs))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
