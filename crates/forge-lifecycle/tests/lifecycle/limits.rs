//! Abuse limits on every authenticated route: per-tenant request budgets (429 with
//! Retry-After, from the tenant's plan or the default), and refusals that are all counted but
//! cannot grow the audit log: a hundred probes of another tenant's score leave at most two
//! records.

use reqwest::Method;
use serde_json::Value;

use crate::harness::Harness;

/// A tenant whose budget on the lifecycle routes is three requests.
const TIGHT: &str = r#"
[plans.tight]
entitled_tracks = ["netplus"]
max_active_scenarios = 1
rate = { requests_per_second = 0.01, burst = 1 }
api_rate = { requests_per_second = 0.01, burst = 3 }
prices.netplus = { default = 250 }

[tenants.tight-school]
plan = "tight"
"#;

async fn call(h: &Harness, token: &str, method: Method, url: &str) -> reqwest::Response {
    h.api
        .http
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

/// The value of `forge_access_denied_total{action="read_score"}` on the scoreboard's
/// `/metrics` (the recorder is the process's: other tests add to it too).
async fn score_denials(h: &Harness) -> f64 {
    let text = reqwest::get(format!("{}/metrics", h.api.scoreboard))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("forge_access_denied_total{action=\"read_score\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_foreign_score_probes_leave_two_records_and_a_count_of_a_hundred() {
    let h = Harness::start().await;
    let id = h.running().await;
    let prober = h
        .platform
        .mint(
            "acme",
            &["forge.score.read_all", "forge.instructor"],
            "prober",
        )
        .unwrap();
    let before = score_denials(&h).await;
    let url = format!("{}/v1/scores/{id}", h.api.scoreboard);
    for _ in 0..100 {
        let r = call(&h, &prober, Method::GET, &url).await;
        assert_eq!(r.status().as_u16(), 404);
    }
    let counted = score_denials(&h).await - before;
    assert!(counted >= 100.0, "every refusal is counted: {counted}");
    let recorded: Vec<Value> = h
        .audit_events()
        .into_iter()
        .filter(|e| e["event_type"] == "access.denied" && e["actor"] == "prober")
        .collect();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["resource_id"], id.as_str());
    assert_eq!(recorded[0]["details"]["scope"], "cross_tenant");

    let events = h.stop_and_audit().await;
    let recorded: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_type"] == "access.denied" && e["actor"] == "prober")
        .collect();
    assert!(recorded.len() <= 2, "{recorded:?}");
    let closing = recorded.last().unwrap();
    assert_eq!(closing["details"]["suppressed"], 99, "{closing}");
    assert_eq!(closing["details"]["tenant_id"], "acme");
    assert_eq!(closing["resource_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_authenticated_route_spends_the_tenants_budget() {
    let h = Harness::start_with(|cfg| {
        let dir = cfg.data_dir.parent().unwrap().to_path_buf();
        cfg.tenants_file = Some(Harness::tenants_file(&dir, TIGHT));
    })
    .await;
    let token = h
        .platform
        .mint("tight-school", &["forge.spawn"], "pupil")
        .unwrap();
    let unknown = format!("{}/v1/scenarios/scn-000000000000", h.api.orchestrator);
    for _ in 0..3 {
        let r = call(&h, &token, Method::GET, &unknown).await;
        assert_eq!(r.status().as_u16(), 404);
    }
    // The budget is the tenant's across services: the worker refuses as well.
    let check = format!("{}/v1/scenarios/scn-000000000000/check", h.api.worker);
    for (method, url) in [(Method::GET, &unknown), (Method::POST, &check)] {
        let r = call(&h, &token, method, url).await;
        assert_eq!(r.status().as_u16(), 429, "{url}");
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait >= 1, "{wait}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("tight-school"),
            "{body}"
        );
    }
    // So do the instructor's, the operator's and the pages' routes.
    let (o, w) = (&h.api.orchestrator, &h.api.worker);
    let observer = h.platform.url(forge_http::Service::Observer);
    let unknown_id = "scn-000000000000";
    for (method, url) in [
        (Method::GET, format!("{o}/v1/scenarios")),
        (
            Method::POST,
            format!("{o}/v1/scenarios/{unknown_id}/extend"),
        ),
        (Method::GET, format!("{o}/v1/hosts")),
        (
            Method::POST,
            format!("{w}/v1/scenarios/{unknown_id}/terminal/ticket"),
        ),
        (Method::GET, format!("{observer}/v1/audit/status")),
        (
            Method::GET,
            format!("{}/access/{unknown_id}/info", h.api.spawn),
        ),
    ] {
        let r = call(&h, &token, method, &url).await;
        assert_eq!(r.status().as_u16(), 429, "{url}");
    }
    // Probes stay open, with or without a token; other tenants have their own budget.
    for path in ["/health", "/metrics"] {
        let r = call(
            &h,
            &token,
            Method::GET,
            &format!("{}{path}", h.api.orchestrator),
        )
        .await;
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let id = h.running().await;
    assert_eq!(h.api.status(&id).await, "running");
    // A request without a token never reaches a budget: it is a 401.
    let r = h.api.http.get(&unknown).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    h.stop().await;
}
