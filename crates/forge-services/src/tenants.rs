//! Tenants and plans (issue 5 item 4), from a TOML file; `deploy/tenants.example.toml` is the
//! documented example and the built-in default.
//!
//! A plan says which tracks its tenants may spawn, how many labs they may run at once, what a
//! spawn costs per track and tier, and how fast they may call the API. The file is validated
//! whole at load time so a bad price or an unknown track fails at startup, not at a spawn.

use std::collections::BTreeMap;
use std::path::Path;

use forge_core::Track;
use serde::Deserialize;

/// The example (and default) tenant file, compiled in.
pub const EXAMPLE: &str = include_str!("../../../deploy/tenants.example.toml");

/// Difficulty tiers a template's `tier:<level>` label may carry (forge-core validates the same
/// list but keeps it private).
pub const TIERS: [&str; 3] = ["foundation", "intermediate", "advanced"];

#[derive(Debug, thiserror::Error)]
#[error("tenant config {source_name}: {message}")]
pub struct TenantConfigError {
    pub source_name: String,
    pub message: String,
}

/// Request rate of a plan: a token bucket refilled at `requests_per_second`, holding `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub requests_per_second: f64,
    pub burst: u32,
}

/// The rate of every authenticated route but `POST /v1/spawn` (status, check, submit, exec,
/// scores, telemetry, …) for a plan without `api_rate`, and for a tenant the file does not list
/// (it can own nothing, but its probes still cost lookups). Generous next to the spawn rates:
/// a class polling its labs' status must not run into it, a script hammering the API must.
pub const DEFAULT_API_RATE: Rate = Rate {
    requests_per_second: 50.0,
    burst: 200,
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub entitled_tracks: Vec<Track>,
    pub max_active_scenarios: u32,
    /// Spawns (`POST /v1/spawn`, and `POST /v1/scenarios`, which is a spawn).
    pub rate: Rate,
    /// Every other authenticated route, in a bucket of its own so status polling never eats
    /// into the spawn budget; [`DEFAULT_API_RATE`] when absent.
    #[serde(default)]
    pub api_rate: Option<Rate>,
    /// Cents per spawn: track → tier (`foundation|intermediate|advanced`, or `default`) → cents.
    #[serde(default)]
    pub prices: BTreeMap<Track, BTreeMap<String, i64>>,
}

impl Plan {
    /// Price of one spawn of a `tier` template on `track`: the tier's price, else the track's
    /// `default`. `None` when the plan does not price the track (it cannot be entitled then).
    pub fn price_cents(&self, track: Track, tier: &str) -> Option<i64> {
        let table = self.prices.get(&track)?;
        table.get(tier).or_else(|| table.get("default")).copied()
    }

    /// The rate of every authenticated route but spawning (see [`Plan::api_rate`]).
    pub fn api_rate(&self) -> Rate {
        self.api_rate.unwrap_or(DEFAULT_API_RATE)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantEntry {
    pub plan: String,
    /// Human-readable name, for reports.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default = "default_currency")]
    currency: String,
    #[serde(default)]
    plans: BTreeMap<String, Plan>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantEntry>,
}

fn default_currency() -> String {
    "usd".to_owned()
}

/// A tenant with its plan resolved.
#[derive(Debug, Clone, Copy)]
pub struct Tenant<'a> {
    pub id: &'a str,
    pub plan_name: &'a str,
    pub plan: &'a Plan,
}

/// Every tenant and plan, validated.
#[derive(Debug, Clone)]
pub struct TenantDirectory {
    currency: String,
    plans: BTreeMap<String, Plan>,
    tenants: BTreeMap<String, TenantEntry>,
}

impl TenantDirectory {
    /// The compiled-in `deploy/tenants.example.toml` (a `demo` tenant entitled to every track).
    pub fn example() -> Self {
        Self::from_toml(EXAMPLE, "deploy/tenants.example.toml").expect("bundled example is valid")
    }

    /// No tenants and no plans: every spawn is refused as `unknown_tenant`, every other route
    /// gets [`DEFAULT_API_RATE`].
    pub fn empty() -> Self {
        Self {
            currency: default_currency(),
            plans: BTreeMap::new(),
            tenants: BTreeMap::new(),
        }
    }

    pub fn load(path: &Path) -> Result<Self, TenantConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| TenantConfigError {
            source_name: path.display().to_string(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, TenantConfigError> {
        let err = |message: String| TenantConfigError {
            source_name: source_name.to_owned(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if file.currency.len() != 3 || !file.currency.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(err(format!(
                "currency `{}` must be a lowercase ISO 4217 code such as `usd`",
                file.currency
            )));
        }
        for (name, plan) in &file.plans {
            validate_plan(name, plan).map_err(err)?;
        }
        for (id, t) in &file.tenants {
            if id.trim().is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(format!(
                    "tenant id `{id}` must be non-empty without whitespace"
                )));
            }
            if !file.plans.contains_key(&t.plan) {
                let known: Vec<&str> = file.plans.keys().map(String::as_str).collect();
                return Err(err(format!(
                    "tenant `{id}` has plan `{}`, which is not defined (plans: {})",
                    t.plan,
                    known.join(", ")
                )));
            }
        }
        Ok(Self {
            currency: file.currency,
            plans: file.plans,
            tenants: file.tenants,
        })
    }

    /// The tenant `id` (from a token's `tenant_id` claim), if configured.
    pub fn tenant(&self, id: &str) -> Option<Tenant<'_>> {
        let (id, entry) = self.tenants.get_key_value(id)?;
        let (plan_name, plan) = self.plans.get_key_value(&entry.plan)?;
        Some(Tenant {
            id,
            plan_name,
            plan,
        })
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn tenant_ids(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }
}

fn validate_plan(name: &str, plan: &Plan) -> Result<(), String> {
    let rates = [("rate", Some(plan.rate)), ("api_rate", plan.api_rate)];
    for (field, r) in rates {
        let Some(r) = r else { continue };
        if !(r.requests_per_second.is_finite() && r.requests_per_second > 0.0) {
            return Err(format!(
                "plan `{name}`: {field}.requests_per_second must be greater than 0"
            ));
        }
        if r.burst == 0 {
            return Err(format!("plan `{name}`: {field}.burst must be at least 1"));
        }
    }
    for (track, table) in &plan.prices {
        for (tier, cents) in table {
            if tier != "default" && !TIERS.contains(&tier.as_str()) {
                return Err(format!(
                    "plan `{name}`: prices.{track}.{tier}: unknown tier; use {} or default",
                    TIERS.join(", ")
                ));
            }
            if *cents < 0 {
                return Err(format!(
                    "plan `{name}`: prices.{track}.{tier} must not be negative"
                ));
            }
        }
    }
    for track in &plan.entitled_tracks {
        for tier in TIERS {
            if plan.price_cents(*track, tier).is_none() {
                return Err(format!(
                    "plan `{name}` is entitled to {track} but prices.{track} has no price for \
                     tier {tier} (set it, or `default`)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_has_demo_entitled_to_every_track() {
        let d = TenantDirectory::example();
        let demo = d.tenant("demo").expect("demo tenant");
        for t in Track::ALL {
            assert!(demo.plan.entitled_tracks.contains(&t), "{t}");
            assert!(demo.plan.price_cents(t, "advanced").is_some());
        }
        assert!(d.tenant("nobody").is_none());
    }

    #[test]
    fn api_rate_defaults_and_is_per_plan() {
        let d = TenantDirectory::example();
        let starter = d.tenant("globex-academy").unwrap().plan;
        assert_eq!(starter.api_rate, None);
        assert_eq!(starter.api_rate(), DEFAULT_API_RATE);
        let demo = d.tenant("demo").unwrap().plan;
        assert!(demo.api_rate().requests_per_second >= demo.rate.requests_per_second);
    }

    #[test]
    fn invalid_files_name_the_problem() {
        let base = r#"
            [plans.p]
            entitled_tracks = ["netplus"]
            max_active_scenarios = 1
            rate = { requests_per_second = 1.0, burst = 1 }
            prices.netplus = { default = 100 }
            [tenants.t]
            plan = "p"
        "#;
        assert!(TenantDirectory::from_toml(base, "x").is_ok());
        for (bad, needle) in [
            (base.replace("\"netplus\"]", "\"ccna\"]"), "no price"),
            (base.replace("plan = \"p\"", "plan = \"q\""), "plan `q`"),
            (base.replace("burst = 1", "burst = 0"), "burst"),
            (
                base.replace(
                    "burst = 1 }",
                    "burst = 1 }\n            api_rate = { requests_per_second = 0.0, burst = 5 }",
                ),
                "api_rate.requests_per_second",
            ),
            (
                base.replace("default = 100", "expert = 100"),
                "unknown tier",
            ),
            (base.replace("[\"netplus\"]", "[\"ceh\"]"), "ceh"),
            (
                base.replace("plan = \"p\"", "plan = \"p\"\nowner = 1"),
                "owner",
            ),
        ] {
            let e = TenantDirectory::from_toml(&bad, "x")
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
