//! LLM proposals on the fake runtime, against a test double of the chat-completions API (an
//! axum server on loopback that answers with scripted contents and usage, and records what it
//! was asked; nothing more). Harmless proposals run and are audited; proposals that leave the
//! lab, use shell syntax, touch evidence or come past the budget are denied and nothing runs;
//! risky ones wait for an instructor; malformed answers are refused with a reason.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use forge_lifecycle::llm::LlmConfig;
use serde_json::{Value, json};

use crate::api::Api;
use crate::harness::Harness;

/// A request the double got: its `Authorization` header and its body.
type Seen = (Option<String>, Value);

/// What the double answers next, and what it was asked.
#[derive(Clone, Default)]
struct Double {
    script: Arc<Mutex<VecDeque<(String, u64)>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Double {
    /// Serves chat completions on a free loopback port; returns the API's base URL.
    async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/v1")
    }

    fn answer(&self, content: Value, tokens: u64) {
        let text = match content {
            Value::String(s) => s,
            other => other.to_string(),
        };
        self.script.lock().unwrap().push_back((text, tokens));
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn complete(
    State(d): State<Double>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    d.seen.lock().unwrap().push((auth, body));
    let Some((content, tokens)) = d.script.lock().unwrap().pop_front() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": "no scripted answer"}})),
        );
    };
    let answer = json!({
        "id": "chatcmpl-test", "object": "chat.completion", "model": "double",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": tokens / 2, "completion_tokens": tokens - tokens / 2,
                  "total_tokens": tokens},
    });
    (StatusCode::OK, axum::Json(answer))
}

async fn start(double: &Double, lab_tokens: u64) -> Harness {
    let url = double.start().await;
    Harness::start_with(move |cfg| {
        let mut llm = LlmConfig::new(url, "double-model");
        llm.api_key = Some("test-key".into());
        llm.max_tokens_per_lab = lab_tokens;
        cfg.llm = Some(llm);
    })
    .await
}

async fn ask(api: &Api, id: &str, body: Value) -> (u16, Value) {
    api.post_worker(id, "proposals", Some(body)).await
}

/// Asks `api` for a proposal of `kind`, the double answering `content`: the 201's body.
async fn proposal(double: &Double, api: &Api, id: &str, kind: &str, content: Value) -> Value {
    double.answer(content, 100);
    let (code, v) = ask(api, id, json!({"kind": kind})).await;
    assert_eq!(code, 201, "{v}");
    v
}

async fn list(api: &Api, id: &str, query: &str) -> Value {
    let r = api
        .http
        .get(format!("{}/v1/scenarios/{id}/proposals{query}", api.worker))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn exec(command: &str) -> Value {
    json!({"kind": "exec", "command": command, "container": "workstation",
           "rationale": "the next step"})
}

/// Whether any command ran whose argv mentions `word`.
fn ran(h: &Harness, word: &str) -> bool {
    h.fake
        .exec_calls()
        .iter()
        .any(|e| e.argv.iter().any(|a| a.contains(word)))
}

fn reasons(p: &Value) -> String {
    p["reasons"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_decides_every_proposal_and_approvals_wait_for_an_instructor() {
    let double = Double::default();
    let h = start(&double, 100_000).await;
    let id = h.running().await;
    let teacher = h.api_as("demo", &["forge.instructor"], "teacher");
    let robot = h.api_as("demo", &["forge.orchestrator"], "agent:red");

    // A harmless command runs, as argv in its container, and is audited.
    let mut harmless = exec("ping -c 1 10.40.0.11");
    harmless["target"] = json!("10.40.0.11");
    let p = proposal(&double, &robot, &id, "exec", harmless).await;
    assert_eq!(p["status"], "ran", "{p}");
    assert_eq!(p["output"]["exit_code"], 0, "{p}");
    assert_eq!(p["tokens"], 100, "{p}");
    let call = h.fake.exec_calls().into_iter().last().unwrap();
    assert_eq!(call.argv, ["ping", "-c", "1", "10.40.0.11"]);
    assert_eq!(call.container, "workstation");
    // The double was asked as the OpenAI API is, with the lab's context and no secrets.
    let (auth, body) = double.seen.lock().unwrap()[0].clone();
    assert_eq!(auth.as_deref(), Some("Bearer test-key"));
    assert_eq!(body["model"], "double-model");
    assert_eq!(body["max_tokens"], 512);
    let prompt = body["messages"].to_string();
    assert!(
        prompt.contains("10.40.0.0/24") && prompt.contains("server"),
        "{prompt}"
    );
    assert!(
        !prompt.contains("FG-FAST"),
        "an expected value reached the model"
    );

    // Out of the lab, shell syntax, evidence: denied with the reason, nothing runs.
    let denied = [
        (
            json!({"kind": "exec", "command": "ping -c 1 203.0.113.7", "target": "203.0.113.7",
                "rationale": "r"}),
            "203.0.113.7",
            "outside the lab",
        ),
        (
            exec("curl -s http://198.51.100.20/x"),
            "198.51.100.20",
            "not a lab host",
        ),
        (
            exec("nc -z 100.127.0.3 22"),
            "100.127.0.3",
            "outside the lab",
        ),
        (
            exec("cat /etc/hostname | nc 10.40.0.11 80"),
            "/etc/hostname",
            "shell metacharacters",
        ),
        (exec("sh -c id;id"), "id;id", "shell metacharacters"),
        (exec("echo $(id)"), "$(id)", "shell metacharacters"),
        (
            exec("cat /evidence/route-add.txt"),
            "/evidence",
            "evidence path /evidence",
        ),
        (
            exec("ls /var/lib/forge/keys"),
            "/var/lib/forge",
            "evidence store",
        ),
    ];
    for (content, word, why) in &denied {
        let p = proposal(&double, &robot, &id, "exec", content.clone()).await;
        assert_eq!(p["status"], "denied", "{content}: {p}");
        assert!(reasons(&p).contains(why), "{content}: {p}");
        assert!(!ran(&h, word), "{content} ran");
    }
    // A container the lab does not have.
    let mut elsewhere = exec("id");
    elsewhere["container"] = json!("host");
    let p = proposal(&double, &robot, &id, "exec", elsewhere).await;
    assert_eq!(p["status"], "denied", "{p}");
    assert!(reasons(&p).contains("not a container of this lab"), "{p}");

    // Risky: pending until an instructor approves; nobody else may.
    let p = proposal(&double, &robot, &id, "exec", exec("nft list ruleset")).await;
    assert_eq!(p["status"], "pending_approval", "{p}");
    assert!(
        p["approval_reasons"].to_string().contains("firewall"),
        "{p}"
    );
    assert!(!ran(&h, "nft"));
    let pid = p["proposal_id"].as_str().unwrap().to_owned();
    let approve = |api: &Api, pid: &str| {
        let (api, id, pid) = (api.clone(), id.clone(), pid.to_owned());
        async move {
            api.post_worker(&id, &format!("proposals/{pid}/approve"), None)
                .await
        }
    };
    let (code, v) = approve(&h.api, &pid).await;
    assert_eq!(code, 403, "a learner approved: {v}");
    let (code, v) = approve(&robot, &pid).await;
    assert_eq!(code, 403, "the orchestrator role approved its own: {v}");
    assert!(!ran(&h, "nft"));
    let pending = list(&teacher, &id, "?status=pending_approval").await;
    assert_eq!(
        pending["proposals"].as_array().unwrap().len(),
        1,
        "{pending}"
    );
    let (code, v) = approve(&teacher, &pid).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "ran", "{v}");
    assert_eq!(v["decided_by"], "teacher");
    assert!(ran(&h, "nft"));
    let runs = h
        .fake
        .exec_calls()
        .iter()
        .filter(|e| e.argv[0] == "nft")
        .count();
    let (code, v) = approve(&teacher, &pid).await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (409, Some("proposal_not_pending"))
    );
    assert_eq!(
        h.fake
            .exec_calls()
            .iter()
            .filter(|e| e.argv[0] == "nft")
            .count(),
        runs
    );

    // Rejected ones never run.
    let p = proposal(&double, &robot, &id, "exec", exec("pkill nginx")).await;
    assert_eq!(p["status"], "pending_approval", "{p}");
    let pid = p["proposal_id"].as_str().unwrap().to_owned();
    let (code, v) = teacher
        .post_worker(&id, &format!("proposals/{pid}/reject"), None)
        .await;
    assert_eq!((code, v["status"].as_str()), (200, Some("rejected")), "{v}");
    let (code, _) = approve(&teacher, &pid).await;
    assert_eq!(code, 409);
    assert!(!ran(&h, "pkill"));
    let (code, v) = approve(&teacher, "prp-000000000000").await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (404, Some("proposal_not_found"))
    );

    // Learners: hints only, and they see their own.
    let (code, v) = ask(&h.api, &id, json!({"kind": "exec"})).await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (403, Some("instructor_only")),
        "{v}"
    );
    let hint = json!({"kind": "hint", "command": "cat /tmp/flag",
                      "rationale": "look at what the flag file holds"});
    let p = proposal(&double, &h.api, &id, "hint", hint).await;
    assert_eq!(p["status"], "answered", "{p}");
    assert_eq!(p["rationale"], "look at what the flag file holds");
    assert!(!ran(&h, "/tmp/flag"), "a hint ran");
    let mine = list(&h.api, &id, "").await;
    assert_eq!(mine["proposals"].as_array().unwrap().len(), 1, "{mine}");
    let all = list(&teacher, &id, "").await;
    assert!(all["proposals"].as_array().unwrap().len() > 10, "{all}");

    // Malformed answers are refused with a reason; nothing runs.
    for (content, why) in [
        (json!("Sure! Just run `ls /tmp`."), "not a JSON object"),
        (
            json!("{\"kind\":\"exec\",\"command\":\"ls\",\"rationale\":\"r\",\"sudo\":true}"),
            "unknown field",
        ),
        (
            json!("{\"kind\":\"exec\",\"command\":\"ls\",\"rationale\":\"r\"} trailing"),
            "text after",
        ),
        (
            json!({"kind": "exec", "command": "id", "rationale": "r"}),
            "asked for hint",
        ),
    ] {
        let p = proposal(&double, &teacher, &id, "hint", content.clone()).await;
        assert_eq!(p["status"], "denied", "{content}: {p}");
        assert!(reasons(&p).contains(why), "{content}: {p}");
    }
    // An endpoint that fails is a 502, not a proposal.
    let (code, v) = ask(&teacher, &id, json!({"kind": "hint"})).await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (502, Some("llm_unavailable")),
        "{v}"
    );
    let (code, _) = ask(&teacher, &id, json!({"kind": "deploy"})).await;
    assert_eq!(code, 400);

    let events = h.stop_and_audit().await;
    let of = |kind: &str| {
        events
            .iter()
            .filter(|e| e["event_type"] == kind && e["resource_id"] == id.as_str())
            .count()
    };
    assert!(of("llm.proposal") >= 18, "{}", of("llm.proposal"));
    assert_eq!(of("llm.approval"), 2);
    assert_eq!(of("llm.run"), 2);
    let gate = events
        .iter()
        .filter(|e| e["event_type"] == "policy.decision" && e["details"]["policy"] == "llm_gate")
        .count();
    assert!(gate >= 14, "{gate} llm gate decisions audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_denies_without_calling_the_model() {
    let double = Double::default();
    let h = start(&double, 300).await;
    let id = h.running().await;
    let teacher = h.api_as("demo", &["forge.instructor"], "teacher");
    double.answer(json!({"kind": "hint", "rationale": "try ip route"}), 290);
    let (code, p) = ask(&teacher, &id, json!({"kind": "hint"})).await;
    assert_eq!((code, p["status"].as_str()), (201, Some("answered")), "{p}");
    assert_eq!(double.seen.lock().unwrap()[0].1["max_tokens"], 300);

    double.answer(exec("id"), 10);
    let (code, p) = ask(&teacher, &id, json!({"kind": "exec"})).await;
    assert_eq!((code, p["status"].as_str()), (201, Some("denied")), "{p}");
    assert!(reasons(&p).contains("token budget is spent"), "{p}");
    assert_eq!(double.requests(), 1, "the model was called past the budget");
    assert!(!ran(&h, "id"));
    let usage = list(&teacher, &id, "").await["tokens"].clone();
    assert_eq!(usage["lab_used"], 290, "{usage}");
    assert_eq!(usage["lab_budget"], 300, "{usage}");
    let audited = h.audited("llm.proposal", &id);
    let last = audited.last().unwrap();
    assert_eq!(last["outcome"], "denied", "{last}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_proposals_are_off() {
    let h = Harness::start().await;
    let id = h.running().await;
    let teacher = h.api_as("demo", &["forge.instructor"], "teacher");
    let (code, v) = ask(&teacher, &id, json!({"kind": "hint"})).await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (409, Some("llm_disabled")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("FORGE_LLM_URL")
    );
    h.stop().await;
}

/// Two lab hosts on one store and bus (as in `hosts.rs`): a proposal for host b's lab asked
/// through host a's worker is made, decided, approved and run by host b, whose memory holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_reach_the_host_that_owns_the_lab() {
    use forge_lifecycle::orchestrator::HostConfig;
    use forge_lifecycle::platform::{Backends, Platform};

    let double = Double::default();
    let url = double.start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let with_llm = |host: &str| {
        let mut cfg = crate::harness::config(dir);
        cfg.llm = Some(LlmConfig::new(url.clone(), "double-model"));
        cfg.orchestrator.host = HostConfig {
            id: host.into(),
            url: String::new(),
            runner_url: String::new(),
            capacity: 1,
            lease: std::time::Duration::from_secs(30),
        };
        cfg
    };
    let fakes = [
        crate::harness::fake_runtime(),
        crate::harness::fake_runtime(),
    ];
    let shared = Backends::local(&with_llm("host-a"), Arc::new(fakes[0].clone()))
        .await
        .unwrap();
    let mut hosts = Vec::new();
    for (name, fake) in ["host-a", "host-b"].into_iter().zip(&fakes) {
        let backends = Backends {
            store: shared.store.clone(),
            bus: shared.bus.clone(),
            evidence: shared.evidence.clone(),
            runtime: Some(Arc::new(fake.clone())),
            audit_log: shared.audit_log.clone(),
            opa: shared.opa.clone(),
            policy: shared.policy.clone(),
        };
        hosts.push(Platform::start(with_llm(name), backends).await.unwrap());
    }
    let learner = Api::new(
        &hosts[0],
        hosts[0].mint("demo", &["forge.spawn"], "l").unwrap(),
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        let body = json!({"track": "netplus", "template": crate::harness::TEMPLATE,
                          "request_id": uuid::Uuid::new_v4().to_string()});
        ids.push(learner.spawn(body).await);
    }
    let mut on_b = None;
    for id in &ids {
        learner
            .wait_for(id, &["running"], std::time::Duration::from_secs(10))
            .await;
        let rec = shared.store.get_any(&id.parse().unwrap()).await.unwrap();
        if rec.and_then(|r| r.host_id).as_deref() == Some("host-b") {
            on_b = Some(id.clone());
        }
    }
    let on_b = on_b.expect("a lab on host b");
    let teacher = learner.with_token(hosts[0].mint("demo", &["forge.instructor"], "t").unwrap());
    let p = proposal(&double, &teacher, &on_b, "exec", exec("nft list ruleset")).await;
    assert_eq!(p["status"], "pending_approval", "{p}");
    let pid = p["proposal_id"].as_str().unwrap();
    let (code, v) = teacher
        .post_worker(&on_b, &format!("proposals/{pid}/approve"), None)
        .await;
    assert_eq!((code, v["status"].as_str()), (200, Some("ran")), "{v}");
    let nft =
        |f: &forge_runtime::fake::FakeRuntime| f.exec_calls().iter().any(|e| e.argv[0] == "nft");
    assert!(
        nft(&fakes[1]) && !nft(&fakes[0]),
        "it ran on host b's engine"
    );
    assert_eq!(
        list(&teacher, &on_b, "").await["proposals"][0]["status"],
        "ran"
    );
    for h in hosts {
        h.shutdown().await;
    }
}
