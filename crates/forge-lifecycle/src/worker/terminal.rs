//! The lab terminal: a WebSocket attached to a shared console session (`sessions`) in one
//! container of a lab.
//!
//! `GET /v1/scenarios/{id}/terminal` opens the console `?container=NAME` (default: the
//! learner container) in `?mode=rw|ro` (default `rw`). Learners open the consoles their
//! template declares for them; instructors (and the platform) any container of the lab, and
//! attaching to a session someone else works in is a drop-in: audited, and shown to everyone
//! attached. The caller proves who they are with the `Authorization` header (the CLI), or with
//! a ticket from `POST /v1/scenarios/{id}/terminal/ticket` (`?ticket=`, the browser: it cannot
//! set headers on a WebSocket, and a bearer token in a URL leaks). `?access_token=` is still
//! accepted for older clients.
//!
//! Frames: binary client frames are keystrokes; a text frame is either JSON
//! `{"type":"resize","cols":C,"rows":R}` / `{"type":"input","data":"…"}` or, if it is not JSON,
//! keystrokes (both dropped in `ro` mode). Server frames are binary terminal output (the
//! session's scrollback first) and JSON text frames: `{"type":"hello",…}` once, then
//! `{"type":"presence","participants":[{"sub","mode","role"}]}` whenever who is attached
//! changes. The socket closes normally when the program exits, with 1013 when the client fell
//! too far behind (reconnect), and with 1008 (policy violation, reason `token expired`) when the
//! caller's token expires: a session never outlives the credential that opened it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use forge_auth::Caller;
use forge_core::audit::{AuditEvent, Outcome};
use forge_core::template::{LabConsole, ScenarioTemplate};
use forge_http::{ApiError, ApiJson, ErrorEnvelope, Kind};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::Worker;
use super::api::ensure_running;
use super::sessions::{Attachment, Participant};
use super::tickets::{Mode, TICKET_TTL};
use crate::authz::{Action, Authorized, CanOperate, supervises};

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resize { cols: u16, rows: u16 },
    Input { data: String },
}

/// Query of the terminal route.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TerminalQuery {
    container: Option<String>,
    mode: Option<Mode>,
    ticket: Option<String>,
    access_token: Option<String>,
}

/// Body of `POST /v1/scenarios/{id}/terminal/ticket`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    /// The console's container (default: the learner container).
    pub container: Option<String>,
    /// `rw` (default) or `ro`.
    pub mode: Option<Mode>,
}

/// A ticket that opens one console once.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TicketIssued {
    /// The secret for `?ticket=`.
    pub ticket: String,
    /// Seconds it stays valid.
    pub expires_in: u64,
    pub container: String,
    pub mode: Mode,
    /// The WebSocket path (on this service) it opens.
    pub path: String,
}

/// Which console `caller` may open, and how: the rules of the module documentation.
fn console_for(
    template: &ScenarioTemplate,
    caller: &Caller,
    container: Option<&str>,
    mode: Option<Mode>,
) -> Result<(LabConsole, Mode), ApiError> {
    let name = container.unwrap_or(&template.learner_container().name);
    let learner_consoles = || {
        template
            .consoles()
            .into_iter()
            .filter(|c| c.learner)
            .map(|c| format!("`{}`", c.container))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(console) = template.console_of(name) else {
        return Err(ApiError::bad_request(
            "unknown_container",
            format!(
                "lab has no container `{name}`; its consoles are {}",
                learner_consoles()
            ),
        ));
    };
    if !console.learner && !supervises(caller) {
        return Err(ApiError::forbidden(
            "console_not_allowed",
            format!(
                "`{name}` has no console for learners; open {}",
                learner_consoles()
            ),
        ));
    }
    Ok((console, mode.unwrap_or(Mode::Rw)))
}

#[utoipa::path(post, path = "/v1/scenarios/{id}/terminal/ticket", request_body = TicketRequest,
    params(("id" = String, Path, description = "Scenario id", pattern = "^scn-[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "A single-use ticket for the terminal WebSocket, valid 30 s and never past the token", body = TicketIssued),
        (status = 400, description = "Malformed body, or a container the lab does not have (`unknown_container`)", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorEnvelope),
        (status = 403, description = "A learner asked for a container without a learner console (`console_not_allowed`)", body = ErrorEnvelope),
        (status = 404, description = "No such scenario the caller may work in (`scenario_not_found`)", body = ErrorEnvelope),
        (status = 409, description = "The lab is not running (`scenario_not_running`)", body = ErrorEnvelope),
        (status = 429, description = "Tenant rate limit; see Retry-After", body = ErrorEnvelope),
        (status = 502, description = "The lab host that runs the lab cannot be reached (`lab_host_unreachable`)", body = ErrorEnvelope),
        (status = 503, description = "Too many tickets wait to be used (`too_many_tickets`), or the lab host is not answering (`lab_host_unavailable`); see Retry-After", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub(super) async fn ticket(
    State(w): State<Worker>,
    Authorized {
        caller,
        scenario: rec,
        ..
    }: Authorized<CanOperate>,
    ApiJson(body): ApiJson<TicketRequest>,
) -> Result<axum::Json<TicketIssued>, ApiError> {
    ensure_running(&rec)?;
    let template = w.template(&rec).map_err(ApiError::internal)?;
    let (console, mode) = console_for(&template, &caller, body.container.as_deref(), body.mode)?;
    let id = rec.scenario_id.clone();
    let secret = w
        .inner
        .tickets
        .issue(caller, rec.scenario_id, console.container.clone(), mode)?;
    Ok(axum::Json(TicketIssued {
        path: format!("/v1/scenarios/{id}/terminal?ticket={secret}"),
        ticket: secret,
        expires_in: TICKET_TTL.as_secs(),
        container: console.container,
        mode,
    }))
}

fn bad_ticket() -> ApiError {
    ApiError::new(
        Kind::Unauthorized,
        "invalid_ticket",
        "the terminal ticket is unknown, used or expired; ask for a new one",
    )
}

pub(super) async fn terminal(
    State(w): State<Worker>,
    Path(id): Path<String>,
    Query(q): Query<TerminalQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (caller, ticketed) = match &q.ticket {
        Some(secret) => {
            let t = w.inner.tickets.redeem(secret).ok_or_else(bad_ticket)?;
            if t.scenario.as_str() != id
                || q.container.as_ref().is_some_and(|c| c != &t.container)
                || q.mode.is_some_and(|m| m != t.mode)
            {
                return Err(bad_ticket());
            }
            (t.caller, Some((t.container, t.mode)))
        }
        None => {
            let header = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let auth = header.or_else(|| q.access_token.as_ref().map(|t| format!("Bearer {t}")));
            let caller = w
                .access()
                .verifier()
                .authenticate(auth.as_deref())
                .await
                .map_err(ApiError::from)?;
            (caller, None)
        }
    };
    // A ticket's holder is authorized again: the lab may have ended since it was issued.
    let rec = w.access().authorize(&caller, &id, Action::Operate).await?;
    ensure_running(&rec)?;
    // Only now is a missing upgrade worth telling: strangers get the same 404 as everywhere.
    let ws = ws.map_err(|r| ApiError::bad_request("websocket_required", r.body_text()))?;
    let template = w.template(&rec).map_err(ApiError::internal)?;
    let (container, mode) = match ticketed {
        Some((c, m)) => (Some(c), Some(m)),
        None => (q.container.clone(), q.mode),
    };
    let (console, mode) = console_for(&template, &caller, container.as_deref(), mode)?;
    let owner = caller.sub == rec.owner_sub;
    let who = Participant {
        sub: caller.sub.clone(),
        mode,
        role: if owner { "owner" } else { "instructor" },
    };
    let runtime = w.deps().runtime.clone();
    let attachment = w
        .inner
        .sessions
        .attach(&runtime, &rec.scenario_id, &console, who)
        .await
        .map_err(|e| {
            ApiError::new(
                Kind::BadGateway,
                "runtime_error",
                format!("cannot open a terminal: {e}"),
            )
        })?;
    w.deps().audit.record(
        AuditEvent::new(
            Utc::now(),
            "scenario.terminal",
            caller.sub.clone(),
            rec.scenario_id.as_str(),
            "execute",
            Outcome::Success,
        )
        .with_detail("tenant_id", rec.tenant_id.clone())
        .with_detail("container", console.container.clone())
        .with_detail("mode", mode.as_str())
        .with_detail("owner", rec.owner_sub.clone())
        .with_detail("dropin", !owner),
    );
    let remaining = Duration::from_secs(caller.expires_at)
        .checked_sub(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        )
        .unwrap_or_default();
    let deadline = Instant::now() + remaining;
    let hello = serde_json::json!({
        "type": "hello", "container": console.container, "title": console.title,
        "mode": mode, "sub": caller.sub,
    })
    .to_string();
    Ok(ws.on_upgrade(move |socket| bridge(socket, attachment, hello, deadline)))
}

/// A close frame with `code` and `reason`.
fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

fn presence(people: &[Participant]) -> Message {
    let text = serde_json::json!({"type": "presence", "participants": people}).to_string();
    Message::Text(text.into())
}

/// Resolves once the session's program has exited.
async fn until_ended(mut ended: tokio::sync::watch::Receiver<bool>) {
    let _ = ended.wait_for(|e| *e).await;
}

async fn bridge(socket: WebSocket, att: Attachment, hello: String, deadline: Instant) {
    let (mut tx, mut rx) = socket.split();
    let (backlog, mut output) = att.subscribe();
    let mut people = att.presence();
    let ended = until_ended(att.ended());
    let to_client = async {
        let _ = tx.send(Message::Text(hello.into())).await;
        if !backlog.is_empty() && tx.send(Message::Binary(backlog.into())).await.is_err() {
            return;
        }
        let now = people.borrow_and_update().clone();
        if tx.send(presence(&now)).await.is_err() {
            return;
        }
        let expiry = tokio::time::sleep_until(deadline);
        tokio::pin!(expiry);
        tokio::pin!(ended);
        loop {
            tokio::select! {
                chunk = output.recv() => match chunk {
                    Ok(bytes) => {
                        if tx.send(Message::Binary(bytes)).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let _ = tx.send(close(close_code::AGAIN, "too far behind; reconnect")).await;
                        return;
                    }
                    Err(RecvError::Closed) => break,
                },
                changed = people.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = people.borrow_and_update().clone();
                    if tx.send(presence(&now)).await.is_err() {
                        return;
                    }
                }
                () = &mut ended => {
                    // What the program wrote last, then the end.
                    while let Ok(bytes) = output.try_recv() {
                        if tx.send(Message::Binary(bytes)).await.is_err() {
                            return;
                        }
                    }
                    break;
                }
                () = &mut expiry => {
                    let _ = tx.send(close(close_code::POLICY, "token expired")).await;
                    return;
                }
            }
        }
        let _ = tx
            .send(close(close_code::NORMAL, "the console ended"))
            .await;
    };
    let from_client = async {
        while let Some(Ok(msg)) = rx.next().await {
            let data: Vec<u8> = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => match serde_json::from_str::<Control>(&t) {
                    Ok(Control::Resize { cols, rows }) => {
                        att.resize(cols, rows).await;
                        continue;
                    }
                    Ok(Control::Input { data }) => data.into_bytes(),
                    Err(_) => t.as_bytes().to_vec(),
                },
                Message::Close(_) => break,
                _ => continue,
            };
            if !att.input(data).await {
                break;
            }
        }
    };
    // Whichever side ends first ends this attachment; the session lives on for the others.
    tokio::select! {
        _ = to_client => {},
        _ = from_client => {},
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(ticket), components(schemas(TicketRequest, TicketIssued, Mode)))]
pub(super) struct TerminalDoc;
