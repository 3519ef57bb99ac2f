//! What every service's `/openapi.json` promises (scripts/check-api.sh holds the services to it
//! with schemathesis), and the playbook runner refusing what its schema refuses.

use forge_http::Service;
use serde_json::{Value, json};

use crate::harness::Harness;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

async fn doc(h: &Harness, service: Service) -> Value {
    let url = format!("{}/openapi.json", h.platform.url(service));
    let r = h.api.http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{service}");
    r.json().await.unwrap()
}

/// The schema `s` is, following a `$ref` into `doc`'s components.
fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => s,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_declares_its_parameters_bodies_and_errors() {
    let h = Harness::start().await;
    for service in Service::ALL {
        let doc = doc(&h, service).await;
        let paths = doc["paths"].as_object().unwrap();
        for (path, item) in paths {
            let names: Vec<&str> = path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            for method in METHODS {
                let op = &item[method];
                if op.is_null() {
                    continue;
                }
                let at = format!("{service} {method} {path}");
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                for name in &names {
                    assert!(
                        params
                            .iter()
                            .any(|p| p["name"] == *name && p["in"] == "path"),
                        "{at}: path parameter {name} is not declared"
                    );
                }
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|k| k.starts_with('2')),
                    "{at}: no success answer documented"
                );
                for (code, r) in responses {
                    let content = r["content"].as_object();
                    if code.starts_with('4') || code.starts_with('5') {
                        assert!(
                            content.is_some_and(|c| c.contains_key("application/json")),
                            "{at}: {code} has no JSON body documented: {r}"
                        );
                    }
                }
                if let Some(body) = op["requestBody"]["content"]["application/json"].get("schema") {
                    let schema = resolve(&doc, body);
                    assert!(
                        schema["properties"].is_object() || schema["oneOf"].is_array(),
                        "{at}: the body's schema says nothing: {schema}"
                    );
                }
                if !op["security"].is_null() && service != Service::Opa {
                    for code in ["401", "403", "429"] {
                        assert!(responses.contains_key(code), "{at}: no {code}");
                    }
                }
            }
        }
    }

    // The runner's steps refuse fields they do not have, each variant on its own.
    let runner = doc(&h, Service::Runner).await;
    let steps = runner["components"]["schemas"]["PlaybookStep"]["oneOf"]
        .as_array()
        .unwrap();
    assert_eq!(steps.len(), 4, "{steps:?}");
    for step in steps {
        assert_eq!(step["additionalProperties"], false, "{step}");
    }
    let run = &runner["components"]["schemas"]["RunBody"]["properties"]["playbook"];
    assert_eq!(run["properties"]["playbook"]["minItems"], 1, "{run}");
    assert_eq!(run["properties"]["playbook"]["maxItems"], 100, "{run}");

    // A spawn names a template of its own track; the orchestrator takes a template or a track.
    let spawn = doc(&h, Service::Spawn).await;
    let variants = spawn["components"]["schemas"]["SpawnRequestBody"]["oneOf"]
        .as_array()
        .unwrap();
    let netplus = variants
        .iter()
        .find(|v| v["properties"]["track"]["enum"] == json!(["netplus"]))
        .expect("a netplus variant");
    let templates = netplus["properties"]["template"]["enum"]
        .as_array()
        .unwrap();
    assert!(templates.contains(&json!("fast-lab")), "{templates:?}");
    assert!(templates.contains(&Value::Null), "{templates:?}");
    assert!(!templates.contains(&json!("cissp-segmentation-lab")));
    assert_eq!(netplus["additionalProperties"], false, "{netplus}");
    let orchestrator = doc(&h, Service::Orchestrator).await;
    let template =
        &orchestrator["components"]["schemas"]["CreateScenario"]["properties"]["template"]["enum"];
    for name in ["fast-lab", "netplus", "cissp-segmentation-lab"] {
        assert!(
            template.as_array().unwrap().contains(&json!(name)),
            "{template}"
        );
    }
    // The orchestrator's spawns go through the front door: the same idempotency key rules.
    let created = &orchestrator["components"]["schemas"]["CreateScenario"]["properties"];
    assert_eq!(
        created["request_id"]["pattern"], netplus["properties"]["request_id"]["pattern"],
        "body request_id"
    );
    let header = |doc: &Value, path: &str| {
        doc["paths"][path]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "x-request-id")
            .map(|p| p["schema"]["pattern"].clone())
    };
    assert_eq!(
        header(&orchestrator, "/v1/scenarios"),
        header(&spawn, "/v1/spawn"),
        "x-request-id header"
    );
    assert!(header(&spawn, "/v1/spawn").is_some_and(|p| p.is_string()));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_refuses_what_its_schema_refuses() {
    let h = Harness::start().await;
    let id = h.running().await;
    let api = h.api_as("demo", &["forge.instructor"], "teacher");
    let runner = h.platform.url(Service::Runner);
    let post = |path: &str, body: String| {
        api.http
            .post(format!("{runner}{path}"))
            .bearer_auth(&api.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let step = json!({"step": "execute_command", "container": "c", "command": "true"});
    let seen = json!({"kind": "command", "exit_code": 0, "stdout": "", "stderr": "",
                      "timed_out": false, "duration_ms": 1});

    // A whole number written as a float is that number, as in JSON Schema.
    let mut timed = step.clone();
    timed["timeout_seconds"] = json!(5.0);
    let r = post(
        "/v1/evaluate",
        json!({"step": timed, "observation": seen}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["passed"], true);

    // Arrays where objects belong (serde would take them field by field), unknown fields and
    // values out of range are 400s naming the problem.
    let refused = [
        json!(["x"]).to_string(),
        json!({"step": ["execute_command", "c", "true"], "observation": seen}).to_string(),
        json!({"step": step, "observation": ["command", 0, "", "", false, 1]}).to_string(),
        json!({"step": {"step": "check_file", "container": "c", "path": "/p",
                        "expect": [true]}, "observation": seen})
        .to_string(),
        json!({"step": {"step": "inspect_state", "container": "c", "colour": "red"},
               "observation": seen})
        .to_string(),
        json!({"step": {"step": "execute_command", "container": "c", "command": "x",
                        "timeout_seconds": 301}, "observation": seen})
        .to_string(),
        json!({"step": step, "observation": {"kind": "command", "exit_code": 0, "stdout": "",
               "stderr": "", "timed_out": false, "duration_ms": -1}})
        .to_string(),
    ];
    for body in refused {
        let r = post("/v1/evaluate", body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{body}: {v}");
    }

    for (playbook, code) in [
        (json!({"playbook": []}), "invalid_playbook"),
        (json!([[step]]), "invalid_request"),
        (
            json!({"playbook": [["execute_command", "c", "true"]]}),
            "invalid_request",
        ),
    ] {
        let body = json!({"scenario_id": id, "playbook": playbook}).to_string();
        let r = post("/v1/playbooks/run", body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
    }
    let body = json!({"scenario_id": id, "playbook": {"playbook": [step]}}).to_string();
    let r = post("/v1/playbooks/run", body).await.unwrap();
    assert_eq!(r.status(), 200);
    h.stop().await;
}
