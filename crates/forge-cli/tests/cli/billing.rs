//! `forge billing report` over a ledger written through the store.

use chrono::{Duration, Utc};
use forge_core::{ScenarioId, Track};
use forge_store::{Billing, Charge, NewScenario, SqliteStore, Store};

use crate::{forge, run};

/// Three charged spawns: acme 250 + 100 (netplus), globex 800 (cissp).
async fn ledger(dir: &std::path::Path) {
    let store = SqliteStore::open_in_dir(dir).await.unwrap();
    let now = Utc::now();
    for (tenant, request, track, cents) in [
        ("acme", "b1", Track::Netplus, 250),
        ("acme", "b2", Track::Netplus, 100),
        ("globex", "b1", Track::Cissp, 800),
    ] {
        let scenario_id = ScenarioId::generate();
        let new = NewScenario {
            scenario_id: scenario_id.clone(),
            tenant_id: tenant.into(),
            owner_sub: "learner".into(),
            track,
            template: "some-lab".into(),
            request_id: request.into(),
            access_url: format!("http://localhost:8082/access/{scenario_id}"),
            created_at: now,
            expires_at: now + Duration::hours(1),
        };
        let charge = Charge {
            event_id: format!("chg_{tenant}_{request}"),
            tenant_id: tenant.into(),
            request_id: request.into(),
            scenario_id,
            track,
            template: "some-lab".into(),
            tier: "intermediate".into(),
            plan: "burst".into(),
            amount_cents: cents,
            currency: "usd".into(),
            created_at: now,
        };
        store
            .insert_pending(&new, Billing::Ledger(&charge))
            .await
            .unwrap();
    }
    store.close().await;
}

#[tokio::test]
async fn report_sums_the_ledger_per_tenant_and_period() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(forge(dir.path()).args(["billing", "report"])).expect(1);
    assert!(out.stderr.contains("no forge database at "), "{out:?}");

    ledger(dir.path()).await;
    let out =
        run(forge(dir.path()).args(["billing", "report", "--period", "total", "--format", "json"]))
            .expect(0);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let rows: Vec<(&str, u64, i64)> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["tenant_id"].as_str().unwrap(),
                r["spawns"].as_u64().unwrap(),
                r["amount_cents"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, vec![("acme", 2, 350), ("globex", 1, 800)]);

    let out = run(forge(dir.path())
        .args([
            "billing",
            "report",
            "--from",
            "2000-01-01",
            "--tenant",
            "acme",
        ])
        // A client setting of the same name must not narrow the report.
        .env("FORGE_TENANT", "globex"))
    .expect(0);
    assert!(
        out.stdout.contains("acme") && out.stdout.contains("3.50 usd"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("globex"), "{out:?}");
    let out = run(forge(dir.path())
        .args(["billing", "report"])
        .env("FORGE_TENANT", "globex"))
    .expect(0);
    assert!(
        out.stdout.contains("acme") && out.stdout.contains("globex"),
        "{out:?}"
    );

    let out = run(forge(dir.path()).args(["billing", "report", "--from", "2999-01-01"])).expect(0);
    assert!(
        out.stdout.contains("(no charged spawns in this range)"),
        "{out:?}"
    );
    let out = run(forge(dir.path()).args([
        "billing",
        "report",
        "--from",
        "2026-02-01",
        "--to",
        "2026-01-01",
    ]))
    .expect(1);
    assert!(out.stderr.contains("must be before --to"), "{out:?}");
    let out = run(forge(dir.path()).args(["billing", "report", "--from", "yesterday"])).expect(2);
    assert!(out.stderr.contains("`yesterday`"), "{out:?}");
}
