//! Decision latency and throughput of the embedded engine, with in-run baselines.
//!
//! Run: `cargo bench -p forge-policy --bench decision` (release profile). For every gate (the
//! training gate on the bundled netplus lab: 3 containers, 2 subnets, 2 criteria) it prints:
//!
//! - uncached p50/p99: every decision evaluates (decision cache off);
//! - interpreter p50/p99, measured in the same run, and the ratio of the p50s: the same gates
//!   on regorus's interpreter (`EmbeddedEngineBuilder::vm(false)`), which decided every gate
//!   before the shipped gates moved to regorus's VM (the production default);
//! - cached p50: the production default, a repeated input reuses its evaluation;
//! - PASS/FAIL against docs/design.md §8: uncached p50 <= 100 µs, cached p50 <= 20 µs.
//!
//! Then two floors (input canonical hash; a full uncached decision through a trivial
//! `allow := true` policy) and throughput with 1, 2 and 4 threads. The machine is shared and
//! noisy: compare the figures of one run with each other, not across runs.

// The forge binary's allocator, so the figures are the platform's own.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_policy::{Decision, EmbeddedEngine, PolicyError, PolicyName, input_hash};
use serde_json::{Value, json};

const SAMPLES: usize = 20_000;
const WARMUP: usize = 2_000;
/// docs/design.md §8.
const UNCACHED_BUDGET_US: f64 = 100.0;
const CACHED_BUDGET_US: f64 = 20.0;

fn netplus() -> Value {
    json!({
        "metadata": {"name": "netplus-routing-lab", "labels": ["class:netplus", "tier:intermediate", "topic:routing"],
                     "annotations": {"description": "Network+ routing fundamentals lab", "duration": "30m"}},
        "limits": {"cpu": 2.0, "memory_mb": 2048, "attacker_max_exploits": 0, "timeout_minutes": 30, "pids": 128},
        "network": {"egress": "deny", "allowlist_profile": null, "subnets": [
            {"name": "learner_net", "cidr": "10.10.0.0/24"}, {"name": "target_net", "cidr": "10.20.0.0/24"}]},
        "assets": {"containers": [
            {"name": "learner_vm", "image": "forge/learner-alpine:3.19", "read_only": true, "environment": {"LEARNER_MODE": "true"},
             "networks": [{"name": "learner_net"}], "capabilities": ["NET_RAW"], "setup": [], "learner": true},
            {"name": "router", "image": "forge/vyos-mini:1.4", "read_only": true, "environment": {},
             "networks": [{"name": "learner_net", "address": "10.10.0.1"}, {"name": "target_net", "address": "10.20.0.1"}],
             "capabilities": ["NET_ADMIN"], "setup": ["sysctl -w net.ipv4.ip_forward=1"], "learner": false},
            {"name": "target_server", "image": "forge/nginx-test:1.0", "read_only": true, "environment": {},
             "networks": [{"name": "target_net", "address": "10.20.0.10"}], "capabilities": [], "setup": [], "learner": false}]},
        "successCriteria": [
            {"id": "route-add", "description": "Configure static route to target network", "weight": 1.0,
             "evidence": [{"type": "command", "container": "learner_vm", "command": "ip route show", "expect": {"stdout_contains": "10.20.0.0/24"}}]},
            {"id": "connectivity", "description": "Verify connectivity to target server", "weight": 1.0,
             "evidence": [{"type": "command", "container": "learner_vm", "command": "curl -s http://10.20.0.10",
                           "expect": {"exit_code": 0, "stdout_contains": "nginx"}}]}]
    })
}

fn gates() -> Vec<(PolicyName, Value)> {
    vec![
        (PolicyName::TrainingGate, netplus()),
        (
            PolicyName::SpawnGate,
            json!({
            "subject": {"sub": "client-1", "tenant_id": "acme", "roles": ["forge.spawn"]},
            "tenant": {"id": "acme", "plan": "team", "entitled_tracks": ["netplus", "ccna"], "max_active_scenarios": 3, "active_scenarios": 1},
            "request": {"track": "netplus"}}),
        ),
        (
            PolicyName::ActionGate,
            json!({
            "actor": {"sub": "agent-7", "roles": ["forge.agent"]},
            "action": {"kind": "scan", "target": "10.20.0.10"},
            "scenario": {"id": "scn-1", "subnets": ["10.10.0.0/24", "10.20.0.0/24"], "attacker_max_exploits": 0, "exploits_used": 0}}),
        ),
        (
            PolicyName::LlmGate,
            json!({
            "proposal": {"kind": "exec", "command": "curl -s http://10.20.0.10/ && ping -c 1 10.20.0.1"},
            "scenario": {"id": "scn-1", "subnets": ["10.10.0.0/24", "10.20.0.0/24"]}}),
        ),
    ]
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
    samples: Vec<Duration>,
}

/// Stats over the samples of several runs together.
fn merge(runs: &[Stats]) -> Stats {
    let mut samples: Vec<Duration> = runs
        .iter()
        .flat_map(|s| s.samples.iter().copied())
        .collect();
    samples.sort_unstable();
    stats(samples)
}

fn stats(samples: Vec<Duration>) -> Stats {
    let n = samples.len();
    let total: Duration = samples.iter().sum();
    Stats {
        p50: samples[n / 2],
        p99: samples[n * 99 / 100],
        mean: total / n as u32,
        samples,
    }
}

fn measure(n: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..WARMUP.min(n) {
        f();
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    samples.sort_unstable();
    stats(samples)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print(name: &str, s: &Stats) {
    println!(
        "{name:<38} p50 {:>8.2} µs   p99 {:>8.2} µs   mean {:>8.2} µs",
        us(s.p50),
        us(s.p99),
        us(s.mean)
    );
}

fn throughput(
    engine: &Arc<EmbeddedEngine>,
    input: &Arc<Value>,
    threads: usize,
    total: usize,
) -> f64 {
    let per_thread = total / threads;
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (engine, input) = (engine.clone(), input.clone());
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    black_box(engine.decide(PolicyName::TrainingGate, &input).unwrap());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    (per_thread * threads) as f64 / started.elapsed().as_secs_f64()
}

fn verdict(s: &Stats, budget_us: f64) -> &'static str {
    if us(s.p50) <= budget_us {
        "PASS"
    } else {
        "FAIL"
    }
}

fn main() {
    // `FORGE_BENCH_POLICY_DIR=dir` benchmarks the gates in `dir` instead of the bundled copies.
    let builder = || match std::env::var_os("FORGE_BENCH_POLICY_DIR") {
        Some(dir) => EmbeddedEngine::builder().bundled_dir(dir),
        None => EmbeddedEngine::builder(),
    };
    let cold = Arc::new(
        builder()
            .decision_cache(0)
            .build()
            .expect("bundled policies"),
    );
    let cached = Arc::new(builder().build().expect("bundled policies"));
    // The same gates on the interpreter: the in-run baseline.
    let baseline = builder()
        .decision_cache(0)
        .vm(false)
        .build()
        .expect("bundled policies");
    let trivial = EmbeddedEngine::builder()
        .without_bundled()
        .decision_cache(0)
        .policy(
            "trivial.rego",
            "package frostgate.forge.training\nimport rego.v1\nallow := true\n",
        )
        .build()
        .expect("trivial policy");
    let input = Arc::new(netplus());
    let d = cold.decide(PolicyName::TrainingGate, &input).unwrap();
    assert!(d.allow, "{:?}", d.deny_reasons);

    // `FORGE_BENCH_PROFILE=n` only loops n uncached training-gate decisions (1: the usual
    // sample count), for `perf record`, or few of them under `valgrind --tool=callgrind`.
    if let Some(n) = std::env::var_os("FORGE_BENCH_PROFILE") {
        let n = match n.to_str().and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n > 1 => n,
            _ => SAMPLES,
        };
        let s = measure(n, || {
            black_box(cold.decide(PolicyName::TrainingGate, &input).unwrap());
        });
        print("training_gate uncached", &s);
        return;
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("embedded policy decisions ({cores} cores); µs per decision");
    let mut all_pass = true;
    for (gate, gate_input) in gates() {
        let same = |a: Result<Decision, PolicyError>, b: Result<Decision, PolicyError>| {
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(
                (a.allow, a.deny_reasons),
                (b.allow, b.deny_reasons),
                "{gate}"
            );
        };
        same(
            cold.decide(gate, &gate_input),
            baseline.decide(gate, &gate_input),
        );
        let n = if gate == PolicyName::TrainingGate {
            SAMPLES / 4
        } else {
            SAMPLES / 10
        };
        // Interleaved halves, so a burst of load on the shared machine hits both sides alike.
        let mut new = Vec::new();
        let mut old = Vec::new();
        for _ in 0..2 {
            new.push(measure(n / 2, || {
                black_box(cold.decide(gate, &gate_input).unwrap());
            }));
            old.push(measure(n / 2, || {
                black_box(baseline.decide(gate, &gate_input).unwrap());
            }));
        }
        let (new, old) = (merge(&new), merge(&old));
        let hit = measure(SAMPLES / 2, || {
            black_box(cached.decide(gate, &gate_input).unwrap());
        });
        let (v_new, v_hit) = (
            verdict(&new, UNCACHED_BUDGET_US),
            verdict(&hit, CACHED_BUDGET_US),
        );
        all_pass &= v_new == "PASS" && v_hit == "PASS";
        println!(
            "{:<14} uncached p50 {:>8.2} p99 {:>8.2} | interpreter p50 {:>8.2} p99 {:>8.2} | \
             {:>5.2}x faster | cached p50 {:>6.2} | uncached {v_new} (<= {UNCACHED_BUDGET_US} µs), \
             cached {v_hit} (<= {CACHED_BUDGET_US} µs)",
            gate.as_str(),
            us(new.p50),
            us(new.p99),
            us(old.p50),
            us(old.p99),
            us(old.p50) / us(new.p50),
            us(hit.p50),
        );
    }
    println!(
        "budgets: {}",
        if all_pass { "all PASS" } else { "some FAIL" }
    );

    let hash = measure(SAMPLES, || {
        black_box(input_hash(black_box(&input)));
    });
    print("floor: canonical sha256 of input", &hash);
    let triv = measure(SAMPLES / 4, || {
        black_box(trivial.decide(PolicyName::TrainingGate, &input).unwrap());
    });
    print("floor: trivial allow := true, uncached", &triv);
    for (label, engine, total) in [
        ("uncached", &cold, SAMPLES / 4),
        ("cached", &cached, SAMPLES * 5),
    ] {
        let one = throughput(engine, &input, 1, total);
        for threads in [1, 2, 4] {
            let t = if threads == 1 {
                one
            } else {
                throughput(engine, &input, threads, total)
            };
            println!(
                "throughput {label:<8} {threads} thread(s): {t:>10.0} decisions/s ({:.2}x of 1 thread)",
                t / one
            );
        }
    }
}
