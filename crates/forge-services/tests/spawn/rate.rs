//! Per-tenant token buckets: one tenant's burst is throttled, another's steady traffic is not.

use std::sync::Arc;
use std::time::Duration;

use super::body;
use crate::support::{Harness, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_one_tenant_never_throttles_another() {
    let h = Arc::new(Harness::start(Options::default()).await);
    // acme: 2 requests/s, burst 5. 30 at once.
    let acme = h.spawner("acme");
    let burst: Vec<_> = (0..30)
        .map(|i| {
            let (h, t) = (h.clone(), acme.clone());
            tokio::spawn(async move { h.spawn(&t, &body("netplus", &format!("a-{i}")), &[]).await })
        })
        .collect();
    // globex: 100/s, burst 20. 20 requests, one every 25 ms, while acme bursts.
    let globex = h.spawner("globex");
    let steady = {
        let h = h.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..20 {
                out.push(
                    h.spawn(&globex, &body("ccna", &format!("g-{i}")), &[])
                        .await,
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            out
        })
    };
    let mut ok = 0;
    let mut limited = 0;
    for t in burst {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            201 => ok += 1,
            429 => {
                limited += 1;
                assert_eq!(r.code(), "rate_limited");
                let secs: u64 = r
                    .header("retry-after")
                    .expect("Retry-After")
                    .parse()
                    .unwrap();
                assert!((1..=5).contains(&secs), "retry-after {secs}");
                assert_eq!(r.json()["error"]["details"]["retry_after_seconds"], secs);
                assert!(r.message().contains("acme"), "{}", r.message());
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert!(
        limited >= 15,
        "most of the burst is throttled ({ok} ok, {limited} limited)"
    );
    assert!(
        (5..=10).contains(&ok),
        "about the bucket size gets through ({ok})"
    );
    for r in steady.await.unwrap() {
        assert_eq!(r.status, 201, "steady tenant throttled: {}", r.text);
    }
    // After waiting out Retry-After, acme gets through again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        h.spawn(&acme, &body("netplus", "a-later"), &[])
            .await
            .status,
        201
    );
    Arc::try_unwrap(h).ok().unwrap().stop().await;
}
