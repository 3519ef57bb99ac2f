//! Decision latency and throughput of the embedded engine, with in-run baselines.
//!
//! Run: `cargo bench -p forge-policy --bench decision` (release profile). Prints p50/p99 of
//! training-gate decisions on the bundled netplus lab (3 containers, 2 subnets, 2 criteria),
//! cold (every decision evaluates) and cached (the default: a repeated input reuses its
//! evaluation), cold figures for the other gates, two baselines measured in the same run (input
//! canonical hash, and a full cold decision through a trivial `allow := true` policy) as ratios,
//! and throughput with 1, 2 and 4 threads. Budget (docs/design.md §8): training-gate p50 <= 20 µs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_policy::{EmbeddedEngine, PolicyName, input_hash};
use serde_json::{Value, json};

const SAMPLES: usize = 20_000;
const WARMUP: usize = 2_000;

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

fn other_gates() -> Vec<(PolicyName, Value)> {
    vec![
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
    let total: Duration = samples.iter().sum();
    Stats {
        p50: samples[n / 2],
        p99: samples[n * 99 / 100],
        mean: total / n as u32,
    }
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

fn main() {
    // `FORGE_BENCH_POLICY_DIR=dir` benchmarks the gates in `dir` instead of the bundled copies.
    let builder = || match std::env::var_os("FORGE_BENCH_POLICY_DIR") {
        Some(dir) => EmbeddedEngine::builder().bundled_dir(dir),
        None => EmbeddedEngine::builder(),
    };
    // Cold: every decision evaluates. Cached: the production default, repeated inputs reuse the
    // earlier evaluation (still a fresh decision id, metric and audit event).
    let cold = Arc::new(
        builder()
            .decision_cache(0)
            .build()
            .expect("bundled policies"),
    );
    let cached = Arc::new(builder().build().expect("bundled policies"));
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

    // `FORGE_BENCH_PROFILE=1` only loops cold training-gate decisions, for `perf record`.
    if std::env::var_os("FORGE_BENCH_PROFILE").is_some() {
        let s = measure(SAMPLES, || {
            black_box(cold.decide(PolicyName::TrainingGate, &input).unwrap());
        });
        print("training_gate cold", &s);
        return;
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("embedded policy decisions ({cores} cores); µs per decision");
    let hash = measure(SAMPLES, || {
        black_box(input_hash(black_box(&input)));
    });
    print("baseline: canonical sha256 of input", &hash);
    let triv = measure(SAMPLES / 4, || {
        black_box(trivial.decide(PolicyName::TrainingGate, &input).unwrap());
    });
    print("baseline: trivial allow := true, cold", &triv);
    let training_cold = measure(SAMPLES / 4, || {
        black_box(cold.decide(PolicyName::TrainingGate, &input).unwrap());
    });
    print("training_gate netplus lab, cold", &training_cold);
    let training_cached = measure(SAMPLES, || {
        black_box(cached.decide(PolicyName::TrainingGate, &input).unwrap());
    });
    print("training_gate netplus lab, cached", &training_cached);
    for (gate, gate_input) in other_gates() {
        let s = measure(SAMPLES / 10, || {
            black_box(cold.decide(gate, &gate_input).unwrap());
        });
        print(&format!("{gate}, cold"), &s);
    }
    println!(
        "ratios (p50): cold/trivial {:.1}x, cold/hash {:.1}x, cached/hash {:.2}x",
        us(training_cold.p50) / us(triv.p50),
        us(training_cold.p50) / us(hash.p50),
        us(training_cached.p50) / us(hash.p50),
    );
    let verdict = |s: &Stats| if us(s.p50) <= 20.0 { "met" } else { "missed" };
    println!(
        "budget p50 <= 20 µs: cached {}, cold {}",
        verdict(&training_cached),
        verdict(&training_cold)
    );
    for (label, engine, total) in [
        ("cold", &cold, SAMPLES / 4),
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
                "throughput {label:<6} {threads} thread(s): {t:>10.0} decisions/s ({:.2}x of 1 thread)",
                t / one
            );
        }
    }
}
