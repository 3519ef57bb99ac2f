//! Terminal tickets: how a browser opens the terminal WebSocket without its bearer token in
//! the URL (where proxies, logs and the history keep it).
//!
//! The page asks `POST /v1/scenarios/{id}/terminal/ticket` with its bearer token (a header, as
//! on every route) for one console and mode; the worker checks everything the terminal would
//! check and answers a random secret that opens exactly that: this tenant, subject, scenario,
//! container and mode, once, within [`TICKET_TTL`], and never past the token's own expiry
//! (the session it opens closes there, like any other). Tickets live in the worker that
//! issued them; in distributed mode the request for one is forwarded to the lab's host like
//! the terminal itself (`forward`), so both land where the lab runs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use forge_auth::Caller;
use forge_core::ScenarioId;
use forge_http::{ApiError, Kind};
use serde::{Deserialize, Serialize};

/// How long a ticket may wait for its WebSocket.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Unredeemed tickets a worker keeps at most; beyond, new ones are refused (503) until old
/// ones expire, so a client cannot grow the map without bound.
const MAX_OUTSTANDING: usize = 10_000;

/// Who may type into a console session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Read and write: keystrokes and resizes reach the console.
    Rw,
    /// Read only: the output is shown, keystrokes are dropped.
    Ro,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Rw => "rw",
            Mode::Ro => "ro",
        }
    }

    pub fn writes(self) -> bool {
        self == Mode::Rw
    }
}

/// What a ticket opens.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    pub caller: Caller,
    pub scenario: ScenarioId,
    pub container: String,
    pub mode: Mode,
    expires: Instant,
}

/// The worker's outstanding tickets.
#[derive(Default)]
pub(crate) struct Tickets {
    open: Mutex<HashMap<String, Ticket>>,
}

impl Tickets {
    /// A new single-use ticket for `caller` to open `container` of `scenario` in `mode`.
    pub fn issue(
        &self,
        caller: Caller,
        scenario: ScenarioId,
        container: String,
        mode: Mode,
    ) -> Result<String, ApiError> {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, t| t.expires > now);
        if open.len() >= MAX_OUTSTANDING {
            return Err(ApiError::new(
                Kind::ServiceUnavailable,
                "too_many_tickets",
                "too many terminal tickets are waiting to be used; try again shortly",
            )
            .with_retry_after(TICKET_TTL.as_secs()));
        }
        // Never valid past the token it was issued for.
        let token_left = Duration::from_secs(caller.expires_at).saturating_sub(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let secret = hex::encode(rand::random::<[u8; 32]>());
        open.insert(
            secret.clone(),
            Ticket {
                caller,
                scenario,
                container,
                mode,
                expires: now + TICKET_TTL.min(token_left),
            },
        );
        Ok(secret)
    }

    /// The ticket `secret` opens, taken out so it opens nothing again; `None` when it is
    /// unknown, used or expired.
    pub fn redeem(&self, secret: &str) -> Option<Ticket> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(secret).filter(|t| t.expires > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            sub: "learner".into(),
            tenant_id: "demo".into(),
            roles: vec![],
            expires_at: u64::MAX,
        }
    }

    #[test]
    fn a_ticket_opens_once_and_only_what_it_names() {
        let t = Tickets::default();
        let id: ScenarioId = "scn-000000000001".parse().unwrap();
        let secret = t
            .issue(caller(), id.clone(), "pc".into(), Mode::Ro)
            .unwrap();
        assert_eq!(secret.len(), 64);
        assert!(t.redeem("not-a-ticket").is_none());
        let got = t.redeem(&secret).expect("first use");
        assert_eq!(
            (got.scenario, got.container.as_str(), got.mode),
            (id, "pc", Mode::Ro)
        );
        assert!(t.redeem(&secret).is_none(), "single use");
    }

    #[test]
    fn a_ticket_expires_with_its_token() {
        let t = Tickets::default();
        let id: ScenarioId = "scn-000000000001".parse().unwrap();
        let expired = Caller {
            expires_at: 1,
            ..caller()
        };
        let secret = t.issue(expired, id, "pc".into(), Mode::Rw).unwrap();
        assert!(t.redeem(&secret).is_none());
    }

    #[test]
    fn an_expired_ticket_opens_nothing() {
        let t = Tickets::default();
        let id: ScenarioId = "scn-000000000001".parse().unwrap();
        let secret = t.issue(caller(), id, "pc".into(), Mode::Rw).unwrap();
        t.open.lock().unwrap().get_mut(&secret).unwrap().expires = Instant::now();
        assert!(t.redeem(&secret).is_none());
    }
}
