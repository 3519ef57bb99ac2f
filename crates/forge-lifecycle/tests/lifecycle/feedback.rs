//! What a check tells whom (issue 16): a learner learns which objectives are not met yet and
//! what kind of thing is wrong, never the value a criterion expects; an instructor (or the
//! platform) gets the evaluator's detailed message.

use serde_json::Value;

use crate::harness::Harness;

/// The values the test template's criteria look for (`stdout_contains: "solved"`,
/// `contains: "FG-FAST"`).
const EXPECTED: [&str; 2] = ["solved", "FG-FAST"];

/// The check report's criterion `id`.
fn criterion<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion_id"] == id)
        .unwrap_or_else(|| panic!("no criterion {id}: {report}"))
}

/// The report without the template's hints: a hint is what the author chose to tell learners
/// (the fast template's flag hint spells out the command), not something the platform leaks.
fn without_hints(report: &Value) -> String {
    let mut r = report.clone();
    for c in r["criteria"].as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("hint");
    }
    r.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learners_check_never_shows_the_expected_answer_an_instructors_does() {
    let h = Harness::start().await;
    let id = h.running().await;
    // Wrong answers, so both criteria fail on their expectations, not on missing files.
    h.api.exec(&id, "echo nope > /tmp/flag").await;
    h.api.exec(&id, "echo FG-WRONG > /tmp/token.txt").await;

    // The learner, with the roles `forge check` mints (spawn, score.read) or just spawn.
    for roles in [&["forge.spawn"][..], &["forge.spawn", "forge.score.read"]] {
        let learner = h.api_as("demo", roles, "learner-1");
        let report = learner.check(&id).await;
        let shown = without_hints(&report);
        for secret in EXPECTED {
            assert!(!shown.contains(secret), "{roles:?} saw `{secret}`: {shown}");
        }
        assert!(!report.to_string().contains("FG-FAST"), "{report}");
        let flag = criterion(&report, "flag-written");
        assert_eq!(flag["passed"], false);
        assert_eq!(
            flag["message"],
            "not yet: the command's output is not what the lab expects"
        );
        assert_eq!(
            flag["hint"], "echo solved > /tmp/flag",
            "hints stay: {flag}"
        );
        let token = criterion(&report, "token-saved");
        assert_eq!(
            token["message"],
            "not yet: a file is not what the lab expects"
        );
        assert_eq!(criterion(&report, "server-up")["message"], "ok");
    }

    // Instructors and the platform grade labs: they get what the evaluator saw and wanted.
    for role in ["forge.instructor", "forge.orchestrator"] {
        let staff = h.api_as("demo", &[role], "teacher-1");
        let report = staff.check(&id).await;
        let flag = criterion(&report, "flag-written")["message"].to_string();
        assert!(
            flag.contains("output does not contain `solved`"),
            "{role}: {flag}"
        );
        let token = criterion(&report, "token-saved")["message"].to_string();
        assert!(
            token.contains("does not contain `FG-FAST`"),
            "{role}: {token}"
        );
    }

    // Once solved, everyone sees the same passes.
    h.solve(&id).await;
    let report = h.api.check(&id).await;
    assert_eq!(report["passed"], 3, "{report}");
    assert!(
        report["criteria"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["message"] == "ok" && c["hint"].is_null()),
        "{report}"
    );
    h.stop().await;
}
