//! `GET /ready`: whether a service can do its work now, dependency by dependency.
//!
//! `/health` is liveness: it answers while the process serves HTTP. `/ready` runs the checks
//! the service registered in its [`Readiness`] (`engine`, `store`, `bus`, `evidence`, `policy`,
//! …) and answers 200 `{"status":"ready","checks":{"store":"ok",…}}`, or 503
//! `{"status":"not_ready","checks":{"engine":"<what is wrong>","store":"ok"},"error":{…}}` with
//! the error envelope's body (code `not_ready`) beside them ([`ReadyReport`]).
//!
//! Checks run concurrently, each bounded by [`CHECK_TIMEOUT`], so `/ready` answers within about
//! that long even when a dependency hangs. A result is reused for [`CACHE_FOR`] and concurrent
//! requests share one run, so a scrape storm does not hammer the dependencies.
//!
//! The checks reach the route as a request extension: [`Readiness::install`] on the service's
//! finished router. A router without one answers ready, with no checks.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;

use crate::{ErrorBody, Kind};

/// Longest wait for one check; one that has not answered by then fails.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(2500);

/// How long a result is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

/// What a passing check reports.
pub const CHECK_OK: &str = "ok";

/// The error envelope's code of a 503 from `/ready`.
pub const NOT_READY: &str = "not_ready";

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Probe = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The named checks of one service's `/ready`. Cheap to clone; clones share the cached result.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    checks: Vec<(&'static str, Probe)>,
    last: Mutex<Option<(Instant, ReadyReport)>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("checks", &self.names())
            .finish()
    }
}

impl Readiness {
    /// No checks: always ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the check `name` (replacing one of the same name): `probe()` resolves to `Ok` when
    /// the dependency works, else to an error saying what is wrong (the check's value in the
    /// report).
    pub fn check<F, Fut, E>(self, name: &'static str, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let probe: Probe = Arc::new(move || {
            let fut = probe();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        let mut checks = self.inner.checks.clone();
        checks.retain(|(n, _)| *n != name);
        checks.push((name, probe));
        Self {
            inner: Arc::new(Inner {
                checks,
                last: Mutex::new(None),
            }),
        }
    }

    /// The names of the checks, in the order they were added.
    pub fn names(&self) -> Vec<&'static str> {
        self.inner.checks.iter().map(|(n, _)| *n).collect()
    }

    /// `router` with these checks behind its `/ready` ([`crate::common_routes`]).
    pub fn install(self, router: Router) -> Router {
        router.layer(Extension(self))
    }

    /// The current report: the cached one while it is fresh, else every check run now.
    pub async fn report(&self) -> ReadyReport {
        let mut last = self.inner.last.lock().await;
        if let Some((at, report)) = last.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return report.clone();
        }
        let report = self.run().await;
        if let Some((_, before)) = last.as_ref() {
            log_changes(before, &report);
        }
        *last = Some((Instant::now(), report.clone()));
        report
    }

    async fn run(&self) -> ReadyReport {
        let runs = self.inner.checks.iter().map(|(name, probe)| {
            let fut = probe();
            async move {
                let outcome = match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
                    Ok(Ok(())) => CHECK_OK.to_owned(),
                    Ok(Err(e)) if e.is_empty() => "failed".to_owned(),
                    Ok(Err(e)) => e,
                    Err(_) => format!("no answer within {CHECK_TIMEOUT:?}"),
                };
                ((*name).to_owned(), outcome)
            }
        });
        ReadyReport::from_checks(futures::future::join_all(runs).await.into_iter().collect())
    }
}

/// A check that starts or stops failing is logged once, not on every scrape.
fn log_changes(before: &ReadyReport, now: &ReadyReport) {
    for (name, outcome) in &now.checks {
        let was_ok = before.checks.get(name).is_none_or(|o| o == CHECK_OK);
        match (was_ok, outcome == CHECK_OK) {
            (true, false) => tracing::warn!(check = %name, error = %outcome, "not ready"),
            (false, true) => tracing::info!(check = %name, "ready again"),
            _ => {}
        }
    }
}

/// Body of `GET /ready`, 200 and 503 alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadyReport {
    /// `ready` (200) or `not_ready` (503).
    #[schema(example = "ready")]
    pub status: String,
    /// Every check the service registered: `ok`, or what is wrong.
    #[schema(example = json!({"engine": "ok", "store": "ok", "bus": "ok"}))]
    pub checks: BTreeMap<String, String>,
    /// On 503 only: the error envelope's body, code `not_ready`, the failing checks in
    /// `details.failing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl ReadyReport {
    /// The report of these check outcomes.
    pub fn from_checks(checks: BTreeMap<String, String>) -> Self {
        let failing: Vec<&str> = checks
            .iter()
            .filter(|(_, outcome)| *outcome != CHECK_OK)
            .map(|(name, _)| name.as_str())
            .collect();
        if failing.is_empty() {
            return Self {
                status: "ready".to_owned(),
                checks,
                error: None,
            };
        }
        let error = ErrorBody {
            code: NOT_READY.to_owned(),
            message: format!("not ready: {} failing", failing.join(", ")),
            details: json!({ "failing": failing }),
        };
        Self {
            status: NOT_READY.to_owned(),
            checks,
            error: Some(error),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.error.is_none()
    }
}

impl IntoResponse for ReadyReport {
    fn into_response(self) -> Response {
        let status = if self.is_ready() {
            axum::http::StatusCode::OK
        } else {
            Kind::ServiceUnavailable.status()
        };
        (status, Json(self)).into_response()
    }
}

/// `GET /ready`.
pub(crate) async fn ready(readiness: Option<Extension<Readiness>>) -> ReadyReport {
    match readiness {
        Some(Extension(r)) => r.report().await,
        None => ReadyReport::from_checks(BTreeMap::new()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::http::StatusCode;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::Service;

    async fn get_ready(app: &Router) -> (StatusCode, Value) {
        let resp = app
            .clone()
            .oneshot(Request::get("/ready").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    fn app(readiness: Readiness) -> Router {
        let routes = crate::common_routes(Service::Runner, utoipa::openapi::OpenApi::default());
        readiness.install(crate::finish(routes, 1024))
    }

    #[tokio::test]
    async fn no_checks_is_ready() {
        let plain = crate::finish(
            crate::common_routes(Service::Observer, utoipa::openapi::OpenApi::default()),
            1024,
        );
        let (status, body) = get_ready(&plain).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"status": "ready", "checks": {}}));
    }

    #[tokio::test]
    async fn a_failing_check_is_503_naming_it() {
        let engine_down = Arc::new(AtomicBool::new(true));
        let down = engine_down.clone();
        let readiness = Readiness::new()
            .check("store", || async { Ok::<_, String>(()) })
            .check("engine", move || {
                let down = down.load(Ordering::SeqCst);
                async move {
                    if down {
                        Err("cannot connect to the docker engine: gone")
                    } else {
                        Ok(())
                    }
                }
            });
        assert_eq!(readiness.names(), ["store", "engine"]);
        let app = app(readiness);
        let (status, body) = get_ready(&app).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({
                "status": "not_ready",
                "checks": {"engine": "cannot connect to the docker engine: gone", "store": "ok"},
                "error": {
                    "code": "not_ready",
                    "message": "not ready: engine failing",
                    "details": {"failing": ["engine"]},
                },
            })
        );
        engine_down.store(false, Ordering::SeqCst);
        tokio::time::sleep(CACHE_FOR).await;
        let (status, body) = get_ready(&app).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"status": "ready", "checks": {"engine": "ok", "store": "ok"}})
        );
    }

    #[tokio::test]
    async fn checks_run_concurrently_are_bounded_and_cached() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let readiness = Readiness::new()
            .check("slow", move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, String>(())
                }
            })
            .check("also_slow", || async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, String>(())
            })
            .check("hangs", std::future::pending::<Result<(), String>>);
        let app = app(readiness);
        let start = Instant::now();
        // A storm of concurrent scrapes shares one run.
        let storm: Vec<_> = (0..8).map(|_| get_ready(&app)).collect();
        let answers = futures::future::join_all(storm).await;
        let took = start.elapsed();
        assert!(took >= CHECK_TIMEOUT, "{took:?}");
        assert!(took < CHECK_TIMEOUT + Duration::from_secs(1), "{took:?}");
        for (status, body) in answers {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body["checks"]["slow"], "ok");
            assert_eq!(body["checks"]["also_slow"], "ok");
            assert_eq!(body["checks"]["hangs"], "no answer within 2.5s");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
