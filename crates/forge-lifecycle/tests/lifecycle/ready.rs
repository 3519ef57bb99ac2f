//! Readiness: `/ready` on every listener checks what that service depends on, while `/health`
//! stays a liveness answer. With the fake engine down, the services that run labs (orchestrator,
//! worker, runner) answer 503 naming `engine`, the others stay ready; back up, all are ready.

use std::time::{Duration, Instant};

use forge_http::Service;
use forge_lifecycle::readiness::Dependency;
use serde_json::{Value, json};

use crate::harness::Harness;

/// The services that run labs and so depend on the engine.
const LAB_SERVICES: [Service; 3] = [Service::Orchestrator, Service::Worker, Service::Runner];

async fn get(h: &Harness, service: Service, path: &str) -> (u16, Value) {
    let r = h
        .api
        .http
        .get(format!("{}{path}", h.platform.url(service)))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

/// The answer of a service whose every check passes.
fn all_ok(service: Service) -> Value {
    let checks: serde_json::Map<String, Value> = Dependency::of(service)
        .iter()
        .map(|d| (d.name().to_owned(), json!("ok")))
        .collect();
    json!({"status": "ready", "checks": checks})
}

/// Polls `/ready` of `service` until its status is `want` (the result is cached for a second).
async fn ready_becomes(h: &Harness, service: Service, want: u16) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = get(h, service, "/ready").await;
        if status == want {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{service} /ready is not {want} within 5 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_names_the_engine_while_it_is_down() {
    let h = Harness::start().await;
    assert_eq!(h.platform.addrs.len(), Service::ALL.len());
    for service in Service::ALL {
        let (status, body) = get(&h, service, "/ready").await;
        assert_eq!((status, body), (200, all_ok(service)), "{service}");
        let (_, doc) = get(&h, service, "/openapi.json").await;
        assert!(doc["paths"]["/ready"]["get"].is_object(), "{service}");
    }

    h.fake.set_engine_down(true);
    for service in LAB_SERVICES {
        let body = ready_becomes(&h, service, 503).await;
        assert_eq!(body["status"], "not_ready", "{service}: {body}");
        let engine = body["checks"]["engine"].as_str().unwrap_or_default();
        assert!(engine.contains("engine is down"), "{service}: {body}");
        for d in Dependency::of(service) {
            if *d != Dependency::Engine {
                assert_eq!(body["checks"][d.name()], "ok", "{service}: {body}");
            }
        }
        assert_eq!(body["error"]["code"], "not_ready", "{service}: {body}");
        assert_eq!(
            body["error"]["details"]["failing"],
            json!(["engine"]),
            "{service}: {body}"
        );
        // Liveness is not readiness.
        let (status, health) = get(&h, service, "/health").await;
        assert_eq!((status, &health["status"]), (200, &json!("ok")));
    }
    for service in [
        Service::Spawn,
        Service::Scoreboard,
        Service::Observer,
        Service::Opa,
    ] {
        let (status, body) = get(&h, service, "/ready").await;
        assert_eq!((status, body), (200, all_ok(service)), "{service}");
    }

    h.fake.set_engine_down(false);
    for service in LAB_SERVICES {
        let body = ready_becomes(&h, service, 200).await;
        assert_eq!(body, all_ok(service), "{service}");
    }
    h.stop().await;
}
