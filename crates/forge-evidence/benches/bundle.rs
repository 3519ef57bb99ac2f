//! Score + bundle + sign for 20 criteria with 1 MiB of evidence (docs/design.md §8: ≤ 50 ms), and
//! verify, each next to a baseline measured in the same run: SHA-256 of the same 1 MiB plus plain
//! zstd (same level) of it, the irreducible work of hashing and compressing the evidence.
//!
//! Run: `CARGO_TARGET_DIR=/var/tmp/forge-target cargo bench -p forge-evidence --bench bundle`

// The forge binary's allocator, so the figures are the platform's own.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use forge_core::audit::{AuditEvent, Outcome};
use forge_core::{ArtifactType, CriterionResult, Track};
use forge_evidence::audit_log::{AuditLog, AuditLogConfig};
use forge_evidence::bundle::{ArtifactInput, Bundle, BundleInput, BundleMeta, ZSTD_LEVEL};
use forge_evidence::keyring::{KeySource, Signer};
use forge_evidence::verify::{BundleFiles, verify_files};
use sha2::{Digest, Sha256};

// The tests' fixtures, for their deterministic noise; the rest of the module goes unused here.
#[allow(dead_code)]
#[path = "../tests/evidence/common.rs"]
mod common;
use common::noise;

const CRITERIA: usize = 20;
const TOTAL: usize = 1 << 20;
const ITERS: usize = 60;

/// 20 artifacts totalling 1 MiB: text command outputs (very compressible) and file captures
/// (half random, half structured), the mix a netplus lab produces.
fn input() -> BundleInput {
    let per = TOTAL / CRITERIA;
    let mut artifacts = Vec::new();
    let mut criteria = Vec::new();
    for i in 0..CRITERIA {
        let per = if i + 1 == CRITERIA {
            TOTAL - per * (CRITERIA - 1)
        } else {
            per
        };
        let artifact = if i % 2 == 0 {
            let mut text = String::with_capacity(per + 128);
            let mut n = 0;
            while text.len() < per {
                text.push_str(&format!(
                    "64 bytes from 10.20.{i}.{}: icmp_seq={n} ttl=64 time={}.{:03} ms\n",
                    n % 250,
                    n % 7,
                    (n * 37) % 1000
                ));
                n += 1;
            }
            text.truncate(per);
            let name = format!("crit-{i:02}.0.command_output");
            ArtifactInput::new(ArtifactType::CommandOutput, name, text.into_bytes())
        } else {
            let mut bytes = noise(i as u64 + 7, per / 2);
            let mut line = 0;
            while bytes.len() < per {
                bytes.extend_from_slice(
                    format!("net.ipv4.conf.eth{line}.forwarding = 1\n").as_bytes(),
                );
                line += 1;
            }
            bytes.truncate(per);
            let name = format!("crit-{i:02}.0.file_capture");
            ArtifactInput::new(ArtifactType::FileCapture, name, bytes)
        };
        criteria.push(CriterionResult {
            criterion_id: format!("crit-{i:02}"),
            passed: i % 6 != 5,
            evidence_refs: vec![artifact.artifact.name.clone()],
            message: None,
            weight: 1.0,
        });
        artifacts.push(artifact);
    }
    let at = Utc
        .with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
        .single()
        .expect("time");
    BundleInput {
        meta: BundleMeta {
            scenario_id: "scn-def456789012".parse().expect("id"),
            run_id: "run-0123456789ab".parse().expect("id"),
            track: Track::Netplus,
            collected_at: at,
            computed_at: at,
        },
        criteria,
        artifacts,
    }
}

struct Stats {
    median: Duration,
    min: Duration,
    p90: Duration,
    /// Median over iterations of (this / baseline) timed back to back, robust to machine noise.
    paired_ratio: f64,
}

fn stats(mut times: Vec<Duration>, baseline: &[Duration]) -> Stats {
    let mut ratios: Vec<f64> = times
        .iter()
        .zip(baseline)
        .map(|(t, b)| t.as_secs_f64() / b.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    times.sort();
    Stats {
        median: times[times.len() / 2],
        min: times[0],
        p90: times[times.len() * 9 / 10],
        paired_ratio: ratios[ratios.len() / 2],
    }
}

fn time<R>(f: impl FnOnce() -> R) -> Duration {
    let t = Instant::now();
    black_box(f());
    t.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:8.3} ms", d.as_secs_f64() * 1e3)
}

fn row(name: &str, s: &Stats, baseline: &Stats) {
    println!(
        "{name:<34} median {}  min {}  p90 {}  ratio to baseline: medians {:5.2}x, paired {:5.2}x",
        ms(s.median),
        ms(s.min),
        ms(s.p90),
        s.median.as_secs_f64() / baseline.median.as_secs_f64(),
        s.paired_ratio
    );
}

fn main() {
    let signer = Signer::generate();
    let keys = KeySource::PublicKey {
        key_id: signer.key_id().to_owned(),
        key: signer.verifying_key(),
    };
    let template = input();
    let flat: Vec<u8> = template
        .artifacts
        .iter()
        .flat_map(|a| a.content.iter().copied())
        .collect();
    assert_eq!(flat.len(), TOTAL);

    // Warm up allocator, zstd tables and the CPU clock.
    for _ in 0..3 {
        black_box(Bundle::build(template.clone(), &signer).expect("bundle"));
    }

    // Interleaved: each iteration times the baseline, the build and the verify back to back,
    // so a noisy neighbour slows all three alike and the paired ratio stays meaningful.
    let bundle = Bundle::build(template.clone(), &signer).expect("bundle");
    let now = Utc::now();
    let (mut base_t, mut build_t, mut verify_t) = (vec![], vec![], vec![]);
    for _ in 0..ITERS {
        let (input, files) = (template.clone(), BundleFiles::from(&bundle));
        base_t.push(time(|| {
            let digest = Sha256::digest(black_box(&flat));
            (
                digest,
                zstd::bulk::compress(black_box(&flat), ZSTD_LEVEL).expect("zstd"),
            )
        }));
        build_t.push(time(|| {
            Bundle::build(black_box(input), &signer).expect("bundle")
        }));
        verify_t.push(time(|| {
            verify_files(black_box(&files), &keys, now).expect("verifies")
        }));
    }
    let baseline = stats(base_t.clone(), &base_t);
    let build = stats(build_t, &base_t);
    let verify = stats(verify_t, &base_t);

    let dir = tempfile::tempdir().expect("tempdir");
    let append_rate = |name: &str, checkpoint_every: u64| {
        let log_path = dir.path().join(name);
        let config = AuditLogConfig { checkpoint_every };
        let log = AuditLog::open(&log_path, signer.clone(), &keys, config).expect("log");
        let events = 1000;
        let t = Instant::now();
        for i in 0..events {
            let id = format!("scn-{i:012x}");
            let e = AuditEvent::new(
                now,
                "scenario.created",
                "bench",
                id,
                "create",
                Outcome::Success,
            );
            log.append(e).expect("append");
        }
        let per_event = t.elapsed() / events;
        log.close().expect("close");
        per_event
    };
    let with_fsync = append_rate("default.jsonl", AuditLogConfig::default().checkpoint_every);
    let without_fsync = append_rate("nofsync.jsonl", u64::MAX);

    println!(
        "forge-evidence bundle bench: {CRITERIA} criteria, {} KiB evidence ({} KiB evidence.tar.zst, zstd level {ZSTD_LEVEL}), {ITERS} iterations",
        TOTAL / 1024,
        bundle.evidence.len() / 1024
    );
    row("baseline: sha256 + zstd of 1 MiB", &baseline, &baseline);
    row("score + bundle + sign", &build, &baseline);
    row("verify (hashes, unpack, rescore)", &verify, &baseline);
    println!(
        "audit log append: {:.1} us/event (checkpoint + fsync every 100), {:.1} us/event without periodic fsync",
        with_fsync.as_secs_f64() * 1e6,
        without_fsync.as_secs_f64() * 1e6
    );
    let verdict = if build.median <= Duration::from_millis(50) {
        "within"
    } else {
        "OVER"
    };
    println!(
        "budget: score + bundle + sign median {} is {verdict} the 50 ms target",
        ms(build.median).trim()
    );
}
