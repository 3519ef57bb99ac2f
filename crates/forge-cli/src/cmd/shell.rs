//! `forge shell SCENARIO_ID [CONTAINER]`: a console of the lab from a local terminal, over the
//! worker's WebSocket (the bearer token in its `Authorization` header). The learner container
//! by default; learners open the consoles their template declares, instructors any container
//! (`--mode ro` watches without typing). The console is shared: a learner's browser tab and
//! this shell show the same screen, and who else is attached is shown as it changes. The
//! local terminal runs in raw mode so keys (Ctrl-C included) go to the lab; window size
//! changes are forwarded. The session ends when the console's program exits.

use std::io::Write;

use anyhow::Context;
use forge_http::Service;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::client::Endpoint;

/// Restores the terminal mode when dropped, also on errors.
struct RawMode(bool);

impl RawMode {
    fn enter() -> Self {
        Self(crossterm::terminal::enable_raw_mode().is_ok())
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// Which console, and how.
pub struct Console<'a> {
    pub container: Option<&'a str>,
    /// `rw` or `ro`.
    pub mode: Option<&'a str>,
}

pub async fn run(ep: &Endpoint, token: &str, id: &str, console: Console<'_>) -> anyhow::Result<u8> {
    let base = ep.url(Service::Worker, &format!("/v1/scenarios/{id}/terminal"));
    let base = match base.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", base.trim_start_matches("http://")),
    };
    let mut query = Vec::new();
    if let Some(c) = console.container {
        query.push(format!("container={}", urlencode(c)));
    }
    if let Some(m) = console.mode {
        query.push(format!("mode={}", urlencode(m)));
    }
    let url = if query.is_empty() {
        base
    } else {
        format!("{base}?{}", query.join("&"))
    };
    let mut request = url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            let msg = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
            anyhow::bail!(
                "cannot open the console of {id}: {}: {msg}",
                resp.status().as_u16()
            );
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open the console of {id} (is the platform up?)"));
        }
    };
    let (mut tx, mut rx) = ws.split();
    let _raw = RawMode::enter();
    if let Ok((cols, rows)) = crossterm::terminal::size() {
        let msg = serde_json::json!({"type": "resize", "cols": cols, "rows": rows}).to_string();
        let _ = tx.send(Message::Text(msg.into())).await;
    }
    let to_lab = async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 1024];
        let mut last_size = crossterm::terminal::size().ok();
        loop {
            let n = match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let size = crossterm::terminal::size().ok();
            if size != last_size {
                if let Some((cols, rows)) = size {
                    let msg = serde_json::json!({"type": "resize", "cols": cols, "rows": rows})
                        .to_string();
                    let _ = tx.send(Message::Text(msg.into())).await;
                }
                last_size = size;
            }
            if tx
                .send(Message::Binary(buf[..n].to_vec().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let from_lab = async move {
        let mut out = std::io::stdout();
        let mut last_presence = String::new();
        while let Some(Ok(msg)) = rx.next().await {
            match msg {
                Message::Binary(b) => {
                    let _ = out.write_all(&b);
                    let _ = out.flush();
                }
                Message::Text(t) => {
                    // Control messages: who is attached (shown when it changes).
                    if let Some(line) = presence_line(&t, &mut last_presence) {
                        let _ = write!(out, "\r\n\x1b[2m[forge] {line}\x1b[0m\r\n");
                        let _ = out.flush();
                    }
                }
                Message::Close(frame) => {
                    if let Some(f) = frame.filter(|f| !f.reason.is_empty()) {
                        let _ = write!(out, "\r\n[forge] {}\r\n", f.reason);
                    }
                    break;
                }
                _ => {}
            }
        }
    };
    tokio::select! {
        _ = to_lab => {},
        _ = from_lab => {},
    }
    Ok(0)
}

/// The line to show for a presence message `text`, when who is attached changed.
fn presence_line(text: &str, last: &mut String) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    if v["type"] != "presence" {
        return None;
    }
    let mut people: Vec<String> = v["participants"]
        .as_array()?
        .iter()
        .map(|p| {
            let mode = if p["mode"] == "ro" {
                "watching"
            } else {
                "typing"
            };
            format!(
                "{} ({}, {mode})",
                p["sub"].as_str().unwrap_or("?"),
                p["role"].as_str().unwrap_or("?")
            )
        })
        .collect();
    people.sort();
    people.dedup();
    let line = format!("in this console: {}", people.join(", "));
    if *last == line {
        return None;
    }
    *last = line.clone();
    Some(line)
}

/// Percent-encodes a query value (container names are identifiers; this is for safety).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_is_shown_once_per_change() {
        let mut last = String::new();
        let msg = r#"{"type":"presence","participants":[{"sub":"ann","mode":"rw","role":"owner"},{"sub":"tom","mode":"ro","role":"instructor"}]}"#;
        let line = presence_line(msg, &mut last).unwrap();
        assert_eq!(
            line,
            "in this console: ann (owner, typing), tom (instructor, watching)"
        );
        assert!(presence_line(msg, &mut last).is_none());
        assert!(presence_line(r#"{"type":"hello"}"#, &mut last).is_none());
        assert_eq!(urlencode("r1 x"), "r1%20x");
    }
}
