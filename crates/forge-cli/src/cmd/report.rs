//! How the client commands show results: criteria (of a check or a score), and where a score's
//! bundle is with the commands that verify it.

use serde_json::Value;

/// One line per criterion, with why it fails and its hint when there are.
pub fn print_criteria(criteria: &Value, text_field: &str) {
    for c in criteria.as_array().into_iter().flatten() {
        let mark = if c["passed"] == true { "PASS" } else { "fail" };
        let id = c["criterion_id"].as_str().unwrap_or("");
        println!(
            "  {mark}  {id:<24} {}",
            c[text_field].as_str().unwrap_or("")
        );
        // Under a check's description, why it fails: for a learner's token the worker says
        // only what kind of thing is not right yet, never the expected value.
        if text_field != "message"
            && c["passed"] != true
            && let Some(m) = c["message"].as_str()
        {
            println!("        {m}");
        }
        if let Some(h) = c["hint"].as_str() {
            println!("        hint: {h}");
        }
    }
}

/// Where a score's bundle is and how to verify it, from its `evidence_url` (a `file://` URL of
/// the local evidence store, or an `s3://` one) and the scoreboard URL of the score.
pub fn bundle_lines(evidence_url: &str, score_url: &str) -> Vec<String> {
    const FILES: &str = "score.json, evidence.tar.zst, manifest.json, verdict.sig";
    let dir = evidence_url
        .rsplit_once('/')
        .map_or(evidence_url, |(dir, _)| dir);
    let remote = format!("forge bundle verify {score_url}");
    match dir.strip_prefix("file://") {
        Some(path) => vec![
            format!("bundle   {path}/ ({FILES}, on the platform's machine)"),
            format!("verify   forge bundle verify {path}"),
            format!("         {remote}   (from anywhere, with your token)"),
        ],
        None => vec![
            format!("bundle   {dir}/ ({FILES})"),
            format!("verify   {remote}"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_bundle_is_shown_as_a_path_with_its_verify_command() {
        let lines = bundle_lines(
            "file:///var/lib/forge/evidence/forge-evidence/scn-0123456789ab/evidence.tar.zst",
            "http://127.0.0.1:8086/v1/scores/scn-0123456789ab",
        );
        assert!(
            lines[0]
                .starts_with("bundle   /var/lib/forge/evidence/forge-evidence/scn-0123456789ab/ ")
        );
        assert_eq!(
            lines[1],
            "verify   forge bundle verify /var/lib/forge/evidence/forge-evidence/scn-0123456789ab"
        );
        let s3 = bundle_lines(
            "s3://forge-evidence/scn-0123456789ab/evidence.tar.zst",
            "http://h:8086/v1/scores/scn-0123456789ab",
        );
        assert!(s3[0].starts_with("bundle   s3://forge-evidence/scn-0123456789ab/ "));
        assert_eq!(
            s3[1],
            "verify   forge bundle verify http://h:8086/v1/scores/scn-0123456789ab"
        );
    }
}
