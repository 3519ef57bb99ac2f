//! The learner's access page, served at the spawn response's `access_url`
//! (`{SPAWN_BASE_URL}/access/{scenario_id}`): lab status, time left, objectives, check and
//! submit, a terminal, and the score once published.
//!
//! The page is a static shell; everything about a lab comes from `GET /access/{id}/info`, which
//! needs the learner's bearer token (the page reads it from the URL fragment `#token=…`, which
//! browsers never send to servers, or asks for it) and is tenant- and owner-scoped like every
//! other lookup.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::SecondsFormat;
use forge_catalog::Catalog;
use forge_core::ScenarioId;
use forge_http::ApiError;
use serde::Serialize;

use crate::authz::{Authorized, CanView, ScenarioAccess};

/// Where the page's scripts find the other services (as the learner's browser sees them).
#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub orchestrator_url: String,
    pub worker_url: String,
    pub scoreboard_url: String,
}

#[derive(Clone)]
pub struct AccessState {
    pub config: AccessConfig,
    pub access: ScenarioAccess,
    pub catalog: Arc<Catalog>,
}

#[derive(Debug, Serialize)]
struct Objective {
    id: String,
    description: String,
    weight: f64,
}

#[derive(Debug, Serialize)]
struct Info {
    scenario_id: String,
    status: String,
    error: Option<String>,
    template: String,
    title: String,
    objectives_text: String,
    objectives: Vec<Objective>,
    learner_container: String,
    expires_at: String,
    orchestrator_url: String,
    worker_url: String,
    scoreboard_url: String,
}

/// `/access/{id}` and `/access/{id}/info`; merge into the spawn service's router.
pub fn router(state: AccessState) -> Router {
    let routes = Router::new()
        .route("/access/{id}", get(page))
        .route("/access/{id}/info", get(info))
        .with_state(state.clone());
    state.access.install(routes)
}

async fn page(Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let id: ScenarioId = id.parse().map_err(|_| {
        ApiError::not_found("scenario_not_found", format!("scenario `{id}` not found"))
    })?;
    let html = PAGE.replace("{{SCENARIO_ID}}", id.as_str());
    Ok((
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
            (
                CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src *; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        html,
    ))
}

async fn info(
    State(s): State<AccessState>,
    Authorized { scenario: rec, .. }: Authorized<CanView>,
) -> Result<axum::Json<Info>, ApiError> {
    let entry = s.catalog.get(&rec.template);
    let (title, objectives_text, objectives, learner) = match entry {
        Some(e) => {
            let t = &e.template;
            (
                t.description().to_owned(),
                t.metadata
                    .annotations
                    .get("objectives")
                    .cloned()
                    .unwrap_or_default(),
                t.spec
                    .success_criteria
                    .iter()
                    .map(|c| Objective {
                        id: c.id.clone(),
                        description: c.description.clone(),
                        weight: c.weight,
                    })
                    .collect(),
                t.learner_container().name.clone(),
            )
        }
        None => (
            rec.template.clone(),
            String::new(),
            Vec::new(),
            String::new(),
        ),
    };
    Ok(axum::Json(Info {
        scenario_id: rec.scenario_id.to_string(),
        status: rec.status.as_str().to_owned(),
        error: rec.error.clone(),
        template: rec.template.clone(),
        title,
        objectives_text,
        objectives,
        learner_container: learner,
        expires_at: rec.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        orchestrator_url: s.config.orchestrator_url.clone(),
        worker_url: s.config.worker_url.clone(),
        scoreboard_url: s.config.scoreboard_url.clone(),
    }))
}

const PAGE: &str = include_str!("access.html");
