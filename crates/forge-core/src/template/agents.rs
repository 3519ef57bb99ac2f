//! Agents: scripted attackers and defenders that act inside a lab (`spec.agents`).
//!
//! An agent runs from one of the lab's containers and follows a script of actions, each with a
//! trigger (`when`): at start, after some seconds, when a file appears in a container, or when
//! a success criterion passes. This module is the model and its checks; the runner (which puts
//! every action to the action gate before it runs) lives in `forge-lifecycle`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::ScenarioTemplate;
use super::diagnostics::Diagnostic;

/// Most actions per agent, and most runs of one repeated action: a script is a scenario, not a
/// load generator.
pub const MAX_ACTIONS: usize = 32;
pub const MAX_REPEAT_TIMES: u32 = 100;
/// Most passwords one `ssh_guess` tries ("a few attempts from a wordlist").
pub const MAX_PASSWORDS: usize = 20;
/// Longest an action may wait before it runs (`after_seconds`, `every_seconds`).
pub const MAX_DELAY_SECONDS: u64 = 3600;

/// One agent of a lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub name: String,
    /// `attacker`, `defender`, or a named role of the author's.
    pub role: String,
    /// The lab container it acts from (its commands run there).
    pub container: String,
    pub actions: Vec<AgentAction>,
}

/// What an action does. Attackers scan, guess, probe and exploit; defenders block, kill and
/// alert; `exec` is any command, for either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    PortScan,
    SshGuess,
    HttpProbe,
    Exploit,
    Exec,
    Block,
    Kill,
    Alert,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PortScan => "port_scan",
            Self::SshGuess => "ssh_guess",
            Self::HttpProbe => "http_probe",
            Self::Exploit => "exploit",
            Self::Exec => "exec",
            Self::Block => "block",
            Self::Kill => "kill",
            Self::Alert => "alert",
        }
    }

    /// The action gate's kind (policies/action_gate.rego: scan, connect, exec, exploit,
    /// capture). Defender actions are commands in the agent's own container (`exec`); an alert
    /// runs nothing but is still a decision the gate takes, so it is `exec` too.
    pub fn gate_kind(self) -> &'static str {
        match self {
            Self::PortScan => "scan",
            Self::SshGuess | Self::HttpProbe => "connect",
            Self::Exploit => "exploit",
            Self::Exec | Self::Block | Self::Kill | Self::Alert => "exec",
        }
    }

    /// Whether the action aims at an address the script names (`target` required); the others
    /// act on the agent's own container.
    pub fn needs_target(self) -> bool {
        matches!(
            self,
            Self::PortScan | Self::SshGuess | Self::HttpProbe | Self::Exploit | Self::Block
        )
    }

    fn offensive(self) -> bool {
        matches!(self, Self::PortScan | Self::SshGuess | Self::Exploit)
    }

    fn defensive(self) -> bool {
        matches!(self, Self::Block | Self::Kill)
    }
}

/// One scripted action. Which parameters apply depends on `kind` (checked by [`check`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentAction {
    /// Unique within the agent; `<kind>-<index>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub kind: ActionKind,
    /// An IPv4 address (or CIDR for scans) inside the lab's subnets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `port_scan`: nmap's port list (default `1-1024`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    /// `ssh_guess`, `http_probe`: the service's port (22, 80 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `ssh_guess`: the account and the wordlist tried, in order, until one works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passwords: Vec<String>,
    /// `http_probe`: the path requested (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `exploit`, `exec`: the shell command (`sh -c`) run in the agent's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `kill`: the process name (`pkill -x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// `alert`: what the learner is shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per run, 1-300 seconds (default 30).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::playbook::timeout_seconds"
    )]
    pub timeout_seconds: Option<u64>,
    #[serde(default)]
    pub when: When,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<Repeat>,
}

impl AgentAction {
    /// The action's id: its own, or `<kind>-<index in the agent>`.
    pub fn id_or(&self, index: usize) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("{}-{index}", self.kind.as_str()))
    }
}

/// When an action runs (exactly one of the fields; `at: start` by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// `start`: as soon as the lab runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seconds: Option<u64>,
    /// When a file exists in a container (and, with `contains`, holds that text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTrigger>,
    /// When the success criterion of this id passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criterion: Option<String>,
}

impl Default for When {
    fn default() -> Self {
        Self {
            at: Some("start".into()),
            after_seconds: None,
            file: None,
            criterion: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTrigger {
    pub container: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
}

/// Runs an action again `times` more times, `every_seconds` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    pub every_seconds: u64,
    pub times: u32,
}

/// IPv4 literals in a command: the runner puts each to the gate, and validation refuses those
/// outside the lab, so a command cannot aim where its `target` does not.
pub fn ipv4_literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.');
        if boundary && bytes[i].is_ascii_digit() {
            let end = (i..bytes.len())
                .find(|&j| !(bytes[j].is_ascii_digit() || bytes[j] == b'.'))
                .unwrap_or(bytes.len());
            let cand = text[i..end].trim_end_matches('.');
            if cand.parse::<Ipv4Addr>().is_ok() && !out.iter().any(|o| o == cand) {
                out.push(cand.to_owned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Whether `target` (an address or CIDR) lies inside one of `subnets`.
pub fn target_in(subnets: &[Ipv4Net], target: &str) -> bool {
    if let Ok(a) = target.parse::<Ipv4Addr>() {
        return subnets.iter().any(|n| n.contains(&a));
    }
    target
        .parse::<Ipv4Net>()
        .is_ok_and(|t| subnets.iter().any(|n| n.contains(&t)))
}

/// Every problem of `spec.agents` (the schema has checked the shapes).
pub(super) fn check(t: &ScenarioTemplate) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let subnets: Vec<Ipv4Net> = t.spec.network.subnets.iter().map(|s| s.cidr).collect();
    let criteria: BTreeSet<&str> = t
        .spec
        .success_criteria
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    let mut names = BTreeMap::new();
    for (i, a) in t.spec.agents.iter().enumerate() {
        let p = format!("spec.agents[{i}]");
        if let Some(j) = names.insert(a.name.as_str(), i) {
            out.push(Diagnostic::new(
                format!("{p}.name"),
                format!("duplicate agent name `{}` (first at agents[{j}])", a.name),
            ));
        }
        if t.container(&a.container).is_none() {
            out.push(Diagnostic::new(
                format!("{p}.container"),
                format!("unknown container `{}`", a.container),
            ));
        }
        if a.actions.len() > MAX_ACTIONS {
            out.push(Diagnostic::new(
                format!("{p}.actions"),
                format!("at most {MAX_ACTIONS} actions per agent"),
            ));
        }
        let mut ids = BTreeSet::new();
        for (k, act) in a.actions.iter().enumerate() {
            let ap = format!("{p}.actions[{k}]");
            if !ids.insert(act.id_or(k)) {
                out.push(Diagnostic::new(
                    format!("{ap}.id"),
                    format!("duplicate action id `{}`", act.id_or(k)),
                ));
            }
            match a.role.as_str() {
                "attacker" if act.kind.defensive() => out.push(Diagnostic::new(
                    format!("{ap}.kind"),
                    format!("an attacker cannot `{}`; use a defender", act.kind.as_str()),
                )),
                "defender" if act.kind.offensive() => out.push(Diagnostic::new(
                    format!("{ap}.kind"),
                    format!("a defender cannot `{}`; use an attacker", act.kind.as_str()),
                )),
                _ => {}
            }
            action(&mut out, &ap, act, &subnets);
            trigger(&mut out, &ap, act, t, &criteria);
        }
    }
    out
}

fn action(out: &mut Vec<Diagnostic>, ap: &str, act: &AgentAction, subnets: &[Ipv4Net]) {
    use ActionKind::*;
    let kind = act.kind;
    let mut needs = |present: bool, field: &str| {
        if !present {
            out.push(Diagnostic::new(
                ap.to_owned(),
                format!("`{}` needs `{field}`", kind.as_str()),
            ));
        }
    };
    needs(!kind.needs_target() || act.target.is_some(), "target");
    needs(kind != SshGuess || act.user.is_some(), "user");
    needs(kind != SshGuess || !act.passwords.is_empty(), "passwords");
    needs(
        !matches!(kind, Exploit | Exec) || act.command.is_some(),
        "command",
    );
    needs(kind != Kill || act.process.is_some(), "process");
    needs(kind != Alert || act.message.is_some(), "message");
    let applies: &[(&str, bool, &[ActionKind])] = &[
        (
            "target",
            act.target.is_some(),
            &[PortScan, SshGuess, HttpProbe, Exploit, Block],
        ),
        ("ports", act.ports.is_some(), &[PortScan]),
        ("port", act.port.is_some(), &[SshGuess, HttpProbe]),
        ("user", act.user.is_some(), &[SshGuess]),
        ("passwords", !act.passwords.is_empty(), &[SshGuess]),
        ("path", act.path.is_some(), &[HttpProbe]),
        ("command", act.command.is_some(), &[Exploit, Exec]),
        ("process", act.process.is_some(), &[Kill]),
        ("message", act.message.is_some(), &[Alert]),
    ];
    for (field, present, kinds) in applies {
        if *present && !kinds.contains(&kind) {
            out.push(Diagnostic::new(
                format!("{ap}.{field}"),
                format!("`{field}` does not apply to `{}`", kind.as_str()),
            ));
        }
    }
    if act.passwords.len() > MAX_PASSWORDS {
        out.push(Diagnostic::new(
            format!("{ap}.passwords"),
            format!("at most {MAX_PASSWORDS} passwords"),
        ));
    }
    if let Some(target) = &act.target {
        let cidr_ok = kind == PortScan && target.parse::<Ipv4Net>().is_ok();
        if target.parse::<Ipv4Addr>().is_err() && !cidr_ok {
            out.push(Diagnostic::new(
                format!("{ap}.target"),
                format!(
                    "`{target}` is not an IPv4 address{}",
                    if kind == PortScan { " or CIDR" } else { "" }
                ),
            ));
        } else if !target_in(subnets, target) {
            out.push(Diagnostic::new(
                format!("{ap}.target"),
                format!("{target} is outside every lab subnet; agents never act outside the lab"),
            ));
        }
    }
    if let Some(cmd) = &act.command {
        for ip in ipv4_literals(cmd) {
            if !target_in(subnets, &ip) {
                out.push(Diagnostic::new(
                    format!("{ap}.command"),
                    format!(
                        "names {ip}, outside every lab subnet; agents never act outside the lab"
                    ),
                ));
            }
        }
    }
    if let Some(path) = &act.path
        && !path.starts_with('/')
    {
        out.push(Diagnostic::new(
            format!("{ap}.path"),
            format!("`{path}` must start with /"),
        ));
    }
    if let Some(r) = act.repeat
        && (!(1..=MAX_DELAY_SECONDS).contains(&r.every_seconds)
            || !(1..=MAX_REPEAT_TIMES).contains(&r.times))
    {
        out.push(Diagnostic::new(
            format!("{ap}.repeat"),
            format!("every_seconds must be 1-{MAX_DELAY_SECONDS} and times 1-{MAX_REPEAT_TIMES}"),
        ));
    }
}

fn trigger(
    out: &mut Vec<Diagnostic>,
    ap: &str,
    act: &AgentAction,
    t: &ScenarioTemplate,
    criteria: &BTreeSet<&str>,
) {
    let w = &act.when;
    let set = [
        w.at.is_some(),
        w.after_seconds.is_some(),
        w.file.is_some(),
        w.criterion.is_some(),
    ]
    .into_iter()
    .filter(|x| *x)
    .count();
    let wp = format!("{ap}.when");
    if set != 1 {
        out.push(Diagnostic::new(
            wp.clone(),
            "needs exactly one of at, after_seconds, file, criterion",
        ));
    }
    if let Some(at) = &w.at
        && at != "start"
    {
        out.push(Diagnostic::new(
            format!("{wp}.at"),
            format!("`{at}` is not a moment; use `start`"),
        ));
    }
    if let Some(s) = w.after_seconds
        && !(1..=MAX_DELAY_SECONDS).contains(&s)
    {
        out.push(Diagnostic::new(
            format!("{wp}.after_seconds"),
            format!("must be 1-{MAX_DELAY_SECONDS}"),
        ));
    }
    if let Some(f) = &w.file {
        if t.container(&f.container).is_none() {
            out.push(Diagnostic::new(
                format!("{wp}.file.container"),
                format!("unknown container `{}`", f.container),
            ));
        }
        if !f.path.starts_with('/') || f.path.split('/').any(|s| s == "..") {
            out.push(Diagnostic::new(
                format!("{wp}.file.path"),
                format!("`{}` must be an absolute path without `..`", f.path),
            ));
        }
    }
    if let Some(c) = &w.criterion
        && !criteria.contains(c.as_str())
    {
        out.push(Diagnostic::new(
            format!("{wp}.criterion"),
            format!("unknown success criterion `{c}`"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ipv4_literals_only() {
        let got = ipv4_literals("curl http://10.1.2.3:8080/x; ping 8.8.8.8. v1.2.3.4 999.1.1.1");
        assert_eq!(got, ["10.1.2.3", "8.8.8.8"]);
    }

    #[test]
    fn targets_must_be_inside() {
        let nets = ["10.80.0.0/24".parse().unwrap()];
        assert!(target_in(&nets, "10.80.0.5"));
        assert!(target_in(&nets, "10.80.0.0/25"));
        assert!(!target_in(&nets, "10.0.0.0/8"));
        assert!(!target_in(&nets, "192.0.2.1"));
    }
}
