//! The instructor's routes: the tenant's live labs as a list (own tenant only, learners refused,
//! with each lab's last check), more time for a lab, ending one — extensions and ends audited
//! in the instructor's name — and the operator's view of the lab hosts.

use std::time::Duration;

use chrono::DateTime;
use reqwest::Method;
use serde_json::{Value, json};

use crate::api::Api;
use crate::harness::Harness;

async fn call(api: &Api, method: Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = api.http.request(method, url).bearer_auth(&api.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

async fn list(api: &Api, query: &str) -> (u16, Value) {
    let url = format!("{}/v1/scenarios{query}", api.orchestrator);
    call(api, Method::GET, &url, None).await
}

fn ids(v: &Value) -> Vec<String> {
    v["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scenario_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instructors_list_their_own_tenants_labs_and_learners_are_refused() {
    let h = Harness::start().await;
    let teacher = h.api_as("demo", &["forge.instructor"], "teacher");
    let bob = h.api_as("demo", &["forge.spawn"], "bob");
    let acme_learner = h.api_as("acme-training", &["forge.spawn"], "ann");
    let acme_teacher = h.api_as("acme-training", &["forge.instructor"], "tina");

    // A lab is in the list as soon as it is spawned, before it runs.
    let mine = h.spawn().await;
    let (code, v) = list(&teacher, "").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(ids(&v), [mine.as_str()], "{v}");
    let row = &v["scenarios"][0];
    assert_eq!(row["owner_sub"], "learner-1");
    assert_eq!(row["template"], "fast-lab");
    assert!(row["seconds_left"].as_i64().unwrap() > 25 * 60, "{row}");
    h.api
        .wait_for(&mine, &["running"], Duration::from_secs(10))
        .await;
    let bobs = bob
        .spawn(json!({"track": "netplus", "template": "fast-lab", "request_id": "bob-1"}))
        .await;
    let theirs = acme_learner
        .spawn(json!({"track": "netplus", "template": "fast-lab", "request_id": "ann-1"}))
        .await;
    bob.wait_for(&bobs, &["running"], Duration::from_secs(10))
        .await;

    // Newest first, this tenant's only; the other tenant's instructor sees only theirs.
    let (_, v) = list(&teacher, "?status=active").await;
    assert_eq!(ids(&v), [bobs.as_str(), mine.as_str()]);
    let (_, v) = list(&acme_teacher, "").await;
    assert_eq!(ids(&v), [theirs.as_str()]);

    // The last check's progress shows up in the list.
    h.solve(&mine).await;
    h.api.check(&mine).await;
    let (_, v) = list(&teacher, "?status=running").await;
    let row = v["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scenario_id"] == mine.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["last_check"]["passed"], 3, "{row}");
    assert_eq!(row["last_check"]["total"], 3);
    assert_eq!(row["last_check"]["criteria"]["token-saved"], true);

    // Learners (even of the lab) and the observer role do not get the list: 403, not data.
    for api in [
        &h.api,
        &bob,
        &h.api_as("demo", &["forge.observer"], "watcher"),
    ] {
        let (code, v) = list(api, "").await;
        assert_eq!(code, 403, "{v}");
        assert_eq!(v["error"]["code"], "missing_role");
    }
    let (code, v) = list(&teacher, "?status=runing").await;
    assert_eq!((code, &v["error"]["code"]), (400, &json!("invalid_status")));
    let (code, _) = list(&teacher, "?limit=0").await;
    assert_eq!(code, 400);

    // Ended labs are listed with `ended`.
    assert_eq!(teacher.delete(&bobs).await, 200);
    teacher
        .wait_for(&bobs, &["failed"], Duration::from_secs(5))
        .await;
    let (_, v) = list(&teacher, "?status=ended").await;
    assert_eq!(ids(&v), [bobs.as_str()]);
    let (_, v) = list(&teacher, "").await;
    assert_eq!(ids(&v), [mine.as_str()]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instructors_extend_and_end_labs_in_their_own_name() {
    let h = Harness::start().await;
    let id = h.running().await;
    let teacher = h.api_as("demo", &["forge.instructor"], "teacher");
    let url = format!("{}/v1/scenarios/{id}/extend", h.api.orchestrator);
    let before = h.api.scenario(&id).await.1["expires_at"]
        .as_str()
        .unwrap()
        .to_owned();

    let (code, v) = call(&teacher, Method::POST, &url, Some(json!({"minutes": 15}))).await;
    assert_eq!(code, 200, "{v}");
    let t = |s: &Value| DateTime::parse_from_rfc3339(s.as_str().unwrap()).unwrap();
    assert_eq!(
        (t(&v["expires_at"]) - t(&json!(before))).num_minutes(),
        15,
        "{v}"
    );
    // Every reader sees the new expiry.
    let (_, now) = h.api.scenario(&id).await;
    assert_eq!(now["expires_at"], v["expires_at"]);
    let ext = h.audited("scenario.extend", &id);
    assert_eq!(ext.len(), 1, "{ext:?}");
    assert_eq!(ext[0]["actor"], "teacher");
    assert_eq!(ext[0]["details"]["minutes"], 15);
    assert_eq!(ext[0]["details"]["tenant_id"], "demo");

    // The learner may not extend their own lab; another tenant's instructor finds no lab.
    let (code, v) = call(&h.api, Method::POST, &url, Some(json!({"minutes": 15}))).await;
    assert_eq!(
        (code, &v["error"]["code"]),
        (403, &json!("missing_role")),
        "{v}"
    );
    let stranger = h.api_as("acme", &["forge.instructor"], "eve");
    let (code, v) = call(&stranger, Method::POST, &url, Some(json!({"minutes": 15}))).await;
    assert_eq!(
        (code, &v["error"]["code"]),
        (404, &json!("scenario_not_found")),
        "{v}"
    );
    for bad in [
        json!({"minutes": 0}),
        json!({"minutes": 241}),
        json!({"hours": 1}),
    ] {
        let (code, v) = call(&teacher, Method::POST, &url, Some(bad.clone())).await;
        assert_eq!(code, 400, "{bad}: {v}");
    }
    // Never past 24 h after the spawn.
    let mut last = (0, Value::Null);
    for _ in 0..8 {
        last = call(&teacher, Method::POST, &url, Some(json!({"minutes": 240}))).await;
        if last.0 != 200 {
            break;
        }
    }
    assert_eq!(
        (last.0, &last.1["error"]["code"]),
        (409, &json!("not_extendable")),
        "{}",
        last.1
    );

    // Ending it is recorded in the instructor's name.
    assert_eq!(teacher.delete(&id).await, 200);
    let ended = h.audited("scenario.end", &id);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["actor"], "teacher");
    assert_eq!(ended[0]["details"]["owner"], "learner-1");
    let (code, v) = call(&teacher, Method::POST, &url, Some(json!({"minutes": 5}))).await;
    assert_eq!(
        (code, &v["error"]["code"]),
        (409, &json!("not_extendable")),
        "{v}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_the_lab_hosts_and_their_capacity() {
    let h = Harness::start().await;
    let id = h.running().await;
    let operator = h.api_as("demo", &["forge.orchestrator"], "ops");
    let url = format!("{}/v1/hosts", h.api.orchestrator);
    let (code, v) = call(&operator, Method::GET, &url, None).await;
    assert_eq!(code, 200, "{v}");
    let host = &v["hosts"][0];
    assert_eq!(host["live"], true, "{v}");
    assert_eq!(host["active"], 1, "{v}");
    assert_eq!(v["active"], 1);
    assert!(v["capacity"].as_u64().unwrap() >= 1);
    assert!(
        !v.to_string().contains(&id),
        "hosts name no tenant's lab: {v}"
    );
    let observer = h.api_as("demo", &["forge.observer"], "obs");
    assert_eq!(call(&observer, Method::GET, &url, None).await.0, 200);
    for api in [&h.api, &h.api_as("demo", &["forge.instructor"], "teacher")] {
        let (code, v) = call(api, Method::GET, &url, None).await;
        assert_eq!(
            (code, &v["error"]["code"]),
            (403, &json!("missing_role")),
            "{v}"
        );
    }
    h.stop().await;
}
