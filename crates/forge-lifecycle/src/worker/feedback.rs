//! What a check tells its caller about a criterion that did not pass.
//!
//! The evaluator's own message names the expectation ("output does not contain `FG-…`"),
//! which is the answer a learner is asked to find (docs/design.md §6: a learner never sees an
//! expected answer). So a caller who only works in the lab is told what kind of thing is not
//! right yet; instructors and the platform, who grade and debug labs, get the evaluator's
//! message. The signed score carries the learner's messages too: its owner reads it, and a
//! signature cannot differ per reader. Instructors grade from the bundle's artifacts (what the
//! lab showed) against the template (what it expected).

use forge_auth::{Caller, roles};
use forge_core::template::EvidenceType;
use forge_runtime::template_test::{EvaluatedCriterion, FailedStep};

/// Roles that see the evaluator's detailed messages.
const DETAIL_ROLES: [&str; 2] = [roles::INSTRUCTOR, roles::ORCHESTRATOR];

/// Whether `caller` may see what a criterion expected.
pub(crate) fn sees_details(caller: &Caller) -> bool {
    DETAIL_ROLES.iter().any(|r| caller.has_role(r))
}

/// The message of `e` for a caller who does (`details`) or does not see expected values.
pub(crate) fn message_for(e: &EvaluatedCriterion, details: bool) -> Option<String> {
    if details || e.result.passed {
        return e.result.message.clone();
    }
    Some(learner_message(e.failed_step).to_owned())
}

/// What a learner is told about a criterion that did not pass: the kind of evidence that is
/// not right yet, never the value it was compared with.
pub(crate) fn learner_message(failed: Option<FailedStep>) -> &'static str {
    let Some(step) = failed else {
        return "not yet: this objective is not met";
    };
    if !step.collected {
        return "not checked: the lab could not be inspected for this objective; check again";
    }
    match step.evidence {
        EvidenceType::Command => "not yet: the command's output is not what the lab expects",
        EvidenceType::File => "not yet: a file is not what the lab expects",
        EvidenceType::Network => "not yet: the network does not behave as the lab expects",
        EvidenceType::State => "not yet: a container is not in the state the lab expects",
    }
}

#[cfg(test)]
mod tests {
    use forge_core::CriterionResult;

    use super::*;

    fn failed(evidence: EvidenceType, collected: bool) -> EvaluatedCriterion {
        EvaluatedCriterion {
            result: CriterionResult {
                criterion_id: "c".into(),
                passed: false,
                evidence_refs: Vec::new(),
                message: Some("output does not contain `FG-SECRET`".into()),
                weight: 1.0,
            },
            artifacts: Vec::new(),
            failed_step: Some(FailedStep {
                evidence,
                collected,
            }),
        }
    }

    fn caller(roles: &[&str]) -> Caller {
        Caller {
            sub: "someone".into(),
            tenant_id: "demo".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            expires_at: u64::MAX,
        }
    }

    #[test]
    fn learners_get_the_kind_of_failure_and_never_the_expected_value() {
        for kind in [
            EvidenceType::Command,
            EvidenceType::File,
            EvidenceType::Network,
            EvidenceType::State,
        ] {
            for collected in [true, false] {
                let m = message_for(&failed(kind, collected), false).unwrap();
                assert!(!m.contains("FG-SECRET") && !m.is_empty(), "{m}");
                assert!(!m.ends_with('.') && m == m.to_lowercase(), "style: {m}");
            }
        }
        let m = message_for(&failed(EvidenceType::Command, true), false).unwrap();
        assert_eq!(
            m,
            "not yet: the command's output is not what the lab expects"
        );
        let m = message_for(&failed(EvidenceType::File, false), false).unwrap();
        assert!(m.starts_with("not checked"), "{m}");
        assert_eq!(learner_message(None), "not yet: this objective is not met");
    }

    #[test]
    fn instructors_and_the_platform_get_the_evaluators_message() {
        let e = failed(EvidenceType::Command, true);
        assert!(sees_details(&caller(&[roles::INSTRUCTOR])));
        assert!(sees_details(&caller(&[roles::ORCHESTRATOR])));
        for learner in [&[roles::SPAWN][..], &[roles::SPAWN, roles::SCORE_READ], &[]] {
            assert!(!sees_details(&caller(learner)), "{learner:?}");
        }
        assert_eq!(
            message_for(&e, true).as_deref(),
            Some("output does not contain `FG-SECRET`")
        );
        let mut ok = e.clone();
        ok.result.passed = true;
        ok.result.message = Some("ok".into());
        ok.failed_step = None;
        assert_eq!(message_for(&ok, false).as_deref(), Some("ok"));
    }
}
