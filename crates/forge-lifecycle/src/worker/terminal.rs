//! The learner's terminal: a WebSocket bridged to an interactive TTY exec in the learner
//! container.
//!
//! Browsers cannot set headers on a WebSocket, so the bearer token may also come as the
//! `access_token` query parameter. Frames: binary client frames are keystrokes; a text frame is
//! either JSON `{"type":"resize","cols":C,"rows":R}` / `{"type":"input","data":"…"}` or, if it
//! is not JSON, keystrokes. Server frames are binary terminal output; the socket closes when
//! the shell exits.

use std::collections::HashMap;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use forge_core::audit::{AuditEvent, Outcome};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;

use super::Worker;
use super::api::ensure_running;
use crate::authz::Action;
use forge_http::{ApiError, Kind};

#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resize { cols: u16, rows: u16 },
    Input { data: String },
}

pub(super) async fn terminal(
    State(w): State<Worker>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let auth = header.or_else(|| q.get("access_token").map(|t| format!("Bearer {t}")));
    let caller = w
        .access()
        .verifier()
        .authenticate(auth.as_deref())
        .await
        .map_err(ApiError::from)?;
    let rec = w.access().authorize(&caller, &id, Action::Operate).await?;
    ensure_running(&rec)?;
    // Only now is a missing upgrade worth telling: strangers get the same 404 as everywhere.
    let ws = ws.map_err(|r| ApiError::bad_request("websocket_required", r.body_text()))?;
    let template = w.template(&rec).map_err(ApiError::internal)?;
    let container = template.learner_container().name.clone();
    let session = w
        .deps()
        .runtime
        .exec_tty(&rec.scenario_id, &container, None)
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
        .with_detail("container", container),
    );
    Ok(ws.on_upgrade(move |socket| bridge(socket, session)))
}

async fn bridge(socket: WebSocket, session: forge_runtime::TtySession) {
    let (mut tx, mut rx) = socket.split();
    let forge_runtime::TtySession {
        mut output,
        mut input,
        resizer,
    } = session;
    let to_client = async {
        while let Some(chunk) = output.next().await {
            let Ok(bytes) = chunk else { break };
            if tx.send(Message::Binary(bytes.into())).await.is_err() {
                break;
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    };
    let from_client = async {
        while let Some(Ok(msg)) = rx.next().await {
            let data: Vec<u8> = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => match serde_json::from_str::<Control>(&t) {
                    Ok(Control::Resize { cols, rows }) => {
                        let _ = resizer
                            .resize(cols.clamp(1, 1000), rows.clamp(1, 1000))
                            .await;
                        continue;
                    }
                    Ok(Control::Input { data }) => data.into_bytes(),
                    Err(_) => t.as_bytes().to_vec(),
                },
                Message::Close(_) => break,
                _ => continue,
            };
            if input.write_all(&data).await.is_err() {
                break;
            }
        }
    };
    // Whichever side ends first ends the session; dropping the exec input stops the shell.
    tokio::select! {
        _ = to_client => {},
        _ = from_client => {},
    }
}
