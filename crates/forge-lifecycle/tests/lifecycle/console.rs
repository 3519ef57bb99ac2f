//! Consoles per node and the shared terminal: which consoles a learner and an instructor may
//! open, single-use tickets (the browser's way in, without the bearer token in a URL), the
//! instructor's drop-in into a learner's console (they see what the learner types; read-only
//! keys go nowhere; the learner is told; it is audited), a reconnect finding the same shell, and
//! exec with an argv that keeps its quoting.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::api::Api;
use crate::harness::Harness;

/// A lab with a learner console, a declared router console (its own command) and a container
/// without a console.
const CONSOLE_LAB: &str = r#"
apiVersion: frostgate.forge/v1
kind: ScenarioTemplate
metadata:
  name: console-lab
  labels: [class:ccna, tier:foundation]
  annotations:
    description: "consoles per node"
spec:
  limits: {cpu: 1, memory_mb: 128, attacker_max_exploits: 0, timeout_minutes: 30}
  network:
    egress: deny
    subnets: [{name: lan, cidr: 10.41.0.0/24}]
  assets:
    containers:
      - name: pc
        image: forge/learner:1
        learner: true
        networks: [lan]
      - name: router
        image: forge/router:1
        console: {command: [vtysh], title: "router CLI"}
        networks: [lan]
      - name: vault
        image: forge/web:1
        networks: [lan]
  successCriteria:
    - id: up
      evidence:
        - type: state
          container: vault
          expect: {running: true}
"#;

async fn console_lab() -> (Harness, String) {
    let h = Harness::start_with(|cfg| {
        let dir = cfg
            .template_dir
            .clone()
            .expect("the harness has a template dir");
        std::fs::write(dir.join("console-lab.yaml"), CONSOLE_LAB).expect("template");
    })
    .await;
    let id = h
        .api
        .spawn(json!({"track": "ccna", "template": "console-lab",
                      "request_id": uuid::Uuid::new_v4().to_string()}))
        .await;
    h.api
        .wait_for(&id, &["running"], Duration::from_secs(10))
        .await;
    (h, id)
}

/// `POST …/terminal/ticket`: status and body.
async fn ticket(api: &Api, id: &str, body: Value) -> (u16, Value) {
    api.post_worker(id, "terminal/ticket", Some(body)).await
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One terminal WebSocket and everything it received.
struct Term {
    ws: Socket,
    out: Vec<u8>,
    messages: Vec<Value>,
    closed: Option<u16>,
}

fn ws_url(api: &Api, path: &str) -> String {
    format!("{}{path}", api.worker.replace("http://", "ws://"))
}

impl Term {
    /// Opens `path` (with its query) on the worker, with `bearer` in the header if given.
    async fn open(api: &Api, path: &str, bearer: Option<&str>) -> Result<Term, u16> {
        let mut req = ws_url(api, path).into_client_request().unwrap();
        if let Some(t) = bearer {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(Term {
                ws,
                out: Vec::new(),
                messages: Vec::new(),
                closed: None,
            }),
            Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("upgrade failed: {e}"),
        }
    }

    /// A ticket for `body` as `api`'s caller, then the console it opens.
    async fn with_ticket(api: &Api, id: &str, body: Value) -> Term {
        let (code, t) = ticket(api, id, body).await;
        assert_eq!(code, 200, "ticket: {t}");
        Term::open(api, t["path"].as_str().unwrap(), None)
            .await
            .expect("the ticket opens the console")
    }

    async fn send(&mut self, text: &str) {
        self.ws
            .send(WsMessage::Binary(text.as_bytes().to_vec().into()))
            .await
            .unwrap();
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// The last presence message's participants as `sub/mode/role`.
    fn people(&self) -> Vec<String> {
        let last = self.messages.iter().rev().find(|m| m["type"] == "presence");
        let mut v: Vec<String> = last
            .and_then(|m| m["participants"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|p| {
                format!(
                    "{}/{}/{}",
                    p["sub"].as_str().unwrap(),
                    p["mode"].as_str().unwrap(),
                    p["role"].as_str().unwrap()
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Reads frames until `done(self)` holds; false when `within` passes first.
    async fn until(&mut self, within: Duration, done: impl Fn(&Term) -> bool) -> bool {
        let start = Instant::now();
        while !done(self) {
            let left = within.saturating_sub(start.elapsed());
            if left.is_zero() {
                return false;
            }
            match tokio::time::timeout(left, self.ws.next()).await {
                Ok(Some(Ok(WsMessage::Binary(b)))) => self.out.extend_from_slice(&b),
                Ok(Some(Ok(WsMessage::Text(t)))) => self
                    .messages
                    .push(serde_json::from_str(t.as_str()).unwrap()),
                Ok(Some(Ok(WsMessage::Close(f)))) => {
                    self.closed = Some(f.map_or(1005, |f| f.code.into()));
                    return done(self);
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => return done(self),
                Err(_) => return done(self),
            }
        }
        true
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_open_declared_consoles_and_instructors_any_container() {
    let (h, id) = console_lab().await;
    let teacher = h.api_as("demo", &["forge.instructor"], "teacher");

    // What the pages offer: the learner's consoles, or (instructors) every container.
    let info = |api: Api| {
        let id = id.clone();
        async move {
            let r = api
                .http
                .get(format!("{}/access/{id}/info", api.spawn))
                .bearer_auth(&api.token)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let mine = info(h.api.clone()).await;
    let names = |v: &Value| -> Vec<String> {
        v["consoles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["container"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&mine), ["pc", "router"], "{mine}");
    assert_eq!(mine["consoles"][1]["title"], "router CLI");
    assert_eq!(mine["consoles"][1]["command"], "vtysh");
    assert_eq!(mine["viewer"]["owner"], true);
    assert_eq!(
        names(&info(teacher.clone()).await),
        ["pc", "router", "vault"]
    );

    // The learner: their consoles, with their commands; not the vault; not what does not exist.
    let mut router = Term::with_ticket(&h.api, &id, json!({"container": "router"})).await;
    router.send("show ip route\n").await;
    assert!(
        router
            .until(WAIT, |t| t.text().contains("show ip route"))
            .await
    );
    assert!(
        h.fake
            .tty_opened()
            .contains(&("router".to_owned(), Some(vec!["vtysh".to_owned()])))
    );
    let (code, v) = ticket(&h.api, &id, json!({"container": "vault"})).await;
    assert_eq!(
        (code, &v["error"]["code"]),
        (403, &json!("console_not_allowed")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`pc`, `router`"),
        "{v}"
    );
    let (code, v) = ticket(&h.api, &id, json!({"container": "nope"})).await;
    assert_eq!(
        (code, &v["error"]["code"]),
        (400, &json!("unknown_container")),
        "{v}"
    );
    // The same rules without a ticket (the CLI's bearer header).
    let refused = Term::open(
        &h.api,
        &format!("/v1/scenarios/{id}/terminal?container=vault"),
        Some(&h.api.token),
    )
    .await;
    assert_eq!(refused.err(), Some(403));

    // An instructor opens any container, the undeclared one with the image's shell.
    let mut vault = Term::open(
        &teacher,
        &format!("/v1/scenarios/{id}/terminal?container=vault"),
        Some(&teacher.token),
    )
    .await
    .expect("an instructor opens any container");
    vault.send("id\n").await;
    assert!(vault.until(WAIT, |t| t.text().contains("id")).await);
    assert!(h.fake.tty_opened().contains(&("vault".to_owned(), None)));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_opens_one_console_once_for_its_holder_only() {
    let h = Harness::start().await;
    let id = h.running().await;
    let other = h.running().await;

    let (code, t) = ticket(&h.api, &id, json!({})).await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(
        (
            t["container"].as_str(),
            t["mode"].as_str(),
            t["expires_in"].as_u64()
        ),
        (Some("workstation"), Some("rw"), Some(30))
    );
    let path = t["path"].as_str().unwrap().to_owned();
    assert!(
        !path.contains(&h.api.token),
        "the bearer token never rides in the URL"
    );
    let mut term = Term::open(&h.api, &path, None).await.expect("first use");
    term.send("echo ticketed\n").await;
    assert!(
        term.until(WAIT, |t| t.text().contains("echo ticketed"))
            .await
    );
    assert_eq!(term.messages[0]["type"], "hello");
    assert_eq!(term.messages[0]["container"], "workstation");
    // Single use: the same ticket again, or on another lab's path, opens nothing.
    assert_eq!(Term::open(&h.api, &path, None).await.err(), Some(401));
    let (_, t2) = ticket(&h.api, &id, json!({})).await;
    let elsewhere = t2["path"].as_str().unwrap().replace(&id, &other);
    assert_eq!(Term::open(&h.api, &elsewhere, None).await.err(), Some(401));
    let forged = format!("/v1/scenarios/{id}/terminal?ticket={}", "ab".repeat(32));
    assert_eq!(Term::open(&h.api, &forged, None).await.err(), Some(401));
    // A ticket's binding is not widened by the query: asking for another container is refused.
    let (_, t3) = ticket(&h.api, &id, json!({})).await;
    let widened = format!("{}&container=server", t3["path"].as_str().unwrap());
    assert_eq!(Term::open(&h.api, &widened, None).await.err(), Some(401));

    // Strangers get no ticket: the 404 of an unknown lab.
    for api in [
        h.api_as("demo", &["forge.spawn"], "bob"),
        h.api_as("acme", &["forge.instructor"], "eve"),
    ] {
        let (code, v) = ticket(&api, &id, json!({})).await;
        assert_eq!(
            (code, &v["error"]["code"]),
            (404, &json!("scenario_not_found")),
            "{v}"
        );
    }
    // An ended lab has no console to open.
    assert_eq!(h.api.delete(&id).await, 200);
    h.wait_status(&id, "failed", WAIT).await;
    let (code, _) = ticket(&h.api, &id, json!({})).await;
    assert_eq!(code, 409);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instructor_drops_in_sees_the_learner_and_a_watcher_cannot_type() {
    let h = Harness::start().await;
    let id = h.running().await;
    let teacher = h.api_as("demo", &["forge.instructor"], "teacher");
    let helper = h.api_as("demo", &["forge.instructor"], "helper");

    let mut learner = Term::with_ticket(&h.api, &id, json!({})).await;
    assert!(
        learner
            .until(WAIT, |t| t.people() == ["learner-1/rw/owner"])
            .await
    );
    let mut watcher = Term::with_ticket(&teacher, &id, json!({"mode": "ro"})).await;
    // The learner is told at once who is watching.
    assert!(
        learner
            .until(WAIT, |t| t.people()
                == ["learner-1/rw/owner", "teacher/ro/instructor"])
            .await,
        "{:?}",
        learner.people()
    );

    learner
        .send("ip route add 10.20.0.0/24 via 10.10.0.1\n")
        .await;
    assert!(
        watcher
            .until(WAIT, |t| t.text().contains("ip route add 10.20.0.0/24"))
            .await,
        "the watcher sees what the learner types: {:?}",
        watcher.text()
    );
    // A watcher's keys go nowhere: not to the shell (whose echo would show them), and the
    // learner's next line arrives without them in between.
    watcher.send("rm -rf /tmp/everything\n").await;
    learner.send("echo after-the-watcher\n").await;
    assert!(
        learner
            .until(WAIT, |t| t.text().contains("after-the-watcher"))
            .await
    );
    assert!(
        watcher
            .until(WAIT, |t| t.text().contains("after-the-watcher"))
            .await
    );
    assert!(!learner.text().contains("rm -rf"), "{}", learner.text());
    assert!(!watcher.text().contains("rm -rf"), "{}", watcher.text());

    // A read-write drop-in types into the learner's console.
    let mut joined = Term::with_ticket(&helper, &id, json!({"mode": "rw"})).await;
    assert!(
        joined
            .until(WAIT, |t| t.text().contains("after-the-watcher"))
            .await,
        "scrollback"
    );
    joined.send("echo from-the-helper\n").await;
    assert!(
        learner
            .until(WAIT, |t| t.text().contains("from-the-helper"))
            .await
    );
    drop(joined);
    drop(watcher);
    assert!(
        learner
            .until(WAIT, |t| t.people() == ["learner-1/rw/owner"])
            .await
    );

    // Every opening is audited, drop-ins as such, with the tenant so its instructors see them.
    let opened = h.audited("scenario.terminal", &id);
    let dropins: Vec<&Value> = opened
        .iter()
        .filter(|e| e["details"]["dropin"] == true)
        .collect();
    assert_eq!(dropins.len(), 2, "{opened:?}");
    let watch = dropins.iter().find(|e| e["actor"] == "teacher").unwrap();
    assert_eq!(watch["details"]["mode"], "ro");
    assert_eq!(watch["details"]["owner"], "learner-1");
    assert_eq!(watch["details"]["tenant_id"], "demo");
    assert_eq!(watch["details"]["container"], "workstation");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_finds_the_same_console_and_its_scrollback() {
    let h = Harness::start().await;
    let id = h.running().await;
    let mut first = Term::with_ticket(&h.api, &id, json!({})).await;
    first.send("echo before-the-blip\n").await;
    assert!(
        first
            .until(WAIT, |t| t.text().contains("before-the-blip"))
            .await
    );
    drop(first);
    // A new connection, nothing typed yet: the screen comes back as it was.
    let mut again = Term::with_ticket(&h.api, &id, json!({})).await;
    assert!(
        again
            .until(WAIT, |t| t.text().contains("before-the-blip"))
            .await,
        "{:?}",
        again.text()
    );
    assert_eq!(
        h.fake.tty_opened().len(),
        1,
        "one shell, attached twice: {:?}",
        h.fake.tty_opened()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_an_argv_as_given_and_audits_it_quoted() {
    let h = Harness::start().await;
    let id = h.running().await;
    let argv = json!(["sh", "-c", "echo a; echo 'b c'"]);
    let (code, v) = h
        .api
        .post_worker(&id, "exec", Some(json!({"argv": argv})))
        .await;
    assert_eq!(code, 200, "{v}");
    let call = h
        .fake
        .exec_calls()
        .into_iter()
        .find(|c| c.argv.first().is_some_and(|a| a == "sh") && c.argv.len() == 3)
        .expect("the argv ran");
    assert_eq!(call.argv, ["sh", "-c", "echo a; echo 'b c'"]);
    let audited = h.audited("scenario.exec", &id);
    assert_eq!(
        audited[0]["details"]["command"],
        r#"sh -c "echo a; echo 'b c'""#
    );
    for bad in [
        json!({"argv": []}),
        json!({"argv": [""]}),
        json!({"argv": ["id"], "command": "id"}),
        json!({}),
    ] {
        let (code, v) = h.api.post_worker(&id, "exec", Some(bad.clone())).await;
        assert_eq!(
            (code, &v["error"]["code"]),
            (400, &json!("invalid_command")),
            "{bad}: {v}"
        );
    }
    h.stop().await;
}
