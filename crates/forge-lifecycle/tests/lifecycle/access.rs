//! Who may touch a scenario, on every route that takes a scenario id: the owner, and the
//! tenant's instructors; another learner of the tenant and anyone of another tenant get the
//! same 404 as for an id that does not exist, and the attempt is audited as `access.denied`.

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

    let denied = h.audited("access.denied", &id);
    for sub in ["bob", "eve"] {
        let n = denied.iter().filter(|e| e["actor"] == sub).count();
        assert!(n >= 8, "{sub}: {n} of the refusals audited: {denied:?}");
    }
    assert!(
        denied
            .iter()
            .any(|e| e["details"]["scope"] == "cross_tenant")
    );
    assert!(
        denied
            .iter()
            .any(|e| e["details"]["scope"] == "same_tenant")
    );
    h.stop().await;
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
async fn score_readers_read_scores_but_cannot_work_in_labs() {
    let h = Harness::start().await;
    let id = h.running().await;
    h.api.submit(&id).await;
    h.wait_status(&id, "completed", Duration::from_secs(10))
        .await;
    let auditor = h.api_as("demo", &["forge.score.read"], "auditor");
    let score = auditor.wait_score(&id, Duration::from_secs(5)).await;
    assert_eq!(score["scenario_id"], id.as_str());
    let other = h.running().await;
    let (code, _) = auditor.post_worker(&other, "check", None).await;
    assert_eq!(code, 404, "reading scores is not operating labs");
    h.stop().await;
}
