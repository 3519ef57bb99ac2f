//! At-least-once delivery without double effects: redelivered and duplicate messages change
//! nothing, a message is retried (not dropped) while its handling cannot become durable, a
//! poisoned message is parked and the consumer keeps serving, and a submit racing the timeout
//! evaluates once.

use std::time::Duration;

use forge_bus::messages::{EndReason, ExecuteRequested, ScenarioCompleted, SpawnRequested};
use forge_bus::{BusExt, DeadLetter, subjects};
use forge_core::ScenarioId;
use serde_json::json;

use crate::flows::spawn_expiring;
use crate::harness::{Harness, TEMPLATE};

/// Every message on one subject from its creation on, through a durable of its own made before
/// the traffic it is to see: the in-process bus drops a message once every durable that exists
/// has acked it, so a durable made afterwards would find nothing.
pub struct Tap {
    sub: Box<dyn forge_bus::Subscription>,
    seen: Vec<serde_json::Value>,
}

impl Tap {
    pub async fn new(h: &Harness, subject: &str) -> Self {
        let durable = format!("test-{}", uuid::Uuid::new_v4().simple());
        let sub = h.platform.bus.subscribe(subject, &durable).await.unwrap();
        Self { sub, seen: vec![] }
    }

    /// Every message so far that mentions `id`.
    pub async fn about(&mut self, id: &str) -> Vec<serde_json::Value> {
        while let Ok(Ok(m)) =
            tokio::time::timeout(Duration::from_millis(300), self.sub.next()).await
        {
            self.seen.push(m.json().unwrap_or_default());
            m.ack().await.unwrap();
        }
        self.seen
            .iter()
            .filter(|v| v.to_string().contains(id))
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_spawn_request_builds_nothing_more() {
    let h = Harness::start().await;
    let id = h.running().await;
    let sid: ScenarioId = id.parse().unwrap();
    // The same request again under a new message id: past the bus's dedup, as a redelivery
    // after a crash would be.
    let again = SpawnRequested {
        scenario_id: sid.clone(),
        tenant_id: "demo".into(),
        owner_sub: "learner-1".into(),
        track: forge_core::Track::Netplus,
        template: TEMPLATE.into(),
        request_id: "redelivered".into(),
        warm_host: None,
    };
    for n in 0..3 {
        h.platform
            .bus
            .publish_json(subjects::SPAWN_REQUEST, &format!("again-{n}"), &again)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.api.status(&id).await, "running");
    assert_eq!(
        h.audited("scenario.creating", &id).len(),
        1,
        "admitted once"
    );
    assert_eq!(h.audited("scenario.running", &id).len(), 1, "built once");
    assert_eq!(h.fake.labs(), vec![sid]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_request_is_retried_while_the_policy_engine_is_unreachable() {
    // A remote OPA on a loopback port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let h = Harness::start_with(|cfg| {
        cfg.opa_url = Some(format!("http://127.0.0.1:{port}"));
    })
    .await;
    let mut requests = Tap::new(&h, subjects::SPAWN_REQUEST).await;
    // The front door asks the spawn gate through the same engine: it answers 502, so act as
    // the front door instead.
    let id = spawn_expiring(&h, Duration::from_secs(600)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = h.api.scenario(&id).await.1;
    assert_eq!(v["status"], "pending", "unreachable OPA is not a deny: {v}");
    assert!(h.fake.labs().is_empty());
    let redeliveries = requests.about(&id).await;
    assert_eq!(redeliveries.len(), 1, "one message, retried in place");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_evaluations_after_the_end_change_nothing() {
    let h = Harness::start().await;
    let mut completed_tap = Tap::new(&h, subjects::SCENARIO_COMPLETED).await;
    let id = h.running().await;
    let sid: ScenarioId = id.parse().unwrap();
    h.solve(&id).await;
    h.api.submit(&id).await;
    h.wait_status(&id, "completed", Duration::from_secs(10))
        .await;
    let bundle = h.api.score_raw(&id, Some("manifest.json")).await.1;

    // A late `scenario.execute` (the timeout firing after a submit) finds nothing to do.
    let late = ExecuteRequested {
        scenario_id: sid.clone(),
        reason: EndReason::Timeout,
        requested_by: "test".into(),
        requested_at: chrono::Utc::now(),
    };
    h.platform
        .bus
        .publish_json(subjects::SCENARIO_EXECUTE, "late-execute", &late)
        .await
        .unwrap();
    // A redelivered `scenario.completed` re-announces the published bundle, never a new one.
    let completed = completed_tap.about(&id).await;
    assert_eq!(completed.len(), 1, "evaluated once");
    let mut again: ScenarioCompleted = serde_json::from_value(completed[0].clone()).unwrap();
    again.criteria.iter_mut().for_each(|c| c.passed = false);
    h.platform
        .bus
        .publish_json(subjects::SCENARIO_COMPLETED, "late-completed", &again)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(h.api.status(&id).await, "completed");
    assert_eq!(h.api.score_raw(&id, Some("manifest.json")).await.1, bundle);
    assert_eq!(completed_tap.about(&id).await.len(), 2);
    assert_eq!(h.audited("score.published", &id).len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_evaluation_is_dead_lettered_and_scoring_goes_on() {
    let h = Harness::start().await;
    let mut letters = h
        .platform
        .bus
        .subscribe(&subjects::dead_letter(subjects::SCENARIO_COMPLETED), "ops")
        .await
        .unwrap();
    let victim = h.running().await;
    let poison = json!({
        "scenario_id": victim, "run_id": "not-a-run-id", "tenant_id": "demo",
        "track": "netplus", "template": TEMPLATE, "reason": "submit",
        "collected_at": chrono::Utc::now(), "criteria": [], "artifacts": []
    });
    h.platform
        .bus
        .publish_json(subjects::SCENARIO_COMPLETED, "poison", &poison)
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), letters.next())
        .await
        .expect("dead letter within 5 s")
        .unwrap();
    let letter: DeadLetter = m.json().unwrap();
    assert_eq!(letter.msg_id, "poison");
    assert_eq!(letter.delivered, 1, "not retried: it can never succeed");
    assert!(letter.reason.contains("run"), "{}", letter.reason);

    // The scoreboard still scores everyone else (and the victim's real submission).
    let other = h.running().await;
    h.api.submit(&other).await;
    h.api.submit(&victim).await;
    h.wait_status(&other, "completed", Duration::from_secs(10))
        .await;
    h.wait_status(&victim, "completed", Duration::from_secs(10))
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_racing_the_timeout_evaluates_once() {
    let h = Harness::start().await;
    let mut completed = Tap::new(&h, subjects::SCENARIO_COMPLETED).await;
    for _ in 0..3 {
        let id = spawn_expiring(&h, Duration::from_millis(1500)).await;
        h.wait_status(&id, "running", Duration::from_secs(5)).await;
        // Submit right at expiry.
        let view = h.api.scenario(&id).await.1;
        let expires: chrono::DateTime<chrono::Utc> =
            view["expires_at"].as_str().unwrap().parse().unwrap();
        let wait = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        let (code, _) = h.api.post_worker(&id, "submit", None).await;
        assert!(code == 202 || code == 409, "{code}");
        let start = std::time::Instant::now();
        let end = loop {
            let s = h.api.status(&id).await;
            if s == "completed" || s == "timeout" {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "stuck in {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(["completed", "timeout"].contains(&end.as_str()));
        assert_eq!(completed.about(&id).await.len(), 1, "one evaluation");
        assert_eq!(h.audited("score.published", &id).len(), 1);
        assert_eq!(
            h.audited("scenario.completed", &id).len() + h.audited("scenario.timeout", &id).len(),
            1,
            "one end"
        );
    }
    h.stop().await;
}
