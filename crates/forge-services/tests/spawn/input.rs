//! Bad input gets a clear 4xx naming what is wrong, never a 500 (docs/design.md §6).

use serde_json::{Value, json};

use crate::support::{Harness, Options};

#[tokio::test]
async fn garbage_bodies_wrong_types_and_oversize_are_4xx_with_clear_messages() {
    let h = Harness::start(Options::default()).await;
    let t = h.spawner("demo");
    let url = format!("{}/v1/spawn", h.base);
    let raw = |ct: Option<&str>, body: Vec<u8>| {
        let mut r = h
            .client
            .post(&url)
            .bearer_auth(&t)
            .header("x-request-id", "in-1")
            .body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    let big = format!(
        r#"{{"track":"netplus","metadata":{{"pad":"{}"}}}}"#,
        "x".repeat(200 * 1024)
    );
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (
            "garbage",
            raw(Some("application/json"), b"{{{ not json".to_vec()),
            400,
            "invalid_json",
            "not valid json",
        ),
        (
            "truncated",
            raw(Some("application/json"), br#"{"track": "netplus""#.to_vec()),
            400,
            "invalid_json",
            "not valid json",
        ),
        (
            "empty",
            raw(Some("application/json"), Vec::new()),
            400,
            "invalid_json",
            "empty",
        ),
        (
            "binary",
            raw(Some("application/json"), vec![0xff, 0xfe, 0x00, 0x01]),
            400,
            "invalid_json",
            "not valid json",
        ),
        (
            "array",
            raw(Some("application/json"), b"[1,2]".to_vec()),
            400,
            "invalid_request",
            "json object",
        ),
        (
            "text/plain",
            raw(Some("text/plain"), br#"{"track":"netplus"}"#.to_vec()),
            415,
            "unsupported_media_type",
            "text/plain",
        ),
        (
            "form",
            raw(
                Some("application/x-www-form-urlencoded"),
                b"track=netplus".to_vec(),
            ),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "no content-type",
            raw(None, br#"{"track":"netplus"}"#.to_vec()),
            415,
            "unsupported_media_type",
            "missing",
        ),
        (
            "oversized",
            raw(Some("application/json"), big.into_bytes()),
            413,
            "payload_too_large",
            "larger",
        ),
        (
            "unknown field",
            raw(
                Some("application/json"),
                br#"{"track":"netplus","colour":"red"}"#.to_vec(),
            ),
            400,
            "invalid_request",
            "unknown field `colour`",
        ),
        (
            "tenant in body",
            raw(
                Some("application/json"),
                br#"{"track":"netplus","tenant_id":"globex"}"#.to_vec(),
            ),
            400,
            "tenant_in_body",
            "bearer token",
        ),
        (
            "track wrong type",
            raw(Some("application/json"), br#"{"track":7}"#.to_vec()),
            400,
            "invalid_request",
            "track",
        ),
        (
            "no track",
            raw(Some("application/json"), b"{}".to_vec()),
            400,
            "invalid_request",
            "missing field `track`",
        ),
        (
            "metadata not object",
            raw(
                Some("application/json"),
                br#"{"track":"netplus","metadata":[1]}"#.to_vec(),
            ),
            400,
            "invalid_request",
            "map",
        ),
        (
            "unsupported track",
            raw(Some("application/json"), br#"{"track":"ceh"}"#.to_vec()),
            400,
            "unsupported_track",
            "netplus, ccna, cissp",
        ),
        (
            "unknown template",
            raw(
                Some("application/json"),
                br#"{"track":"netplus","template":"nope"}"#.to_vec(),
            ),
            400,
            "unknown_template",
            "`nope`",
        ),
        (
            "template of another track",
            raw(
                Some("application/json"),
                br#"{"track":"netplus","template":"cissp-segmentation-lab"}"#.to_vec(),
            ),
            400,
            "template_track_mismatch",
            "belongs to track cissp",
        ),
    ];
    for (name, req, status, code, needle) in cases {
        let r = h.send(req).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (status, code.to_owned()),
            "{name}: {}",
            r.text
        );
        assert!(
            r.message().to_lowercase().contains(&needle.to_lowercase()),
            "{name}: message `{}` should mention `{needle}`",
            r.message()
        );
    }
    let unsupported = h
        .send(raw(
            Some("application/json"),
            br#"{"track":"ceh"}"#.to_vec(),
        ))
        .await;
    assert_eq!(
        unsupported.json()["error"]["details"]["supported_tracks"],
        json!(["netplus", "ccna", "cissp"])
    );
    let unknown = h
        .send(raw(
            Some("application/json"),
            br#"{"track":"ccna","template":"x"}"#.to_vec(),
        ))
        .await;
    assert_eq!(
        unknown.json()["error"]["details"]["templates"],
        json!(ccna_templates())
    );

    // Routing errors are JSON too.
    let r = h.send(h.client.get(format!("{}/v1/nothing", h.base))).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found".into()));
    let r = h.send(h.client.get(&url).bearer_auth(&t)).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (405, "method_not_allowed".into())
    );

    // Nothing of the above created anything.
    assert_eq!(h.bus.stored("spawn.request"), 0);
    // The service is still fine.
    let ok = h
        .spawn(&t, &json!({"track": "netplus", "request_id": "fine"}), &[])
        .await;
    assert_eq!(ok.status, 201);
    h.stop().await;
}

#[tokio::test]
async fn an_unauthenticated_garbage_body_is_401_not_400() {
    let h = Harness::start(Options::default()).await;
    let r = h
        .send(
            h.client
                .post(format!("{}/v1/spawn", h.base))
                .header("content-type", "text/plain")
                .body("garbage"),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "missing_token".into()));
    h.stop().await;
}

/// A request_id is 1-255 characters (not bytes) without control characters once white space at
/// either end is trimmed, and the documented pattern says exactly that.
#[tokio::test]
async fn request_ids_are_what_the_documented_pattern_says() {
    let h = Harness::start(Options::default()).await;
    let t = h.spawner("demo");
    let doc = h
        .send(h.client.get(format!("{}/openapi.json", h.base)))
        .await
        .json();
    let variants = doc["components"]["schemas"]["SpawnRequestBody"]["oneOf"]
        .as_array()
        .expect("one body variant per track")
        .clone();
    let tracks: Vec<&Value> = variants
        .iter()
        .map(|v| &v["properties"]["track"]["enum"])
        .collect();
    assert_eq!(
        tracks,
        [&json!(["netplus"]), &json!(["ccna"]), &json!(["cissp"])]
    );
    let ccna = &variants[1]["properties"]["template"]["enum"];
    let mut names: Vec<Value> = ccna_templates().into_iter().map(Value::from).collect();
    names.push(Value::Null);
    assert_eq!(ccna, &Value::Array(names));
    let pattern = variants[0]["properties"]["request_id"]["pattern"]
        .as_str()
        .unwrap();
    let pattern = regex::Regex::new(pattern).unwrap();
    let samples = [
        "a".to_owned(),
        " padded\t".to_owned(),
        "inner space".to_owned(),
        "\u{a0}nbsp\u{3000}".to_owned(),
        "é".repeat(255),
        format!("  {}  ", "x".repeat(255)),
        "é".repeat(256),
        "x".repeat(256),
        String::new(),
        " \t ".to_owned(),
        "\u{85}".to_owned(),
        "tab\tinside".to_owned(),
        "del\u{7f}".to_owned(),
        "c1\u{9b}x".to_owned(),
    ];
    for (i, id) in samples.iter().enumerate() {
        let body = json!({"track": "netplus", "request_id": id, "metadata": {"i": i}});
        let r = h.spawn(&t, &body, &[]).await;
        let documented = pattern.is_match(id);
        assert_eq!(
            r.status == 201,
            documented,
            "{id:?}: answered {} {}, the pattern says {documented}",
            r.status,
            r.text
        );
        if !documented {
            assert!(
                ["missing_request_id", "invalid_request_id"].contains(&r.code().as_str()),
                "{id:?}: {}",
                r.text
            );
        }
    }
    h.stop().await;
}

/// The bundled CCNA templates' names, sorted (what the API lists for the track).
fn ccna_templates() -> Vec<String> {
    let catalog = forge_catalog::Catalog::bundled().unwrap();
    let mut names: Vec<String> = catalog
        .entries()
        .filter(|e| e.track == forge_core::Track::Ccna)
        .map(|e| e.template.metadata.name.clone())
        .collect();
    names.sort();
    assert!(names.len() >= 2, "{names:?}");
    names
}
