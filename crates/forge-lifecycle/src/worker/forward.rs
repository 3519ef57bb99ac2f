//! Lab actions reach the host that owns the lab (docs/distributed.md, Lab hosts).
//!
//! Any worker replica answers `check`, `exec`, `terminal` and the LLM `proposals` routes
//! (`crate::llm`, whose proposals live in the owner's memory) for any lab, and any runner a
//! playbook run in any lab (`crate::runner`, forwarded to the owner's runner): when the scenario's
//! `host_id` names another host, the request is forwarded to that host's worker (its URL from
//! the host's lease record) and the answer relayed unchanged; a terminal is relayed frame by
//! frame. The owner authenticates and authorizes as usual, so a forwarded request is neither
//! more nor less allowed than a direct one. One hop only: a forwarded request is handled where
//! it lands (`x-forge-forwarded-by`), so two hosts that disagree cannot bounce it forever.

use axum::body::Body;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use super::Worker;
use forge_http::{ApiError, Kind};
use forge_store::Store;

/// Marks a request one worker forwarded to another.
pub const FORWARDED_BY: &str = "x-forge-forwarded-by";

/// The lab actions that need the lab's own host (a terminal's ticket is redeemed where it was
/// issued, so it is asked for there too).
const LAB_ACTIONS: [&str; 4] = ["check", "exec", "terminal", "terminal/ticket"];

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1), plus those the
/// client recomputes.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHORIZATION,
];

/// `(scenario id, action)` of a lab action path.
fn lab_action(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1/scenarios/")?;
    let (id, action) = rest.split_once('/')?;
    // LLM proposals live in the memory of the lab's host's worker (crate::llm).
    if action == "proposals" || action.starts_with("proposals/") {
        return Some((id, "proposals"));
    }
    LAB_ACTIONS.contains(&action).then_some((id, action))
}

/// Middleware on the worker's lab routes: handle here, or forward to the owning host.
pub(crate) async fn to_owner(State(w): State<Worker>, req: Request, next: Next) -> Response {
    if req.headers().contains_key(FORWARDED_BY) {
        return next.run(req).await;
    }
    let Some((id, action)) = lab_action(req.uri().path()) else {
        return next.run(req).await;
    };
    let d = w.deps();
    let base = match owner_url(d.store.as_ref(), &d.host_id, id, Endpoint::Worker).await {
        Ok(None) => return next.run(req).await,
        Ok(Some(base)) => base,
        Err(e) => return e.into_response(),
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path(), |p| p.as_str())
        .to_owned();
    metrics::counter!("forge_worker_forwarded_total", "action" => action.to_owned()).increment(1);
    if action == "terminal" {
        // The WebSocket itself; its ticket (`terminal/ticket`) is plain HTTP.
        relay_terminal(w, req, format!("{}{path}", ws_base(&base))).await
    } else {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        relay_http(&w.inner.http, &w.deps().host_id, req, url).await
    }
}

/// Which of a lab host's services a request is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint {
    Worker,
    Runner,
}

/// The base URL of `endpoint` on the host that owns scenario `id`, when that is another host
/// than `self_host`; `None` when this host should answer (its own lab, an unknown id, a lab not
/// placed yet). A host whose lease ran out, or that registered no such URL, is unavailable.
pub(crate) async fn owner_url(
    store: &dyn Store,
    self_host: &str,
    id: &str,
    endpoint: Endpoint,
) -> Result<Option<String>, ApiError> {
    let Ok(id) = id.parse::<forge_core::ScenarioId>() else {
        return Ok(None);
    };
    let rec = store.get_any(&id).await.map_err(ApiError::internal)?;
    let Some(owner) = rec.and_then(|r| r.host_id) else {
        return Ok(None);
    };
    if owner == self_host {
        return Ok(None);
    }
    let hosts = store.lab_hosts().await.map_err(ApiError::internal)?;
    let unavailable = |why: String| {
        ApiError::new(Kind::ServiceUnavailable, "lab_host_unavailable", why).with_retry_after(5)
    };
    let Some(h) = hosts.into_iter().find(|h| h.host_id == owner) else {
        return Err(unavailable(format!(
            "the lab host `{owner}` is not registered"
        )));
    };
    let url = match endpoint {
        Endpoint::Worker => h.url.clone(),
        Endpoint::Runner => h.runner_url.clone(),
    };
    if h.expired(Utc::now()) || url.is_empty() {
        return Err(unavailable(format!(
            "the lab host `{owner}` that runs this lab is not answering"
        )));
    }
    Ok(Some(url))
}

fn ws_base(http_base: &str) -> String {
    let base = http_base.trim_end_matches('/');
    match base.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", base.trim_start_matches("http://")),
    }
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !HOP_BY_HOP.contains(k) && !k.as_str().starts_with("sec-websocket-") {
            to.append(k.clone(), v.clone());
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> Response {
    ApiError::new(
        Kind::BadGateway,
        "lab_host_unreachable",
        format!("cannot reach the lab host that runs this lab: {e}"),
    )
    .into_response()
}

/// Sends `req` to `url` as this host (`self_host`) and relays the answer unchanged.
pub(crate) async fn relay_http(
    http: &reqwest::Client,
    self_host: &str,
    req: Request,
    url: String,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, forge_http::DEFAULT_BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(Kind::PayloadTooLarge, "body_too_large", e.to_string())
                .into_response();
        }
    };
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers);
    let sent = http
        .request(parts.method, url)
        .headers(headers)
        .header(FORWARDED_BY, self_host)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return unreachable(e),
    };
    let status = resp.status();
    let mut headers = HeaderMap::new();
    copy_headers(resp.headers(), &mut headers);
    match resp.bytes().await {
        Ok(bytes) => {
            let mut out = Response::new(Body::from(bytes));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            out
        }
        Err(e) => unreachable(e),
    }
}

async fn relay_terminal(w: Worker, req: Request, url: String) -> Response {
    let (mut parts, _) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        // Not an upgrade: the owner answers with the usual errors.
        Err(_) => {
            let req = Request::from_parts(parts, Body::empty());
            return relay_http(&w.inner.http, &w.deps().host_id, req, http_of(&url)).await;
        }
    };
    let mut upstream = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return unreachable(e),
    };
    copy_headers(&parts.headers, upstream.headers_mut());
    if let Ok(v) = HeaderValue::from_str(&w.deps().host_id) {
        upstream.headers_mut().insert(FORWARDED_BY, v);
    }
    // Connect before upgrading, so a refusal (401, 404, 409) reaches the client as itself.
    let socket = match tokio_tungstenite::connect_async(upstream).await {
        Ok((s, _)) => s,
        Err(tungstenite::Error::Http(resp)) => {
            let (p, body) = resp.into_parts();
            let mut out = Response::new(Body::from(body.unwrap_or_default()));
            *out.status_mut() = p.status;
            if let Some(ct) = p.headers.get(header::CONTENT_TYPE) {
                out.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
            }
            return out;
        }
        Err(e) => return unreachable(e),
    };
    ws.on_upgrade(move |client| pipe(client, socket))
}

fn http_of(ws_url: &str) -> String {
    match ws_url.strip_prefix("wss://") {
        Some(rest) => format!("https://{rest}"),
        None => format!("http://{}", ws_url.trim_start_matches("ws://")),
    }
}

/// Relays frames both ways until either side closes.
async fn pipe(
    client: WebSocket,
    upstream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    use tungstenite::Message as Up;
    let (mut ctx, mut crx) = client.split();
    let (mut utx, mut urx) = upstream.split();
    let down = async {
        while let Some(Ok(m)) = urx.next().await {
            let m = match m {
                Up::Binary(b) => WsMessage::Binary(b),
                Up::Text(t) => WsMessage::Text(t.as_str().into()),
                // The owner's close code (1008 token expired, 1013 reconnect) is the client's.
                Up::Close(frame) => {
                    let frame = frame.map(|f| axum::extract::ws::CloseFrame {
                        code: f.code.into(),
                        reason: f.reason.as_str().into(),
                    });
                    let _ = ctx.send(WsMessage::Close(frame)).await;
                    return;
                }
                _ => continue,
            };
            if ctx.send(m).await.is_err() {
                break;
            }
        }
        let _ = ctx.send(WsMessage::Close(None)).await;
    };
    let up = async {
        while let Some(Ok(m)) = crx.next().await {
            let m = match m {
                WsMessage::Binary(b) => Up::Binary(b),
                WsMessage::Text(t) => Up::Text(t.as_str().into()),
                WsMessage::Close(_) => break,
                _ => continue,
            };
            if utx.send(m).await.is_err() {
                break;
            }
        }
        let _ = utx.send(Up::Close(None)).await;
    };
    tokio::select! {
        _ = down => {},
        _ = up => {},
    }
}

#[cfg(test)]
mod tests {
    use super::lab_action;

    #[test]
    fn lab_actions_and_proposals_go_to_the_owner() {
        let id = "scn-0123456789ab";
        assert_eq!(
            lab_action(&format!("/v1/scenarios/{id}/exec")),
            Some((id, "exec"))
        );
        for path in ["proposals", "proposals/prp-0123456789ab/approve"] {
            assert_eq!(
                lab_action(&format!("/v1/scenarios/{id}/{path}")),
                Some((id, "proposals")),
                "{path}"
            );
        }
        assert_eq!(lab_action(&format!("/v1/scenarios/{id}/submit")), None);
    }
}
