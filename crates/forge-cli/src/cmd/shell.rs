//! `forge shell SCENARIO_ID`: the lab terminal from a local terminal, over the worker's
//! WebSocket. The local terminal runs in raw mode so keys (Ctrl-C included) go to the lab;
//! window size changes are forwarded. The session ends when the lab's shell exits.

use std::io::Write;

use anyhow::Context;
use forge_http::Service;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

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

pub async fn run(ep: &Endpoint, token: &str, id: &str) -> anyhow::Result<u8> {
    let base = ep.url(Service::Worker, &format!("/v1/scenarios/{id}/terminal"));
    let base = match base.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", base.trim_start_matches("http://")),
    };
    let url = format!("{base}?access_token={token}");
    let (ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("cannot open the terminal of {id} (is it running, and yours?)"))?;
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
        while let Some(Ok(msg)) = rx.next().await {
            match msg {
                Message::Binary(b) => {
                    let _ = out.write_all(&b);
                    let _ = out.flush();
                }
                Message::Text(t) => {
                    let _ = out.write_all(t.as_bytes());
                    let _ = out.flush();
                }
                Message::Close(_) => break,
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
