//! Evidence on its way to the score: the worker stages artifact bytes in the evidence store and
//! the bus carries references, which the scoreboard checks before bundling; and the signed
//! score — which its learner reads — names what is not right, never what was expected.

use std::time::Duration;

use forge_bus::messages::{ScenarioCompleted, StagedArtifact};
use forge_bus::{BusExt, DeadLetter, subjects};
use forge_core::{Artifact, ArtifactType, RunId};
use forge_evidence::{EvidenceStore, LocalStore, ObjectKey};
use serde_json::{Value, json};

use crate::delivery::Tap;
use crate::harness::{Harness, TEMPLATE};

/// The platform's own evidence store (`forge up`'s: a local store in the data dir).
fn evidence(h: &Harness) -> LocalStore {
    LocalStore::new(h.platform.data_dir.join("evidence"), "forge-evidence").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_carry_references_and_the_score_keeps_expected_values_out() {
    let h = Harness::start().await;
    let mut completed = Tap::new(&h, subjects::SCENARIO_COMPLETED).await;
    let id = h.running().await;
    // Half solved: the flag is written, the token is not.
    let out = h.api.exec(&id, "echo solved > /tmp/flag").await;
    assert_eq!(out["exit_code"], 0, "{out}");
    h.api.submit(&id).await;
    h.wait_status(&id, "completed", Duration::from_secs(10))
        .await;

    let msgs = completed.about(&id).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let raw = msgs[0].to_string();
    assert!(
        raw.len() < 8 * 1024,
        "a completion is references, not bytes: {} bytes",
        raw.len()
    );
    assert!(!raw.contains("content_b64"), "{raw}");
    let c: ScenarioCompleted = serde_json::from_value(msgs[0].clone()).unwrap();
    assert!(!c.artifacts.is_empty());
    let store = evidence(&h);
    for a in &c.artifacts {
        assert_eq!(a.key, format!("{id}/staged/{}", a.artifact.content_hash));
        let bytes = store.get(&ObjectKey::new(a.key.clone()).unwrap()).await;
        let bytes = bytes.unwrap_or_else(|e| panic!("{}: staged object: {e}", a.artifact.name));
        assert_eq!(bytes.len() as u64, a.artifact.size_bytes);
    }

    // The score and the signed score.json: generic messages for what failed.
    let score = h.api.wait_score(&id, Duration::from_secs(10)).await;
    assert_eq!(score["score"]["passed"], 2, "{score}");
    let dl = h.dir.join("half");
    h.api.download_bundle(&id, &dl).await;
    crate::api::verify(&h.platform.data_dir, &dl);
    let signed: Value =
        serde_json::from_slice(&std::fs::read(dl.join("score.json")).unwrap()).unwrap();
    for doc in [&score, &signed] {
        let text = doc.to_string();
        assert!(!text.contains("FG-FAST"), "expected value leaked: {text}");
        assert!(!text.contains("does not contain"), "{text}");
    }
    let token = signed["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion_id"] == "token-saved")
        .unwrap_or_else(|| panic!("{signed}"));
    assert_eq!(token["passed"], false);
    assert_eq!(
        token["message"], "not yet: a file is not what the lab expects",
        "{token}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_referring_to_foreign_missing_or_altered_bytes_is_dead_lettered() {
    let h = Harness::start().await;
    let mut letters = h
        .platform
        .bus
        .subscribe(&subjects::dead_letter(subjects::SCENARIO_COMPLETED), "ops")
        .await
        .unwrap();
    let (victim, other) = (h.running().await, h.running().await);
    let store = evidence(&h);
    let artifact = Artifact::describe(ArtifactType::CommandOutput, "c.0.command_output", b"hi");
    // The other lab's real staged bytes, referred to from the victim's completion.
    let foreign = format!("{other}/staged/{}", artifact.content_hash);
    store
        .put(&ObjectKey::new(foreign.clone()).unwrap(), b"hi".to_vec())
        .await
        .unwrap();
    // Bytes under the victim's key that do not hash to it.
    let altered = Artifact::describe(ArtifactType::CommandOutput, "c.0.command_output", b"yo");
    let altered_key = StagedArtifact::key_for(&victim.parse().unwrap(), &altered);
    store
        .put(
            &ObjectKey::new(altered_key.clone()).unwrap(),
            b"no".to_vec(),
        )
        .await
        .unwrap();
    let missing = Artifact::describe(ArtifactType::CommandOutput, "c.0.command_output", b"zz");
    let missing_key = StagedArtifact::key_for(&victim.parse().unwrap(), &missing);

    for (n, (art, key, why)) in [
        (&artifact, foreign, "staging key"),
        (&missing, missing_key, "does not exist"),
        (&altered, altered_key, "hash to"),
    ]
    .into_iter()
    .enumerate()
    {
        let forged = json!({
            "scenario_id": victim, "run_id": RunId::generate().to_string(), "tenant_id": "demo",
            "track": "netplus", "template": TEMPLATE, "reason": "submit",
            "collected_at": chrono::Utc::now(), "criteria": [],
            "artifacts": [{"artifact": art, "key": key}]
        });
        let msg_id = format!("forged-{n}");
        h.platform
            .bus
            .publish_json(subjects::SCENARIO_COMPLETED, &msg_id, &forged)
            .await
            .unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), letters.next())
            .await
            .expect("dead letter within 5 s")
            .unwrap();
        let letter: DeadLetter = m.json().unwrap();
        m.ack().await.unwrap();
        assert_eq!(letter.msg_id, msg_id);
        assert!(letter.reason.contains(why), "{why}: {}", letter.reason);
    }
    // Nothing was published for the victim, whose own submission still scores.
    assert!(h.audited("score.published", &victim).is_empty());
    h.api.submit(&victim).await;
    h.wait_status(&victim, "completed", Duration::from_secs(10))
        .await;
    h.api.wait_score(&victim, Duration::from_secs(10)).await;
    h.stop().await;
}
