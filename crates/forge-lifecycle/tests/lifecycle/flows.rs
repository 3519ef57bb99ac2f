//! The state machine through the HTTP API on the fake runtime: the learner's whole flow, the
//! ways a lab fails (gate deny, launch error, launch timeout, a container that cannot be kept
//! running, ending early), timeouts, and the terminal.

use std::time::Duration;

use forge_bus::BusExt;
use forge_bus::messages::SpawnRequested;
use forge_core::{ScenarioId, ScenarioStatus, Track};
use forge_store::{Billing, LedgerQuery, NewScenario};
use serde_json::json;

use crate::harness::{Harness, TEMPLATE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_check_solve_submit_score_and_verify() {
    let h = Harness::start().await;
    let id = h.spawn().await;
    let view = h
        .api
        .wait_for(&id, &["running"], Duration::from_secs(10))
        .await;
    assert_eq!(view["template"], TEMPLATE);
    assert!(h.has_lab(&id));

    let before = h.api.check(&id).await;
    assert_eq!(before["total"], 3, "{before}");
    assert_eq!(
        before["passed"], 1,
        "only the server state passes: {before}"
    );
    let flag = before["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion_id"] == "flag-written")
        .unwrap();
    assert_eq!(flag["passed"], false);
    assert_eq!(flag["hint"], "echo solved > /tmp/flag", "{flag}");

    h.solve(&id).await;
    let after = h.api.check(&id).await;
    assert_eq!(after["passed"], 3, "{after}");
    assert_eq!(after["score"].as_f64(), Some(1.0));
    assert!(
        after["criteria"][0]["hint"].is_null(),
        "no hints once passed"
    );

    h.api.submit(&id).await;
    let done = h
        .wait_status(&id, "completed", Duration::from_secs(10))
        .await;
    assert!(
        done["started_at"].is_string() && done["ended_at"].is_string(),
        "{done}"
    );
    let score = h.api.wait_score(&id, Duration::from_secs(10)).await;
    assert_eq!(score["score"]["value"].as_f64(), Some(1.0), "{score}");
    assert_eq!(score["score"]["passed"], 3);
    let dl = h.dir.join("download");
    h.api.download_bundle(&id, &dl).await;
    crate::api::verify(&h.platform.data_dir, &dl);
    assert!(!h.has_lab(&id), "the lab is torn down");

    // Every transition is audited, in order.
    let kinds: Vec<String> = h
        .audit_events()
        .iter()
        .filter(|e| e.to_string().contains(&id))
        .filter_map(|e| e["event_type"].as_str().map(str::to_owned))
        .filter(|k| k.starts_with("scenario.") && k != "scenario.check" && k != "scenario.exec")
        .collect();
    assert_eq!(
        kinds,
        [
            "scenario.creating",
            "scenario.running",
            "scenario.submit",
            "scenario.completed"
        ],
        "{kinds:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_submit_evaluates_once() {
    let h = Harness::start().await;
    let id = h.running().await;
    h.api.submit(&id).await;
    let (code, v) = h.api.post_worker(&id, "submit", None).await;
    assert!(code == 202 || code == 409, "second submit: {code} {v}");
    h.wait_status(&id, "completed", Duration::from_secs(10))
        .await;
    assert_eq!(h.audited("scenario.submit", &id).len(), 1);
    assert_eq!(h.audited("score.published", &id).len(), 1);
    let (code, _) = h.api.post_worker(&id, "submit", None).await;
    assert_eq!(code, 409, "a completed lab cannot be submitted");
    h.stop().await;
}

/// A copy of the test template that the training gate refuses (netplus allows no exploits).
fn add_exploit_lab(cfg: &mut forge_lifecycle::platform::PlatformConfig) {
    let t = cfg.template_dir.clone().unwrap().join("fast-lab.yaml");
    let yaml = std::fs::read_to_string(&t).unwrap();
    let yaml = yaml
        .replace("name: fast-lab", "name: exploit-lab")
        .replace("attacker_max_exploits: 0", "attacker_max_exploits: 3");
    std::fs::write(t.with_file_name("exploit-lab.yaml"), yaml).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_gate_deny_is_403_at_the_front_door_and_stores_nothing() {
    let h = Harness::start_with(add_exploit_lab).await;
    let r = h
        .api
        .http
        .post(format!("{}/v1/spawn", h.api.spawn))
        .bearer_auth(&h.api.token)
        .json(&json!({"track": "netplus", "template": "exploit-lab", "request_id": "deny-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "training_gate_denied", "{v}");
    let reasons = v["error"]["details"]["deny_reasons"].to_string();
    assert!(reasons.contains("attacker_max_exploits"), "{v}");
    let all = [
        ScenarioStatus::Pending,
        ScenarioStatus::Creating,
        ScenarioStatus::Running,
        ScenarioStatus::Failed,
    ];
    let stored = h.platform.store.list_by_status(&all).await.unwrap();
    assert!(stored.is_empty(), "nothing stored: {stored:?}");
    let ledger = h
        .platform
        .store
        .ledger(&LedgerQuery::default())
        .await
        .unwrap();
    assert!(ledger.is_empty(), "nothing charged: {ledger:?}");
    assert!(h.fake.labs().is_empty(), "nothing launched");
    let denied: Vec<_> = h
        .audit_events()
        .into_iter()
        .filter(|e| e["event_type"] == "spawn.request" && e["outcome"] == "denied")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["details"]["gate"], "training_gate", "{denied:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_still_refuses_a_denied_template_and_refunds_its_charge() {
    // Defence in depth: a spawn accepted before the template or the policy changed reaches the
    // orchestrator, which asks the training gate again.
    let h = Harness::start_with(add_exploit_lab).await;
    let (new, charge, msg) = crate::refunds::charged_pending(&h, "exploit-lab", 250).await;
    h.platform.bus.publish_msg(&msg).await.unwrap();
    let id = new.scenario_id.to_string();
    let v = h.wait_status(&id, "failed", Duration::from_secs(10)).await;
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("training gate denied"), "{error}");
    assert!(error.contains("attacker_max_exploits"), "{error}");
    assert!(h.fake.labs().is_empty(), "nothing was launched");
    // The transition is stored before it is audited: wait for the record, then count it.
    let start = std::time::Instant::now();
    while h.audited("scenario.failed", &id).is_empty() && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.audited("scenario.failed", &id).len(), 1);
    let rows = crate::refunds::wait_refunded(&h, &new.request_id).await;
    assert_eq!(rows[1].amount_cents, -250, "{rows:?}");
    assert_eq!(rows[1].event_id, format!("refund-{}", charge.event_id));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_error_fails_the_scenario_and_leaves_no_lab() {
    let h = Harness::start().await;
    h.fake.fail_next_launch("image forge/web:1 is missing");
    let id = h.spawn().await;
    let v = h.wait_status(&id, "failed", Duration::from_secs(10)).await;
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("lab launch failed"), "{error}");
    assert!(error.contains("image forge/web:1 is missing"), "{error}");
    assert!(!h.has_lab(&id));
    // The next spawn is not affected.
    let ok = h.running().await;
    assert!(h.has_lab(&ok));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_that_takes_too_long_fails_the_scenario() {
    let h = Harness::start_with(|cfg| {
        cfg.orchestrator.launch_timeout = Duration::from_millis(300);
    })
    .await;
    h.fake.set_launch_delay(Duration::from_secs(3));
    let id = h.spawn().await;
    let v = h.wait_status(&id, "failed", Duration::from_secs(10)).await;
    assert!(
        v["error"].as_str().unwrap().contains("took longer than"),
        "{v}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!h.has_lab(&id), "a late launch leaves no lab behind");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_lab_early_fails_it_and_tears_it_down() {
    let h = Harness::start().await;
    let id = h.running().await;
    assert_eq!(h.api.delete(&id).await, 200);
    let v = h.wait_status(&id, "failed", Duration::from_secs(5)).await;
    assert_eq!(v["error"], "ended early by learner-1");
    assert!(!h.has_lab(&id));
    assert_eq!(h.api.delete(&id).await, 409, "already ended");
    let (code, _) = h.api.post_worker(&id, "check", None).await;
    assert_eq!(code, 409, "no checks on an ended lab");
    h.stop().await;
}

/// Acts as the front door: a `pending` scenario that expires `expires_in` from now, published
/// as `spawn.request`.
pub async fn spawn_expiring(h: &Harness, expires_in: Duration) -> String {
    let (id, msg) = insert_pending(h, expires_in).await;
    h.platform.bus.publish_msg(&msg).await.unwrap();
    id
}

/// The front door's first half: a `pending` scenario in the store, and its message unsent.
pub async fn insert_pending(h: &Harness, expires_in: Duration) -> (String, SpawnRequested) {
    let id = ScenarioId::generate();
    let now = chrono::Utc::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let new = NewScenario {
        scenario_id: id.clone(),
        tenant_id: "demo".into(),
        owner_sub: "learner-1".into(),
        track: Track::Netplus,
        template: TEMPLATE.into(),
        request_id: request_id.clone(),
        access_url: String::new(),
        created_at: now,
        expires_at: now + chrono::Duration::from_std(expires_in).unwrap(),
    };
    h.platform
        .store
        .insert_pending(&new, Billing::None)
        .await
        .unwrap();
    let msg = SpawnRequested {
        scenario_id: id.clone(),
        tenant_id: "demo".into(),
        owner_sub: "learner-1".into(),
        track: Track::Netplus,
        template: TEMPLATE.into(),
        request_id,
        warm_host: None,
    };
    (id.to_string(), msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_scores_the_lab_as_it_stands_and_ends_as_timeout() {
    let h = Harness::start().await;
    let id = spawn_expiring(&h, Duration::from_secs(2)).await;
    h.wait_status(&id, "running", Duration::from_secs(5)).await;
    // Half of the work: the flag, not the token (weights 1 + 1 of 5).
    h.api.exec(&id, "echo solved > /tmp/flag").await;
    let v = h.wait_status(&id, "timeout", Duration::from_secs(10)).await;
    assert!(v["ended_at"].is_string());
    let score = h.api.wait_score(&id, Duration::from_secs(5)).await;
    assert_eq!(score["score"]["passed"], 2, "{score}");
    assert_eq!(score["score"]["value"].as_f64(), Some(0.4), "{score}");
    assert!(!h.has_lab(&id));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_container_is_revived_and_the_lab_keeps_running() {
    let h = Harness::start().await;
    let id = h.running().await;
    let sid: ScenarioId = id.parse().unwrap();
    h.fake.kill_container(&sid, "server");
    let start = std::time::Instant::now();
    loop {
        let check = h.api.check(&id).await;
        if check["criteria"][2]["passed"] == true {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not revived: {check}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.api.status(&id).await, "running");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_cannot_be_revived_fails_the_lab_with_a_reason() {
    let h = Harness::start().await;
    let id = h.running().await;
    h.fake.fail_revive(true);
    h.fake.kill_container(&id.parse().unwrap(), "server");
    let v = h.wait_status(&id, "failed", Duration::from_secs(10)).await;
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("container server could not be kept running"),
        "{error}"
    );
    assert!(!h.has_lab(&id));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_bridges_keystrokes_and_resizes() {
    let h = Harness::start().await;
    let id = h.running().await;
    let url = format!(
        "{}/v1/scenarios/{id}/terminal?access_token={}",
        h.api.worker.replace("http://", "ws://"),
        h.api.token
    );
    crate::harness::terminal_echoes(url, (120, 40), "echo hi").await;
    assert!(
        h.fake.tty_sizes().contains(&(120, 40)),
        "{:?}",
        h.fake.tty_sizes()
    );
    assert_eq!(h.audited("scenario.terminal", &id).len(), 1);

    // A stranger's token is refused before any upgrade.
    let other = h.api_as("other", &["forge.spawn"], "mallory");
    let url = format!(
        "{}/v1/scenarios/{id}/terminal?access_token={}",
        h.api.worker.replace("http://", "ws://"),
        other.token
    );
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_exec_requests_are_4xx_with_reasons() {
    let h = Harness::start().await;
    let id = h.running().await;
    for (body, code, needle) in [
        (json!({"command": ""}), 400, "1-4096"),
        (json!({"command": "id", "timeout_seconds": 0}), 400, "1-300"),
        (
            json!({"command": "id", "container": "server"}),
            403,
            "workstation",
        ),
        (json!({"cmd": "id"}), 400, "unknown field"),
    ] {
        let (got, v) = h.api.post_worker(&id, "exec", Some(body.clone())).await;
        assert_eq!(got, code, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body}: {v}");
    }
    h.stop().await;
}
