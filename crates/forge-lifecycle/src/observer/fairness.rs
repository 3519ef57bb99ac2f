//! Fairness metrics (spec: forge_observer_hub Features): are labs of the same track and tier
//! equally hard? Outcomes are grouped per (track, tier, template); the hub exports each group's
//! mean score and pass rate and, per track and tier, the disparity between the easiest and the
//! hardest template (1.0 = perfectly even). A template whose learners fail far more often than
//! its peers' is flagged for authors to look at.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A lab counts as passed at this score or above.
pub const PASS_MARK: f64 = 0.7;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupStats {
    pub count: u64,
    pub score_sum: f64,
    pub passes: u64,
}

impl GroupStats {
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.score_sum / self.count as f64
        }
    }

    pub fn pass_rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.passes as f64 / self.count as f64
        }
    }
}

/// Outcomes by (track, tier, template).
#[derive(Debug, Default, Serialize)]
pub struct Fairness {
    groups: BTreeMap<(String, String, String), GroupStats>,
}

/// One group as saved on disk.
#[derive(Serialize, Deserialize)]
struct Saved {
    track: String,
    tier: String,
    template: String,
    #[serde(flatten)]
    stats: GroupStats,
}

/// Disparity within one (track, tier).
#[derive(Debug, Clone, Serialize)]
pub struct Disparity {
    pub track: String,
    pub tier: String,
    /// Lowest template pass rate / highest (1.0 when even, or with fewer than two templates).
    pub pass_rate_ratio: f64,
    pub hardest: String,
    pub easiest: String,
}

impl Fairness {
    pub fn record(&mut self, track: &str, tier: &str, template: &str, score: f64) {
        let g = self
            .groups
            .entry((track.into(), tier.into(), template.into()))
            .or_default();
        g.count += 1;
        g.score_sum += score;
        g.passes += u64::from(score >= PASS_MARK);
    }

    pub fn group(&self, track: &str, tier: &str, template: &str) -> Option<&GroupStats> {
        self.groups
            .get(&(track.into(), tier.into(), template.into()))
    }

    pub fn groups(&self) -> impl Iterator<Item = (&(String, String, String), &GroupStats)> {
        self.groups.iter()
    }

    /// The statistics saved at `path` by [`Fairness::save`]; empty when there is no file yet.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e),
        };
        let saved: Vec<Saved> = serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let groups = saved
            .into_iter()
            .map(|s| ((s.track, s.tier, s.template), s.stats))
            .collect();
        Ok(Self { groups })
    }

    /// Writes the statistics to `path` (a temp file renamed over it: never half written), so
    /// they survive a restart of the hub.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let saved: Vec<Saved> = self
            .groups
            .iter()
            .map(|((track, tier, template), stats)| Saved {
                track: track.clone(),
                tier: tier.clone(),
                template: template.clone(),
                stats: stats.clone(),
            })
            .collect();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(&saved).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }

    pub fn disparities(&self) -> Vec<Disparity> {
        let mut by: BTreeMap<(String, String), Vec<(&str, f64)>> = BTreeMap::new();
        for ((track, tier, template), g) in &self.groups {
            by.entry((track.clone(), tier.clone()))
                .or_default()
                .push((template, g.pass_rate()));
        }
        by.into_iter()
            .map(|((track, tier), rates)| {
                let (mut lo, mut hi) = (rates[0], rates[0]);
                for r in &rates {
                    if r.1 < lo.1 {
                        lo = *r;
                    }
                    if r.1 > hi.1 {
                        hi = *r;
                    }
                }
                let ratio = if hi.1 > 0.0 { lo.1 / hi.1 } else { 1.0 };
                Disparity {
                    track,
                    tier,
                    pass_rate_ratio: ratio,
                    hardest: lo.0.into(),
                    easiest: hi.0.into(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_survive_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("observer/fairness.json");
        assert_eq!(Fairness::load(&path).unwrap().groups().count(), 0);
        let mut f = Fairness::default();
        f.record("netplus", "foundation", "a-lab", 1.0);
        f.record("netplus", "foundation", "a-lab", 0.5);
        f.save(&path).unwrap();
        let back = Fairness::load(&path).unwrap();
        let g = back.group("netplus", "foundation", "a-lab").unwrap();
        assert_eq!((g.count, g.passes), (2, 1));
        assert!((g.mean() - 0.75).abs() < 1e-9);
    }

    #[test]
    fn disparity_compares_templates_of_one_tier() {
        let mut f = Fairness::default();
        for s in [1.0, 1.0, 0.5, 1.0] {
            f.record("netplus", "foundation", "easy-lab", s);
        }
        for s in [0.0, 0.5, 1.0, 0.0] {
            f.record("netplus", "foundation", "hard-lab", s);
        }
        f.record("ccna", "foundation", "only-lab", 1.0);
        let d = f.disparities();
        let np = d.iter().find(|d| d.track == "netplus").unwrap();
        assert!((np.pass_rate_ratio - (0.25 / 0.75)).abs() < 1e-9);
        assert_eq!(
            (np.hardest.as_str(), np.easiest.as_str()),
            ("hard-lab", "easy-lab")
        );
        assert_eq!(
            d.iter()
                .find(|d| d.track == "ccna")
                .unwrap()
                .pass_rate_ratio,
            1.0
        );
        assert!(
            (f.group("netplus", "foundation", "easy-lab").unwrap().mean() - 0.875).abs() < 1e-9
        );
    }
}
