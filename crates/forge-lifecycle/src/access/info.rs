//! `GET /access/{id}/info`: what the learner's page (and the instructor's console panel) shows
//! of one lab — status and time, the objectives with the last check's result and, for those it
//! failed, their hints, and the consoles the caller may open. Scoped like every lookup: the
//! owner, or an instructor of the tenant; anyone else gets the 404 of an unknown id.
//!
//! Consoles follow the terminal's rules (`worker::terminal`): a learner gets the template's
//! learner consoles, an instructor every container of the lab.

use axum::extract::State;
use chrono::{DateTime, SecondsFormat, Utc};
use forge_core::template::{LabConsole, ScenarioTemplate};
use forge_http::ApiError;
use serde::Serialize;

use super::{AccessConfig, AccessState};
use crate::authz::{Authorized, CanView, supervises};
use crate::orchestrator::CheckView;

#[derive(Debug, Serialize)]
struct Objective {
    id: String,
    description: String,
    weight: f64,
    /// Whether the last check found it met (`None` before the first check).
    passed: Option<bool>,
    /// The template's hint, once a check found it not met.
    hint: Option<String>,
}

#[derive(Debug, Serialize)]
struct ConsoleView {
    container: String,
    title: String,
    /// What runs in it, as a shell would write it; `null` for the image's shell.
    command: Option<String>,
    /// Whether learners may open it (instructors see the others too).
    learner: bool,
}

#[derive(Debug, Serialize)]
struct Viewer {
    sub: String,
    /// The lab is the caller's own.
    owner: bool,
    /// The caller supervises the tenant's labs (instructor, platform).
    supervises: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct Info {
    scenario_id: String,
    status: String,
    error: Option<String>,
    template: String,
    track: String,
    tier: Option<String>,
    title: String,
    objectives_text: String,
    objectives: Vec<Objective>,
    last_check: Option<CheckView>,
    learner_container: String,
    consoles: Vec<ConsoleView>,
    owner_sub: String,
    viewer: Viewer,
    created_at: String,
    started_at: Option<String>,
    expires_at: String,
    /// Seconds until the lab expires (0 once it has, or has ended).
    seconds_left: i64,
    #[serde(flatten)]
    services: AccessConfig,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn view(c: LabConsole) -> ConsoleView {
    ConsoleView {
        container: c.container,
        title: c.title,
        command: c
            .command
            .map(|argv| shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_default()),
        learner: c.learner,
    }
}

/// The consoles `all` (an instructor) or a learner may open, declared ones first.
fn consoles(t: &ScenarioTemplate, all: bool) -> Vec<ConsoleView> {
    let mut out: Vec<LabConsole> = t
        .consoles()
        .into_iter()
        .filter(|c| all || c.learner)
        .collect();
    if all {
        for c in &t.spec.assets.containers {
            if !out.iter().any(|o| o.container == c.name)
                && let Some(console) = t.console_of(&c.name)
            {
                out.push(console);
            }
        }
    }
    out.into_iter().map(view).collect()
}

pub(super) async fn info(
    State(s): State<AccessState>,
    Authorized {
        caller,
        scenario: rec,
        ..
    }: Authorized<CanView>,
) -> Result<axum::Json<Info>, ApiError> {
    let entry = s.catalog.get(&rec.template);
    let last = rec.last_check.as_ref();
    let all = supervises(&caller);
    let (title, objectives_text, objectives, learner, consoles, tier) = match entry {
        Some(e) => {
            let t = &e.template;
            let objectives = t
                .spec
                .success_criteria
                .iter()
                .map(|c| {
                    let passed = last.and_then(|l| l.criteria.get(&c.id).copied());
                    Objective {
                        id: c.id.clone(),
                        description: c.description.clone(),
                        weight: c.weight,
                        passed,
                        hint: if passed == Some(false) {
                            c.hint.clone()
                        } else {
                            None
                        },
                    }
                })
                .collect();
            (
                t.description().to_owned(),
                t.metadata
                    .annotations
                    .get("objectives")
                    .cloned()
                    .unwrap_or_default(),
                objectives,
                t.learner_container().name.clone(),
                consoles(t, all),
                t.tier().map(str::to_owned),
            )
        }
        None => (
            rec.template.clone(),
            String::new(),
            Vec::new(),
            String::new(),
            Vec::new(),
            None,
        ),
    };
    let seconds_left = if rec.status.is_terminal() {
        0
    } else {
        (rec.expires_at - Utc::now()).num_seconds().max(0)
    };
    Ok(axum::Json(Info {
        scenario_id: rec.scenario_id.to_string(),
        status: rec.status.as_str().to_owned(),
        error: rec.error.clone(),
        template: rec.template.clone(),
        track: rec.track.as_str().to_owned(),
        tier,
        title,
        objectives_text,
        objectives,
        last_check: last.map(CheckView::of),
        learner_container: learner,
        consoles,
        owner_sub: rec.owner_sub.clone(),
        viewer: Viewer {
            owner: caller.sub == rec.owner_sub,
            supervises: all,
            sub: caller.sub,
        },
        created_at: ts(rec.created_at),
        started_at: rec.started_at.map(ts),
        expires_at: ts(rec.expires_at),
        seconds_left,
        services: s.config.clone(),
    }))
}
