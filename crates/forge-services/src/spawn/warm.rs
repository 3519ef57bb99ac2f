//! Warm pools at the front door, and waiting for `running` in the spawn request.
//!
//! A spawn of a pooled template takes the oldest warm lab of the template it resolved (same
//! text, by digest) from the store; the scenario is created with that lab's id and started at
//! once (`running` on the lab's host), so a pool hit answers `running` in milliseconds; the
//! lab's host takes it over (slot, timer, `scenario.created`) when `spawn.request` names the
//! host (docs/design.md §5). When the spawn does not create its scenario after all (a quota, a
//! replay, an outage) the lab goes back to the pool. A store error taking from the pool is a
//! miss, never a failed spawn.
//!
//! `?wait=DURATION` (`250ms`, `5s`, at most [`MAX_WAIT`]) holds the answer until the scenario
//! left `pending` and `creating` or the time is up, so a client gets `running` without polling.

use std::time::{Duration, Instant};

use forge_core::{ScenarioId, ScenarioStatus};
use forge_http::ApiError;
use forge_store::{ScenarioRecord, WarmLab};

use super::SpawnState;

/// The longest `?wait=` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// The oldest warm lab of `template` when it has a pool, counted as a hit or a miss.
pub(super) async fn take(state: &SpawnState, template: &str) -> Option<WarmLab> {
    let deps = state.deps();
    if !deps.config.pooled_templates.contains(template) {
        return None;
    }
    let digest = &deps.catalog.get(template)?.digest;
    let taken = match deps.store.take_warm(template, digest).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, template, "cannot take a warm lab; spawning cold");
            None
        }
    };
    let result = if taken.is_some() { "hit" } else { "miss" };
    metrics::counter!("forge_pool_claims_total", "template" => template.to_owned(), "result" => result)
        .increment(1);
    taken
}

/// Starts the scenario `record` (just created, `pending`) on the warm lab it took: `running` on
/// the lab's host, in one store step. When that fails the scenario stays `pending`, and the
/// host adopts the lab the slower way (training gate, then the same step) once `spawn.request`
/// reaches it, so the spawn still succeeds.
pub(super) async fn start(
    state: &SpawnState,
    lab: &WarmLab,
    record: ScenarioRecord,
) -> ScenarioRecord {
    match state.deps().store.start_warm(lab).await {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %e, scenario_id = %lab.scenario_id,
                "cannot start a warm lab at the front door; its host adopts it");
            record
        }
    }
}

/// Puts a lab the spawn did not use back into its pool. If that fails, its host finds the lab
/// without a pool entry or a scenario and removes it (the pool refills).
pub(super) async fn give_back(state: &SpawnState, lab: WarmLab) {
    if let Err(e) = state.deps().store.put_warm(&lab).await {
        tracing::warn!(error = %e, scenario_id = %lab.scenario_id,
            "cannot return an unused warm lab to its pool; its host will remove it");
    }
}

/// `wait` from the query string: `None` when absent, else a duration of at most [`MAX_WAIT`].
pub(super) fn parse_wait(query: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    let mut wait = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "wait" {
            continue;
        }
        wait = Some(parse_duration(value).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_wait",
                format!(
                    "query parameter `wait` must be a duration such as `500ms` or `5s`, at most \
                     {}s; got `{value}`",
                    MAX_WAIT.as_secs()
                ),
            )
        })?);
    }
    Ok(wait)
}

fn parse_duration(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit())?.min(v.len()));
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        _ => return None,
    };
    (d <= MAX_WAIT).then_some(d)
}

/// The scenario once it left `pending` and `creating`, or as it is when `within` is up. Reads
/// the store (any replica's orchestrator may move it), quickly at first: a warm lab is adopted
/// in about a millisecond, a cold one takes a fraction of a second.
pub(super) async fn wait_started(
    state: &SpawnState,
    tenant: &str,
    id: &ScenarioId,
    within: Duration,
) -> Option<ScenarioRecord> {
    let started = Instant::now();
    let deadline = started + within;
    loop {
        let rec = state.deps().store.get(tenant, id).await.ok().flatten()?;
        let waiting = matches!(
            rec.status,
            ScenarioStatus::Pending | ScenarioStatus::Creating
        );
        let now = Instant::now();
        if !waiting || now >= deadline {
            return Some(rec);
        }
        // Every millisecond at first (a warm lab is adopted in about one), then every 20 ms.
        let pause = if now - started < Duration::from_millis(100) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(20)
        };
        tokio::time::sleep(pause.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_takes_milliseconds_or_seconds_up_to_the_cap() {
        assert_eq!(parse_wait(None).unwrap(), None);
        assert_eq!(parse_wait(Some("x=1")).unwrap(), None);
        assert_eq!(
            parse_wait(Some("wait=250ms")).unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_wait(Some("a=b&wait=30s")).unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_wait(Some("wait=0ms")).unwrap(), Some(Duration::ZERO));
        for bad in [
            "wait=",
            "wait=5",
            "wait=31s",
            "wait=30001ms",
            "wait=1h",
            "wait=-1s",
            "wait=s",
            "wait=05s",
        ] {
            let e = parse_wait(Some(bad)).unwrap_err();
            assert!(e.to_string().contains("`wait`"), "{bad}: {e}");
        }
    }

    /// The documented pattern of `wait` accepts exactly what the parser accepts.
    #[test]
    fn the_documented_pattern_is_the_parser() {
        let doc = serde_json::to_value(super::super::api::openapi(
            &forge_catalog::Catalog::bundled().unwrap(),
        ))
        .unwrap();
        let params = doc["paths"]["/v1/spawn"]["post"]["parameters"]
            .as_array()
            .unwrap();
        let wait = params.iter().find(|p| p["name"] == "wait").expect("wait");
        let re = regex::Regex::new(wait["schema"]["pattern"].as_str().unwrap()).unwrap();
        let mut samples: Vec<String> = Vec::new();
        for n in [
            0u64, 1, 9, 10, 29, 30, 31, 99, 999, 1000, 9999, 10000, 29999, 30000, 30001,
        ] {
            for unit in ["ms", "s", "", "m", "h"] {
                samples.push(format!("{n}{unit}"));
                samples.push(format!("0{n}{unit}"));
            }
        }
        samples.extend(["", "s", "ms", "-1s", "1.5s", " 1s"].map(String::from));
        for v in samples {
            let parsed = parse_wait(Some(&format!("wait={v}"))).is_ok();
            assert_eq!(
                re.is_match(&v),
                parsed,
                "`{v}`: pattern and parser disagree"
            );
        }
    }
}
