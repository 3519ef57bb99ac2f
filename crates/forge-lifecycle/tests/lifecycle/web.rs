//! The web pages' server side: the pages (no inline script, a policy that names the services),
//! their assets under content hashes with a year-long cache, the learner page's lab info with
//! the last check and hints, the public verdict keys for offline verification, and the audit
//! chain status of the operator's page.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::Harness;

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_load_only_hashed_assets_under_a_strict_policy() {
    let h = Harness::start().await;
    let id = h.spawn().await;
    let spawn = &h.api.spawn;
    for path in [
        format!("/access/{id}"),
        "/instructor".into(),
        "/operator".into(),
    ] {
        let r = get(&format!("{spawn}{path}"), None).await;
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        // The worker's WebSocket (at the public host, `localhost` here) is allowed.
        let port = h.api.worker.rsplit(':').next().unwrap();
        assert!(csp.contains(&format!("ws://localhost:{port} ")), "{csp}");
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        let html = r.text().await.unwrap();
        assert!(!html.contains("<script>"), "{path}: no inline script");
        // Every asset it names is served, immutable, under its hash.
        let assets: Vec<&str> = html
            .split('"')
            .filter(|s| s.starts_with("/assets/"))
            .collect();
        assert!(assets.iter().any(|a| a.ends_with("/common.js")), "{path}");
        for a in assets {
            let r = get(&format!("{spawn}{a}"), None).await;
            assert_eq!(r.status(), 200, "{a}");
            assert_eq!(
                r.headers()["cache-control"],
                "public, max-age=31536000, immutable"
            );
            let name = a.rsplit('/').next().unwrap();
            let wrong = format!("/assets/{}/{name}", "0".repeat(16));
            assert_eq!(
                get(&format!("{spawn}{wrong}"), None).await.status(),
                404,
                "{wrong}"
            );
        }
    }
    // A lab page for what cannot be a lab is a 404; the services' URLs are public.
    assert_eq!(
        get(&format!("{spawn}/access/nonsense"), None)
            .await
            .status(),
        404
    );
    let cfg: Value = get(&format!("{spawn}/web/config.json"), None)
        .await
        .json()
        .await
        .unwrap();
    let worker = h.api.worker.replace("127.0.0.1", "localhost");
    assert_eq!(cfg["worker_url"], worker.as_str());
    assert!(cfg["observer_url"].as_str().unwrap().starts_with("http://"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_info_keeps_the_last_check_and_shows_hints_for_what_failed() {
    let h = Harness::start().await;
    let id = h.running().await;
    let url = format!("{}/access/{id}/info", h.api.spawn);
    let info: Value = get(&url, Some(&h.api.token)).await.json().await.unwrap();
    assert!(info["last_check"].is_null());
    assert!(
        info["objectives"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["passed"].is_null() && o["hint"].is_null())
    );
    assert_eq!(
        info["consoles"],
        json!([{"container": "workstation", "title": "workstation", "command": null, "learner": true}])
    );
    assert!(info["seconds_left"].as_i64().unwrap() > 0);

    // Half solved, checked, reloaded: the page shows what passed and hints for the rest.
    h.api.exec(&id, "echo solved > /tmp/flag").await;
    h.api.check(&id).await;
    let info: Value = get(&url, Some(&h.api.token)).await.json().await.unwrap();
    let obj = |id: &str| {
        info["objectives"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(obj("flag-written")["passed"], true);
    assert!(obj("flag-written")["hint"].is_null());
    assert_eq!(obj("token-saved")["passed"], false);
    assert_eq!(obj("token-saved")["hint"], "the token starts with FG-");
    assert_eq!(info["last_check"]["passed"], 2, "{info}");
    // A classmate gets the 404 of an unknown lab.
    let bob = h.platform.mint("demo", &["forge.spawn"], "bob").unwrap();
    assert_eq!(get(&url, Some(&bob)).await.status(), 404);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_verifies_offline_with_the_published_keys() {
    let h = Harness::start().await;
    let id = h.running().await;
    h.solve(&id).await;
    h.api.submit(&id).await;
    h.wait_status(&id, "completed", Duration::from_secs(10))
        .await;
    let score = h.api.wait_score(&id, Duration::from_secs(5)).await;
    // The local evidence store says where the bundle really is, not an S3 URL.
    let evidence = score["evidence_url"].as_str().unwrap();
    assert!(evidence.starts_with("file:///"), "{evidence}");
    assert!(
        std::path::Path::new(&evidence["file://".len()..]).is_file(),
        "{evidence}"
    );

    // The public keys need no token; with them, the downloaded bundle verifies anywhere.
    let r = get(&format!("{}/v1/keys/verdict", h.api.scoreboard), None).await;
    assert_eq!(r.status(), 200);
    let keys: Value = r.json().await.unwrap();
    assert_eq!(keys["purpose"], "verdict");
    let dir = h.dir.join("bundle");
    h.api.download_bundle(&id, &dir).await;
    let set: forge_evidence::KeySet = serde_json::from_value(keys).unwrap();
    let source = forge_evidence::KeySource::KeySet(set);
    forge_evidence::verify_bundle(&dir, &source).expect("verifies with the published keys");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_whether_the_audit_chain_verifies() {
    let h = Harness::start().await;
    h.running().await;
    let observer = h.platform.url(forge_http::Service::Observer);
    let url = format!("{observer}/v1/audit/status");
    let ops = h.platform.mint("demo", &["forge.observer"], "ops").unwrap();
    let r = get(&url, Some(&ops)).await;
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["verified"], true, "{s}");
    assert!(s["events"].as_u64().unwrap() > 0, "{s}");
    assert!(s["error"].is_null());
    assert_eq!(get(&url, Some(&h.api.token)).await.status(), 403);
    assert_eq!(get(&url, None).await.status(), 401);
    h.stop().await;
}
