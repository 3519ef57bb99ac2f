//! Weighted scoring (docs/design.md §7.2): score = Σ weight(passed) / Σ weight(all).
//!
//! With every weight 1.0 this is the spec's passed/total; no criteria scores 0.0.

use chrono::{DateTime, Utc};

use crate::ids::ScenarioId;
use crate::model::{CriterionResult, ScoreResult};

/// Scores `criteria` for `scenario_id`, stamped with `computed_at`.
pub fn calculate_score(
    scenario_id: ScenarioId,
    criteria: Vec<CriterionResult>,
    computed_at: DateTime<Utc>,
) -> ScoreResult {
    ScoreResult {
        scenario_id,
        score: weighted_value(&criteria),
        passed: criteria.iter().filter(|c| c.passed).count() as u32,
        total: criteria.len() as u32,
        criteria,
        computed_at,
    }
}

/// The weighted score in [0, 1]. Non-finite or non-positive weights count as 0 (validation
/// refuses them in templates; this keeps a hand-made result list from producing NaN).
pub fn weighted_value(criteria: &[CriterionResult]) -> f64 {
    let weight = |c: &CriterionResult| {
        if c.weight.is_finite() && c.weight > 0.0 {
            c.weight
        } else {
            0.0
        }
    };
    let total: f64 = criteria.iter().map(weight).fold(0.0, |a, b| a + b);
    if total <= 0.0 {
        return 0.0;
    }
    let passed: f64 = criteria
        .iter()
        .filter(|c| c.passed)
        .map(weight)
        .fold(0.0, |a, b| a + b);
    (passed / total).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, passed: bool, weight: f64) -> CriterionResult {
        CriterionResult {
            criterion_id: id.into(),
            passed,
            evidence_refs: vec![],
            message: None,
            weight,
        }
    }

    fn score(c: Vec<CriterionResult>) -> ScoreResult {
        calculate_score("scn-000000000001".parse().unwrap(), c, Utc::now())
    }

    #[test]
    fn empty_criteria_score_zero() {
        let s = score(vec![]);
        assert_eq!((s.score, s.passed, s.total), (0.0, 0, 0));
    }

    #[test]
    fn all_pass_scores_one() {
        let s = score(vec![result("a", true, 1.0), result("b", true, 3.0)]);
        assert_eq!((s.score, s.passed, s.total), (1.0, 2, 2));
    }

    #[test]
    fn none_pass_scores_zero() {
        let s = score(vec![result("a", false, 1.0), result("b", false, 2.0)]);
        assert_eq!((s.score, s.passed, s.total), (0.0, 0, 2));
    }

    #[test]
    fn unit_weights_equal_spec_ratio() {
        let mut c: Vec<_> = (0..17)
            .map(|i| result(&format!("p{i}"), true, 1.0))
            .collect();
        c.extend((0..3).map(|i| result(&format!("f{i}"), false, 1.0)));
        let s = score(c);
        assert!((s.score - 0.85).abs() < 1e-12);
        assert_eq!((s.passed, s.total), (17, 20));
    }

    #[test]
    fn weights_shift_the_score() {
        let s = score(vec![
            result("heavy", true, 3.0),
            result("light", false, 1.0),
        ]);
        assert!((s.score - 0.75).abs() < 1e-12);
        let s = score(vec![
            result("heavy", false, 3.0),
            result("light", true, 1.0),
        ]);
        assert!((s.score - 0.25).abs() < 1e-12);
    }

    #[test]
    fn bad_weights_never_give_nan() {
        let s = score(vec![result("a", true, f64::NAN), result("b", false, -1.0)]);
        assert_eq!(s.score, 0.0);
    }
}
