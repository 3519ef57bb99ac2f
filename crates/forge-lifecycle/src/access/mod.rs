//! The web pages, on the spawn service's port: the learner's page at the spawn response's
//! `access_url` (`/access/{id}`: status, time left, objectives with the last check and hints,
//! check and submit, the score and how to verify it, a terminal tab per console), the
//! instructor's view (`/instructor`: the tenant's live labs, drop-in consoles, more time, end,
//! scores, fairness) and the operator's page (`/operator`: lab hosts and capacity, recent
//! failures, audit chain).
//!
//! The pages are static shells; everything about labs comes from the services' APIs with the
//! caller's bearer token, which the pages read from the URL fragment (`#token=…`, which browsers
//! never send to servers) or ask for, and keep in the tab's session storage. The terminal
//! WebSocket is opened with a single-use ticket (`worker::terminal`), never with the token in
//! its URL. Scripts and styles are files of `assets/` compiled in ([`assets`]), served under
//! content-hashed URLs with a year-long cache; the pages allow no inline script (CSP).
//! `GET /access/{id}/info` ([`info`]) is what the learner's page and the instructor's console
//! panel read about one lab, tenant- and owner-scoped like every lookup.

pub mod assets;
mod info;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use forge_catalog::Catalog;
use forge_core::ScenarioId;
use forge_http::ApiError;
use serde::Serialize;

use crate::authz::ScenarioAccess;

/// Where the pages' scripts find the other services (as the browser sees them).
#[derive(Debug, Clone, Serialize)]
pub struct AccessConfig {
    pub orchestrator_url: String,
    pub worker_url: String,
    pub scoreboard_url: String,
    pub observer_url: String,
}

#[derive(Clone)]
pub struct AccessState {
    pub config: AccessConfig,
    pub access: ScenarioAccess,
    pub catalog: Arc<Catalog>,
}

/// The pages: (route, file under `assets/pages/`).
const PAGES: [(&str, &str); 3] = [
    (
        "/access/{id}",
        include_str!("../../assets/pages/access.html"),
    ),
    (
        "/instructor",
        include_str!("../../assets/pages/instructor.html"),
    ),
    (
        "/operator",
        include_str!("../../assets/pages/operator.html"),
    ),
];

/// The pages and their assets; merge into the spawn service's router.
pub fn router(state: AccessState) -> Router {
    let csp = HeaderValue::from_str(&content_security_policy(&state.config))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    let mut pages = Router::new();
    for (i, (route, _)) in PAGES.iter().enumerate() {
        let csp = csp.clone();
        pages = pages.route(
            route,
            get(move |id: Option<Path<String>>| async move {
                // A lab page for something that cannot be a scenario id is the API's 404.
                if let Some(Path(id)) = id
                    && id.parse::<ScenarioId>().is_err()
                {
                    return ApiError::not_found(
                        "scenario_not_found",
                        format!("scenario `{id}` not found"),
                    )
                    .into_response();
                }
                page(i, csp)
            }),
        );
    }
    let routes = pages
        .route("/web/config.json", get(config))
        .route("/assets/{hash}/{file}", get(assets::serve))
        .route("/access/{id}/info", get(info::info))
        .with_state(state.clone());
    state.access.install(routes)
}

/// Page `i` of [`PAGES`], its asset references resolved (once).
fn page(i: usize, csp: HeaderValue) -> Response {
    static RENDERED: OnceLock<Vec<String>> = OnceLock::new();
    let rendered = RENDERED.get_or_init(|| PAGES.iter().map(|(_, p)| assets::render(p)).collect());
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            // The page names its assets by content hash: a new build is a new page.
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (CONTENT_SECURITY_POLICY, csp),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        rendered[i].clone(),
    )
        .into_response()
}

/// `GET /web/config.json`: where the services are. Not a secret: every page shows it.
async fn config(State(s): State<AccessState>) -> impl IntoResponse {
    ([(CACHE_CONTROL, "no-cache")], axum::Json(s.config.clone()))
}

/// Scripts and styles from this service only (no inline script; inline styles because the
/// terminal sets its colours with a style element), and requests to the services the pages
/// call, the worker's terminal WebSocket included.
fn content_security_policy(c: &AccessConfig) -> String {
    let mut connect = vec!["'self'".to_owned()];
    for url in [
        &c.orchestrator_url,
        &c.worker_url,
        &c.scoreboard_url,
        &c.observer_url,
    ] {
        let origin = origin(url);
        if origin.is_empty() {
            continue;
        }
        if let Some(rest) = origin.strip_prefix("http://") {
            connect.push(format!("ws://{rest}"));
        } else if let Some(rest) = origin.strip_prefix("https://") {
            connect.push(format!("wss://{rest}"));
        }
        connect.push(origin);
    }
    connect.dedup();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; connect-src {}; frame-ancestors 'none'; base-uri 'none'; \
         form-action 'none'",
        connect.join(" ")
    )
}

/// `scheme://host[:port]` of `url`.
fn origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_lets_pages_reach_the_services_and_nothing_inline() {
        let c = AccessConfig {
            orchestrator_url: "http://lab.example:8083".into(),
            worker_url: "https://lab.example/worker/".into(),
            scoreboard_url: "http://lab.example:8086".into(),
            observer_url: "http://lab.example:8085".into(),
        };
        let csp = content_security_policy(&c);
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains(" wss://lab.example "), "{csp}");
        assert!(csp.contains(" https://lab.example"), "{csp}");
        assert!(
            csp.contains(" ws://lab.example:8083 http://lab.example:8083"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-eval"));
    }
}
