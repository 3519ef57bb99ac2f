//! Per-tenant request budgets of every authenticated route of the lifecycle services (spec:
//! Rate Limiting and Abuse Protections), on the front door's token buckets.
//!
//! A layer in front of the routes verifies the bearer token once, takes one token from the
//! caller's tenant's bucket, and hands the verified caller on to the handlers' extractors
//! ([`forge_auth::Authenticated`]). The rate is the tenant's plan's `api_rate`
//! ([`forge_services::tenants::Plan::api_rate`]); a tenant the tenants file does not list gets
//! [`DEFAULT_API_RATE`]. Requests without a token, or with one that does not verify, pass
//! untouched: the route answers them 401 and they never reach a tenant's budget.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use forge_auth::{Authenticated, Verifier};
use forge_http::ApiError;
use forge_services::ratelimit::{RateLimiter, retry_after_secs};
use forge_services::tenants::{DEFAULT_API_RATE, Rate, TenantDirectory};

/// The tenants' plans and one token bucket per tenant, shared by every service of a process.
#[derive(Clone)]
pub struct TenantLimits {
    tenants: Arc<TenantDirectory>,
    buckets: Arc<RateLimiter>,
}

impl TenantLimits {
    pub fn new(tenants: Arc<TenantDirectory>) -> Self {
        Self {
            tenants,
            buckets: Arc::new(RateLimiter::new()),
        }
    }

    /// The rate `tenant` gets on these routes.
    pub fn rate(&self, tenant: &str) -> Rate {
        self.tenants
            .tenant(tenant)
            .map_or(DEFAULT_API_RATE, |t| t.plan.api_rate())
    }

    /// Takes one request from `tenant`'s budget, or the 429 (with `Retry-After`) that says how
    /// long to wait.
    pub fn check(&self, tenant: &str) -> Result<(), ApiError> {
        let rate = self.rate(tenant);
        self.buckets
            .check(tenant, rate, Instant::now())
            .map_err(|wait| {
                ApiError::too_many_requests(
                    format!(
                        "tenant `{tenant}` exceeded its api rate limit ({} requests/s, burst {}); \
                         retry after the Retry-After delay with backoff",
                        rate.requests_per_second, rate.burst
                    ),
                    retry_after_secs(wait),
                )
            })
    }
}

/// What the layer needs: the verifier, the budgets, and the service name for the metric.
#[derive(Clone)]
pub(super) struct LimitLayer {
    pub verifier: Arc<Verifier>,
    pub limits: TenantLimits,
    pub service: &'static str,
}

/// The middleware: verify once, charge the tenant, pass the verified caller on.
pub(super) async fn limit(State(l): State<LimitLayer>, req: Request, next: Next) -> Response {
    if !req.headers().contains_key(AUTHORIZATION) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let verified = Authenticated::verify(&l.verifier, &parts).await;
    if let Ok(caller) = &verified.0
        && let Err(refused) = l.limits.check(&caller.tenant_id)
    {
        metrics::counter!("forge_rate_limited_total", "service" => l.service).increment(1);
        return refused.into_response();
    }
    parts.extensions.insert(verified);
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_choose_the_rate_and_strangers_get_the_default() {
        let toml = r#"
            [plans.tight]
            entitled_tracks = []
            max_active_scenarios = 1
            rate = { requests_per_second = 1.0, burst = 1 }
            api_rate = { requests_per_second = 0.001, burst = 2 }
            [tenants.small]
            plan = "tight"
        "#;
        let limits = TenantLimits::new(Arc::new(TenantDirectory::from_toml(toml, "t").unwrap()));
        assert_eq!(limits.rate("small").burst, 2);
        assert_eq!(limits.rate("unknown"), DEFAULT_API_RATE);
        limits.check("small").unwrap();
        limits.check("small").unwrap();
        let refused = limits.check("small").unwrap_err();
        assert_eq!(refused.status().as_u16(), 429);
        assert!(refused.headers().contains_key("retry-after"));
        assert!(refused.message().contains("tenant `small`"), "{refused}");
        // Another tenant's bucket is its own.
        limits.check("unknown").unwrap();
    }
}
