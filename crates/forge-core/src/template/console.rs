//! Consoles per node: which containers of a lab a terminal may be opened in, and what runs there.
//!
//! A container declares `console: {command: [vtysh], learner: true, title: "router CLI"}` (or
//! `console: true` for the image's shell). The learner container always has a console, which
//! learners may open; its `console` may only change the command and title. Other declared
//! consoles are the learner's unless `learner: false`; instructors may open any container of
//! a lab, declared or not (the worker decides that, this module only says what the template
//! declares).

use serde::{Deserialize, Deserializer, Serialize};

use super::ScenarioTemplate;
use super::diagnostics::Diagnostic;
use super::yaml::SpannedDoc;

/// A container's `console` declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// What the console runs (argv, no shell); the image's login shell when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Whether learners may open it (default `true`).
    #[serde(default = "yes")]
    pub learner: bool,
    /// The console's tab title; the container's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for Console {
    fn default() -> Self {
        Self {
            command: None,
            learner: true,
            title: None,
        }
    }
}

/// `console: true` is the default console, `console: false` none (refused on the learner
/// container by [`check`], which reads the document).
pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Console>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Declared {
        Flag(bool),
        Spec(Console),
    }
    Ok(match Declared::deserialize(d)? {
        Declared::Flag(true) => Some(Console::default()),
        Declared::Flag(false) => None,
        Declared::Spec(c) => Some(c),
    })
}

/// One console of a lab, as the access page, the terminal and `forge shell` see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabConsole {
    pub container: String,
    /// argv; `None` runs the image's login shell.
    pub command: Option<Vec<String>>,
    /// Whether learners may open it.
    pub learner: bool,
    pub title: String,
}

impl LabConsole {
    fn of(container: &super::Container, learner_container: bool) -> Self {
        let decl = container.console.clone().unwrap_or_default();
        Self {
            container: container.name.clone(),
            command: decl.command,
            learner: learner_container || decl.learner,
            title: decl.title.unwrap_or_else(|| container.name.clone()),
        }
    }
}

impl ScenarioTemplate {
    /// Every declared console, the learner container's first, then in declaration order.
    pub fn consoles(&self) -> Vec<LabConsole> {
        let learner = self.learner_container();
        let mut out = vec![LabConsole::of(learner, true)];
        out.extend(
            self.spec
                .assets
                .containers
                .iter()
                .filter(|c| c.name != learner.name && c.console.is_some())
                .map(|c| LabConsole::of(c, false)),
        );
        out
    }

    /// The console of `container`: its declared one (the learner container always has one),
    /// else, for a container of the lab without a declaration, an undeclared shell that only
    /// instructors may open (`learner: false`); `None` for a container the lab does not have.
    pub fn console_of(&self, container: &str) -> Option<LabConsole> {
        let c = self.container(container)?;
        let is_learner = c.name == self.learner_container().name;
        if is_learner || c.console.is_some() {
            Some(LabConsole::of(c, is_learner))
        } else {
            Some(LabConsole {
                container: c.name.clone(),
                command: None,
                learner: false,
                title: c.name.clone(),
            })
        }
    }
}

/// The learner container's console must stay the learner's: `learner: false` or
/// `console: false` there is a mistake, not a way to lock learners out of their own lab.
pub(super) fn check(t: &ScenarioTemplate, doc: &SpannedDoc) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let learner = &t.learner_container().name;
    for (i, c) in t.spec.assets.containers.iter().enumerate() {
        if &c.name != learner {
            continue;
        }
        let p = format!("spec.assets.containers[{i}].console");
        let raw = doc
            .value
            .pointer(&format!("/spec/assets/containers/{i}/console"));
        if raw.and_then(serde_json::Value::as_bool) == Some(false) {
            out.push(Diagnostic::new(
                p,
                format!("`{learner}` is the learner container, which always has a console"),
            ));
        } else if c.console.as_ref().is_some_and(|k| !k.learner) {
            out.push(Diagnostic::new(
                format!("{p}.learner"),
                format!(
                    "`{learner}` is the learner container: its console is always the learner's"
                ),
            ));
        }
    }
    out
}
