//! The terminal WebSocket's doors: who may open one (the same rules as every scenario route,
//! answered before any upgrade), and how long it stays open — never past the token that opened
//! it, nor past the lab.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::harness::Harness;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn terminal_url(h: &Harness, id: &str, token: Option<&str>) -> String {
    let base = format!(
        "{}/v1/scenarios/{id}/terminal",
        h.api.worker.replace("http://", "ws://")
    );
    match token {
        Some(t) => format!("{base}?access_token={t}"),
        None => base,
    }
}

/// The HTTP status a refused upgrade answered with.
async fn refused(url: String) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("the upgrade must be refused"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_refuses_missing_forged_expired_and_foreign_tokens() {
    let h = Harness::start().await;
    let id = h.running().await;
    let p = &h.platform;

    assert_eq!(refused(terminal_url(&h, &id, None)).await, 401, "no token");
    assert_eq!(
        refused(terminal_url(&h, &id, Some("not.a.token"))).await,
        401,
        "forged token"
    );
    // Long past `exp` (beyond the verifier's clock-skew leeway).
    let expired = p
        .mint_until("demo", &["forge.spawn"], "learner-1", now() - 3600)
        .unwrap();
    assert_eq!(
        refused(terminal_url(&h, &id, Some(&expired))).await,
        401,
        "expired token"
    );
    // Strangers: another tenant (even an instructor there) and a classmate get the 404 of an
    // unknown scenario.
    for (tenant, roles, sub) in [
        ("acme", &["forge.spawn", "forge.instructor"][..], "eve"),
        ("demo", &["forge.spawn"][..], "bob"),
    ] {
        let t = p.mint(tenant, roles, sub).unwrap();
        assert_eq!(
            refused(terminal_url(&h, &id, Some(&t))).await,
            404,
            "{tenant}/{sub}"
        );
    }
    // A role that may read scores does not open shells.
    let auditor = p
        .mint("demo", &["forge.score.read_all"], "auditor")
        .unwrap();
    assert_eq!(
        refused(terminal_url(&h, &id, Some(&auditor))).await,
        404,
        "score reader"
    );
    assert!(h.audited("scenario.terminal", &id).is_empty());

    // The owner's token is accepted, and so is the tenant's instructor's.
    let teacher = p.mint("demo", &["forge.instructor"], "teacher").unwrap();
    for token in [h.api.token.as_str(), teacher.as_str()] {
        crate::harness::terminal_echoes(terminal_url(&h, &id, Some(token)), (80, 24), "echo ok")
            .await;
    }
    assert_eq!(h.audited("scenario.terminal", &id).len(), 2);

    // Once the lab has ended there is nothing to attach to: 409, not a dangling session.
    assert_eq!(h.api.delete(&id).await, 200);
    h.wait_status(&id, "failed", Duration::from_secs(5)).await;
    assert_eq!(
        refused(terminal_url(&h, &id, Some(&h.api.token))).await,
        409
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_session_ends_when_its_token_expires() {
    let h = Harness::start().await;
    let id = h.running().await;
    // The harness's learner is `learner-1` of `demo`; this token of theirs runs out in 3 s.
    let exp = now() + 3;
    let token = h
        .platform
        .mint_until("demo", &["forge.spawn"], "learner-1", exp)
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(terminal_url(&h, &id, Some(&token)))
        .await
        .expect("a live token opens the terminal");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(WsMessage::Close(frame)) => return frame,
                Ok(_) => continue,
                Err(e) => panic!("the server must close cleanly: {e}"),
            }
        }
        None
    })
    .await
    .expect("the session must end at the token's expiry");
    let frame = closed.expect("a close frame with a reason");
    assert_eq!(frame.code, CloseCode::Policy);
    assert_eq!(frame.reason.as_str(), "token expired");
    assert!(
        now() >= exp,
        "closed before the token expired ({} < {exp})",
        now()
    );
    h.stop().await;
}
