//! Shared console sessions: one terminal per (lab, container), which every WebSocket opened on
//! that console attaches to, tmux-like.
//!
//! Sharing is what makes three things work: a learner whose connection blips reconnects to the
//! same shell (it lingers [`LINGER`] after its last viewer leaves, and a newcomer is sent the
//! last [`SCROLLBACK`] bytes first); a learner's second tab or `forge shell` shows the same
//! screen; and an instructor drops into the learner's console and sees what they type. The
//! terminal's output is fanned out to every attachment through a broadcast channel; input and
//! resizes come only from attachments in [`Mode::Rw`]. Who is attached is published to every
//! attachment ([`Participant`]), so a learner always sees who is watching.
//!
//! A session ends when its program exits (every attachment is closed) or when it has had no
//! attachment for [`LINGER`] (its input is dropped, which ends the program).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use forge_core::ScenarioId;
use forge_core::template::LabConsole;
use forge_runtime::{Runtime, RuntimeError, TtyResize, TtySession};
use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc, watch};

use super::tickets::Mode;

/// How long a session outlives its last attachment (a reconnect within it finds the shell).
pub const LINGER: Duration = Duration::from_secs(60);
/// Output a newcomer is sent first, so the screen is not blank.
pub const SCROLLBACK: usize = 64 * 1024;
/// Output chunks an attachment may fall behind before it is closed (to reconnect afresh).
const FANOUT: usize = 1024;

/// Someone attached to a session, as every attachment is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Participant {
    pub sub: String,
    pub mode: Mode,
    /// `owner` (the lab's learner) or `instructor` (anyone else the rules let in).
    pub role: &'static str,
}

type Key = (ScenarioId, String);
type Map = Arc<Mutex<HashMap<Key, Arc<Shared>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The worker's sessions.
#[derive(Clone, Default)]
pub(crate) struct Sessions {
    map: Map,
}

/// What the program's output reaches: the scrollback and the fan-out, updated under one lock
/// so an attachment sees every byte exactly once (scrollback, then the channel).
struct Output {
    scrollback: Mutex<VecDeque<u8>>,
    tx: broadcast::Sender<Bytes>,
    ended: watch::Sender<bool>,
}

/// One console session.
pub(crate) struct Shared {
    /// Tells this session from a later one of the same console.
    sid: u64,
    out: Arc<Output>,
    input: mpsc::Sender<Vec<u8>>,
    resizer: Arc<dyn TtyResize>,
    people: Mutex<BTreeMap<u64, Participant>>,
    presence: watch::Sender<Vec<Participant>>,
    /// Bumped on every join, so a linger timer started before it does nothing.
    joins: AtomicU64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Sessions {
    /// Attaches `who` to the session of `console` in `scenario`, starting one when there is
    /// none (running the console's command through `runtime`).
    pub async fn attach(
        &self,
        runtime: &Arc<dyn Runtime>,
        scenario: &ScenarioId,
        console: &LabConsole,
        who: Participant,
    ) -> Result<Attachment, RuntimeError> {
        let key = (scenario.clone(), console.container.clone());
        let found = lock(&self.map).get(&key).filter(|s| !s.ended()).cloned();
        let shared = match found {
            Some(s) => s,
            None => {
                let tty = runtime
                    .exec_tty(scenario, &console.container, console.command.clone())
                    .await?;
                let fresh = self.start(key.clone(), tty);
                // Another attach may have started one while we waited for ours: keep the
                // first, and drop ours (its program ends with its input).
                let mut map = lock(&self.map);
                match map.get(&key) {
                    Some(s) if !s.ended() => s.clone(),
                    _ => {
                        map.insert(key.clone(), fresh.clone());
                        fresh
                    }
                }
            }
        };
        Ok(self.join(shared, key, who))
    }

    fn start(&self, key: Key, tty: TtySession) -> Arc<Shared> {
        let TtySession {
            mut output,
            mut input,
            resizer,
        } = tty;
        let (tx, _) = broadcast::channel(FANOUT);
        let out = Arc::new(Output {
            scrollback: Mutex::default(),
            tx,
            ended: watch::channel(false).0,
        });
        let (input_tx, mut input_rx) = mpsc::channel::<Vec<u8>>(256);
        let sid = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        // Keystrokes to the program until every sender is gone (the session was dropped).
        tokio::spawn(async move {
            while let Some(bytes) = input_rx.recv().await {
                if input.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        // The program's output to the scrollback and every attachment, until it ends.
        let pump = out.clone();
        let map = self.map.clone();
        tokio::spawn(async move {
            while let Some(Ok(chunk)) = output.next().await {
                let mut back = lock(&pump.scrollback);
                back.extend(&chunk);
                trim(&mut back);
                let _ = pump.tx.send(Bytes::from(chunk));
            }
            pump.ended.send_replace(true);
            let mut map = lock(&map);
            if map.get(&key).is_some_and(|s| s.sid == sid) {
                map.remove(&key);
            }
        });
        Arc::new(Shared {
            sid,
            out,
            input: input_tx,
            resizer: Arc::from(resizer),
            people: Mutex::default(),
            presence: watch::channel(Vec::new()).0,
            joins: AtomicU64::new(0),
        })
    }

    fn join(&self, shared: Arc<Shared>, key: Key, who: Participant) -> Attachment {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        shared.joins.fetch_add(1, Ordering::Relaxed);
        let mode = who.mode;
        lock(&shared.people).insert(id, who);
        shared.publish();
        Attachment {
            shared,
            id,
            mode,
            key,
            map: self.map.clone(),
        }
    }
}

/// Keeps the last [`SCROLLBACK`] bytes, starting after a line break where there is one, so a
/// replay rarely begins in the middle of an escape sequence.
fn trim(back: &mut VecDeque<u8>) {
    if back.len() <= SCROLLBACK {
        return;
    }
    let mut cut = back.len() - SCROLLBACK;
    if let Some(nl) = back.range(cut..).position(|&b| b == b'\n') {
        cut += nl + 1;
    }
    back.drain(..cut);
}

impl Shared {
    fn ended(&self) -> bool {
        *self.out.ended.borrow()
    }

    fn publish(&self) {
        let people: Vec<Participant> = lock(&self.people).values().cloned().collect();
        self.presence.send_replace(people);
    }
}

/// One WebSocket's place in a session; leaving (drop) updates everyone's presence, and the
/// last one to leave starts the linger.
pub(crate) struct Attachment {
    shared: Arc<Shared>,
    id: u64,
    mode: Mode,
    key: Key,
    map: Map,
}

impl Attachment {
    /// The scrollback so far and the output after it.
    pub fn subscribe(&self) -> (Vec<u8>, broadcast::Receiver<Bytes>) {
        let back = lock(&self.shared.out.scrollback);
        let rx = self.shared.out.tx.subscribe();
        (back.iter().copied().collect(), rx)
    }

    /// Who is attached, now and as it changes.
    pub fn presence(&self) -> watch::Receiver<Vec<Participant>> {
        self.shared.presence.subscribe()
    }

    /// Turns true when the program has exited.
    pub fn ended(&self) -> watch::Receiver<bool> {
        self.shared.out.ended.subscribe()
    }

    /// Sends keystrokes, if this attachment may type; `false` once the program is gone.
    pub async fn input(&self, bytes: Vec<u8>) -> bool {
        if !self.mode.writes() {
            return true;
        }
        self.shared.input.send(bytes).await.is_ok()
    }

    /// Resizes the terminal, if this attachment may (a watcher's window is not the learner's).
    pub async fn resize(&self, cols: u16, rows: u16) {
        if self.mode.writes() {
            let _ = self
                .shared
                .resizer
                .resize(cols.clamp(1, 1000), rows.clamp(1, 1000))
                .await;
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let empty = {
            let mut people = lock(&self.shared.people);
            people.remove(&self.id);
            people.is_empty()
        };
        self.shared.publish();
        if !empty || self.shared.ended() {
            return;
        }
        let (shared, key, map) = (self.shared.clone(), self.key.clone(), self.map.clone());
        let joins = shared.joins.load(Ordering::Relaxed);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            tokio::time::sleep(LINGER).await;
            let idle =
                lock(&shared.people).is_empty() && shared.joins.load(Ordering::Relaxed) == joins;
            if idle {
                let mut map = lock(&map);
                if map.get(&key).is_some_and(|s| s.sid == shared.sid) {
                    // Dropping the last handle drops the input, which ends the program.
                    map.remove(&key);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrollback_keeps_the_tail_from_a_line_start() {
        let mut back: VecDeque<u8> = VecDeque::new();
        back.extend(std::iter::repeat_n(b'a', SCROLLBACK));
        back.extend(b"\x1b[31mred\nnext line\n");
        trim(&mut back);
        assert!(back.len() <= SCROLLBACK);
        let text: Vec<u8> = back.iter().copied().collect();
        assert!(text.starts_with(b"next line"), "{:?}", &text[..20]);
    }
}
