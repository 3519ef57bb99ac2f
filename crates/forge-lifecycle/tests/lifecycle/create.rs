//! `POST /v1/scenarios` on the orchestrator is a spawn through the front door: the same
//! authentication, tenant, entitlement, quota, billing, rate limit and idempotency as
//! `POST /v1/spawn`; the platform chooses every scenario id; no input is a 500.

use std::time::Duration;

use forge_store::LedgerQuery;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Harness, TEMPLATE};

/// A tenant with a quota of one lab and a spawn budget of two requests.
const SMALL: &str = r#"
[plans.small]
entitled_tracks = ["netplus"]
max_active_scenarios = 1
rate = { requests_per_second = 0.01, burst = 2 }
prices.netplus = { default = 250 }

[tenants.small-co]
plan = "small"
"#;

/// An extra request header: name, value.
type Header<'a> = Option<(&'a str, &'a str)>;

/// `POST /v1/scenarios` with `body` (raw text) and optional extra header.
async fn create(
    h: &Harness,
    token: &str,
    body: &str,
    header: Header<'_>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = h
        .api
        .http
        .request(Method::POST, format!("{}/v1/scenarios", h.api.orchestrator))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let r = req.send().await.expect("create request");
    let code = r.status().as_u16();
    let headers = r.headers().clone();
    (code, r.json().await.unwrap_or(Value::Null), headers)
}

fn automation(h: &Harness, tenant: &str) -> String {
    h.platform
        .mint(tenant, &["forge.orchestrator", "forge.spawn"], "automation")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_chosen_ids_and_bad_bodies_are_4xx_never_500() {
    let h = Harness::start().await;
    // Another tenant's scenario, whose id a client might try to claim.
    let foreign = h.running().await;
    let rival = automation(&h, "acme");
    let token = automation(&h, "demo");
    for id in [
        json!(foreign),
        json!("scn-0123456789ab"),
        json!("../../etc"),
        json!(42),
        json!(null),
    ] {
        for who in [&rival, &token] {
            let body = json!({"scenario_id": id, "template": "netplus", "request_id": "r-1"});
            let (code, v, _) = create(&h, who, &body.to_string(), None).await;
            assert_eq!(code, 400, "{id}: {v}");
            assert_eq!(v["error"]["code"], "scenario_id_in_body", "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("`scenario_id`"),
                "{v}"
            );
        }
    }
    let long_key = format!(
        r#"{{"template": "{TEMPLATE}", "request_id": "{}"}}"#,
        "x".repeat(300)
    );
    let bad: [(&str, Header); 10] = [
        ("{}", None),
        ("not json", None),
        ("[1, 2]", None),
        (r#"{"template": 5, "request_id": "r"}"#, None),
        (r#"{"template": "nope", "request_id": "r"}"#, None),
        (
            r#"{"template": "netplus", "request_id": "r", "x": 1}"#,
            None,
        ),
        (r#"{"template": "netplus", "tenant_id": "demo"}"#, None),
        (r#"{"template": "netplus"}"#, None),
        (
            r#"{"template": "netplus", "request_id": "a"}"#,
            Some(("x-request-id", "b")),
        ),
        (&long_key, None),
    ];
    for (body, header) in bad {
        let (code, v, _) = create(&h, &token, body, header).await;
        assert_eq!(code, 400, "{body}: {v}");
        assert!(v["error"]["code"].is_string(), "{body}: {v}");
    }
    // Roles: the orchestrator's own, then the spawn's.
    let learner = h
        .platform
        .mint("demo", &["forge.spawn"], "learner")
        .unwrap();
    let only_orchestrator = h
        .platform
        .mint("demo", &["forge.orchestrator"], "ops")
        .unwrap();
    let body = json!({"template": "netplus", "request_id": "roles"}).to_string();
    for who in [&learner, &only_orchestrator] {
        let (code, v, _) = create(&h, who, &body, None).await;
        assert_eq!(
            (code, &v["error"]["code"]),
            (403, &json!("missing_role")),
            "{v}"
        );
    }
    let (code, _, _) = create(&h, "garbage", &body, None).await;
    assert_eq!(code, 401);
    // An unknown tenant is refused like at the front door.
    let (code, v, _) = create(&h, &rival, &body, None).await;
    assert_eq!(
        (code, &v["error"]["code"]),
        (403, &json!("unknown_tenant")),
        "{v}"
    );
    assert_eq!(h.api.status(&foreign).await, "running", "untouched");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_create_is_a_billed_idempotent_spawn() {
    let h = Harness::start().await;
    let token = automation(&h, "demo");
    let body = json!({"template": TEMPLATE, "request_id": "create-1"}).to_string();
    let (code, first, headers) = create(&h, &token, &body, None).await;
    assert_eq!(code, 202, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    let id = first["scenario_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("scn-"), "{first}");
    assert_eq!(first["network_id"], format!("forge_scn_{}", &id[4..]));
    assert_eq!(first["request_id"], "create-1");
    assert!(
        first["access_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/access/{id}")),
        "{first}"
    );

    // The lab comes up through the bus like any spawn, owned by the caller.
    let owner = h.api.with_token(token.clone());
    owner
        .wait_for(&id, &["running"], Duration::from_secs(10))
        .await;

    // A retry is the same spawn; a different body under the same key is refused.
    let (code, again, headers) = create(&h, &token, &body, None).await;
    assert_eq!(code, 202, "{again}");
    assert_eq!(again["scenario_id"], id.as_str());
    assert_eq!(again["status"], "running");
    assert_eq!(headers["idempotent-replayed"], "true");
    let other = json!({"template": "netplus", "request_id": "create-1"}).to_string();
    let (code, v, _) = create(&h, &token, &other, None).await;
    assert_eq!(
        (code, &v["error"]["code"]),
        (422, &json!("idempotency_key_reused")),
        "{v}"
    );

    // Billed once, audited as a spawn.
    let ledger = h
        .platform
        .store
        .ledger(&LedgerQuery {
            tenant_id: Some("demo".into()),
            ..LedgerQuery::default()
        })
        .await
        .unwrap();
    let charges: Vec<_> = ledger
        .iter()
        .filter(|c| c.request_id == "create-1")
        .collect();
    assert_eq!(charges.len(), 1, "{ledger:?}");
    assert_eq!(charges[0].scenario_id.as_str(), id);
    assert_eq!(h.audited("spawn.request", &id).len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_count_against_the_plans_quota_and_spawn_rate() {
    let h = Harness::start_with(|cfg| {
        let dir = cfg.data_dir.parent().unwrap().to_path_buf();
        cfg.tenants_file = Some(Harness::tenants_file(&dir, SMALL));
    })
    .await;
    let token = automation(&h, "small-co");
    let body = |key: &str| json!({"template": TEMPLATE, "request_id": key}).to_string();
    let (code, v, _) = create(&h, &token, &body("q-1"), None).await;
    assert_eq!(code, 202, "{v}");
    // One lab at a time on this plan.
    let (code, v, _) = create(&h, &token, &body("q-2"), None).await;
    assert_eq!(
        (code, &v["error"]["code"]),
        (403, &json!("policy_denied")),
        "{v}"
    );
    // And two spawn requests per bucket: the third is a 429 with Retry-After.
    let (code, v, headers) = create(&h, &token, &body("q-3"), None).await;
    assert_eq!(
        (code, &v["error"]["code"]),
        (429, &json!("rate_limited")),
        "{v}"
    );
    assert!(headers.contains_key("retry-after"));
    let ledger = h
        .platform
        .store
        .ledger(&LedgerQuery {
            tenant_id: Some("small-co".into()),
            ..LedgerQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].amount_cents, 250);
    h.stop().await;
}
