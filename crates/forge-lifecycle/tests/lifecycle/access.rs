//! Who may touch a scenario, on every route that takes a scenario id: the owner, and the
//! tenant's instructors; another learner of the tenant and anyone of another tenant get the
//! same 404 as for an id that does not exist, and the attempt is counted and audited as
//! `access.denied` (once per caller, action and window, with a count of the rest). Scores: the
//! owner and tenant-wide readers only, never a classmate. The policy endpoint: tokens with a
//! query role, or anonymous callers on loopback, neither of them costing a record per query.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::api::Api;
use crate::harness::Harness;

/// Every route that takes a scenario id: (service URL, method, path, body).
fn routes(api: &Api, id: &str) -> Vec<(Method, String, Option<Value>)> {
    let (o, w, s) = (&api.orchestrator, &api.worker, &api.scoreboard);
    vec![
        (Method::GET, format!("{o}/v1/scenarios/{id}"), None),
        (Method::DELETE, format!("{o}/v1/scenarios/{id}"), None),
        (Method::POST, format!("{w}/v1/scenarios/{id}/check"), None),
        (Method::POST, format!("{w}/v1/scenarios/{id}/submit"), None),
        (
            Method::POST,
            format!("{w}/v1/scenarios/{id}/exec"),
            Some(json!({"command": "id"})),
        ),
        (Method::GET, format!("{w}/v1/scenarios/{id}/terminal"), None),
        (
            Method::POST,
            format!("{w}/v1/scenarios/{id}/terminal/ticket"),
            Some(json!({})),
        ),
        (Method::GET, format!("{s}/v1/scores/{id}"), None),
        (Method::GET, format!("{s}/v1/scores/{id}/score.json"), None),
        (
            Method::GET,
            format!("{s}/v1/scores/{id}/evidence.tar.zst"),
            None,
        ),
        (Method::GET, format!("{}/access/{id}/info", api.spawn), None),
    ]
}

async fn call(api: &Api, method: Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = api.http.request(method, url).bearer_auth(&api.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_get_404_on_every_route_and_are_audited() {
    let h = Harness::start().await;
    let id = h.running().await;
    // A finished one too, so the score routes have something to hide.
    let scored = h.running().await;
    h.api.submit(&scored).await;
    h.wait_status(&scored, "completed", Duration::from_secs(10))
        .await;
    h.api.wait_score(&scored, Duration::from_secs(5)).await;

    let strangers = [
        (
            "same tenant, other learner",
            h.api_as("demo", &["forge.spawn"], "bob"),
        ),
        (
            "other tenant, even with every role",
            h.api_as(
                "acme",
                &[
                    "forge.spawn",
                    "forge.instructor",
                    "forge.orchestrator",
                    "forge.score.read",
                ],
                "eve",
            ),
        ),
    ];
    for (who, api) in &strangers {
        for target in [&id, &scored] {
            for (method, url, body) in routes(api, target) {
                let (code, v) = call(api, method.clone(), &url, body).await;
                assert_eq!(code, 404, "{who}: {method} {url}: {v}");
                if !url.contains("/terminal") {
                    assert_eq!(
                        v["error"]["code"], "scenario_not_found",
                        "{who}: {url}: {v}"
                    );
                }
            }
        }
        // Unknown and malformed ids answer the same.
        let (code, v) = call(
            api,
            Method::GET,
            &format!("{}/v1/scenarios/scn-000000000000", api.orchestrator),
            None,
        )
        .await;
        assert_eq!(
            (code, &v["error"]["code"]),
            (404, &json!("scenario_not_found"))
        );
        let (code, _) = call(
            api,
            Method::GET,
            &format!("{}/v1/scenarios/nonsense", api.orchestrator),
            None,
        )
        .await;
        assert_eq!(code, 404);
    }
    // Nothing happened to the lab.
    assert_eq!(h.api.status(&id).await, "running");
    assert!(h.fake.exec_calls().iter().all(|c| c.command != "id"));

    // While the window is open: one record per caller and action, naming where it started.
    let denied: Vec<Value> = h
        .audit_events()
        .into_iter()
        .filter(|e| e["event_type"] == "access.denied")
        .collect();
    for sub in ["bob", "eve"] {
        let mut actions: Vec<&str> = denied
            .iter()
            .filter(|e| e["actor"] == sub)
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        actions.sort();
        assert_eq!(
            actions,
            ["operate", "read_score", "view"],
            "{sub}: one record per action: {denied:?}"
        );
    }
    assert!(
        denied
            .iter()
            .any(|e| e["details"]["scope"] == "cross_tenant" && e["actor"] == "eve")
    );
    assert!(
        denied
            .iter()
            .any(|e| e["details"]["scope"] == "same_tenant" && e["actor"] == "bob")
    );
    // At shutdown the windows close: every refusal of an existing scenario is accounted for
    // (11 routes, 2 scenarios each), the ones not recorded one by one in `suppressed`.
    let events = h.stop_and_audit().await;
    for sub in ["bob", "eve"] {
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["event_type"] == "access.denied" && e["actor"] == sub)
            .collect();
        assert!(mine.len() <= 6, "{sub}: {mine:?}");
        // A window's first refusal is a record of its own; its closing record counts the rest.
        let total: u64 = mine
            .iter()
            .map(|e| e["details"]["suppressed"].as_u64().unwrap_or(1))
            .sum();
        assert_eq!(total, 22, "{sub}: {mine:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instructors_of_the_tenant_may_work_in_any_lab_and_learners_only_in_theirs() {
    let h = Harness::start().await;
    let id = h.running().await;
    let teacher = h.api_as("demo", &["forge.instructor"], "teacher");

    let check = teacher.check(&id).await;
    assert_eq!(check["total"], 3);
    let (code, v) = teacher
        .post_worker(
            &id,
            "exec",
            Some(json!({"command": "hostname", "container": "server"})),
        )
        .await;
    assert_eq!(code, 200, "an instructor may exec in any container: {v}");
    assert!(
        h.fake
            .exec_calls()
            .iter()
            .any(|c| c.container == "server" && c.command == "hostname")
    );
    let (code, v) = teacher
        .post_worker(
            &id,
            "exec",
            Some(json!({"command": "id", "container": "nope"})),
        )
        .await;
    assert_eq!(code, 400, "{v}");

    // Playbooks are an instructor's tool: a learner gets 403 even in their own lab.
    let playbook = json!({"scenario_id": id, "playbook": {"playbook": [
        {"step": "execute_command", "container": "workstation", "command": "cat /tmp/flag",
         "expect": {"exit_code": 0}}
    ]}});
    let runner = h.platform.url(forge_http::Service::Runner);
    let url = format!("{runner}/v1/playbooks/run");
    let (code, v) = call(&h.api, Method::POST, &url, Some(playbook.clone())).await;
    assert_eq!(code, 403, "{v}");
    let (code, v) = call(&teacher, Method::POST, &url, Some(playbook.clone())).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["passed"], false, "the flag is not written yet: {v}");
    let other_teacher = h.api_as("acme", &["forge.instructor"], "t2");
    let (code, v) = call(&other_teacher, Method::POST, &url, Some(playbook)).await;
    assert_eq!(code, 404, "{v}");

    // The instructor may end the lab; it is recorded who did.
    assert_eq!(teacher.delete(&id).await, 200);
    let v = h.wait_status(&id, "failed", Duration::from_secs(5)).await;
    assert_eq!(v["error"], "ended early by teacher");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_read_only_their_own_scores_and_instructors_read_all() {
    let h = Harness::start().await;
    // alice's learner token carries the spec's learner role forge.score.read.
    let alice = h.api_as("demo", &["forge.spawn", "forge.score.read"], "alice");
    let id = alice
        .spawn(
            json!({"track": "netplus", "template": crate::harness::TEMPLATE,
                      "request_id": uuid::Uuid::new_v4().to_string()}),
        )
        .await;
    alice
        .wait_for(&id, &["running"], Duration::from_secs(10))
        .await;
    alice.submit(&id).await;
    alice
        .wait_for(&id, &["completed"], Duration::from_secs(10))
        .await;
    let own = alice.wait_score(&id, Duration::from_secs(5)).await;
    assert_eq!(own["scenario_id"], id.as_str());

    // A classmate with the same roles: the same 404 as for an unknown id, score and bundle.
    let classmate = h.api_as("demo", &["forge.spawn", "forge.score.read"], "bob");
    for file in [
        None,
        Some("score.json"),
        Some("evidence.tar.zst"),
        Some("verdict.sig"),
    ] {
        let (code, body) = classmate.score_raw(&id, file).await;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(code, 404, "{file:?}: {body}");
        assert_eq!(
            body["error"]["code"], "scenario_not_found",
            "{file:?}: {body}"
        );
    }

    // Tenant-wide readers: instructors, the orchestrator role, forge.score.read_all.
    for roles in [
        &["forge.instructor"][..],
        &["forge.orchestrator"][..],
        &["forge.score.read_all"][..],
    ] {
        let reader = h.api_as("demo", roles, "staff");
        let score = reader.wait_score(&id, Duration::from_secs(5)).await;
        assert_eq!(score["scenario_id"], id.as_str(), "{roles:?}");
        let (code, _) = reader.score_raw(&id, Some("evidence.tar.zst")).await;
        assert_eq!(code, 200, "{roles:?}");
    }
    // ... but not the observer role, nor anyone of another tenant.
    for (tenant, roles) in [
        ("demo", &["forge.observer"][..]),
        ("acme", &["forge.score.read_all", "forge.instructor"][..]),
    ] {
        let (code, _) = h.api_as(tenant, roles, "x").score_raw(&id, None).await;
        assert_eq!(code, 404, "{tenant} {roles:?}");
    }

    // Reading every score is not operating labs.
    let auditor = h.api_as("demo", &["forge.score.read_all"], "auditor");
    let other = h.running().await;
    let (code, _) = auditor.post_worker(&other, "check", None).await;
    assert_eq!(code, 404, "reading scores is not operating labs");
    h.stop().await;
}

/// The platform's policy endpoint (:8181) as `forge up` binds it, on loopback: anonymous
/// queries are answered but never audited; a token is judged by its roles, and an accepted
/// one's decisions are audited with the caller as actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_endpoint_audits_authenticated_callers_only() {
    let h = Harness::start().await;
    let opa = h.platform.url(forge_http::Service::Opa);
    let url = format!("{opa}/v1/data/frostgate/forge/training/allow");
    let input = json!({"input": {"metadata": {"labels": ["class:netplus"]},
                       "limits": {"attacker_max_exploits": 0}, "network": {"egress": "deny"}}});
    let post = |token: Option<String>| {
        let mut req = h.api.http.post(&url).json(&input);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.expect("opa request");
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let decisions = |h: &Harness| {
        h.audit_events()
            .into_iter()
            .filter(|e| e["event_type"] == "policy.decision")
            .collect::<Vec<_>>()
    };
    for _ in 0..10 {
        assert_eq!(post(None).await, (200, json!({"result": true})));
    }
    assert!(decisions(&h).is_empty(), "{:?}", decisions(&h));

    let learner = h
        .platform
        .mint("demo", &["forge.spawn"], "learner-1")
        .unwrap();
    let (code, v) = post(Some(learner)).await;
    assert_eq!((code, &v["code"]), (403, &json!("missing_role")), "{v}");
    let (code, v) = post(Some("forged".into())).await;
    assert_eq!(code, 401, "{v}");
    assert!(decisions(&h).is_empty());

    let observer = h
        .platform
        .mint("demo", &["forge.observer"], "grafana")
        .unwrap();
    assert_eq!(post(Some(observer)).await, (200, json!({"result": true})));
    let audited = decisions(&h);
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["actor"], "grafana");
    h.stop().await;
}
