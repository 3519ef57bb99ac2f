//! Template errors: each names the path and reason, and the line and column where YAML gives
//! them; all errors of one file are reported together.

use std::fmt;

use serde::Serialize;

use super::yaml::SpannedDoc;

/// One problem in a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Path in the document, e.g. `spec.assets.containers[1].networks[0]`; empty for the root.
    pub path: String,
    pub reason: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
}

impl Diagnostic {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
            line: None,
            column: None,
        }
    }

    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// Fills in line and column from the document's position map when not yet known.
    pub fn locate(&mut self, doc: &SpannedDoc) {
        if self.line.is_none()
            && let Some((l, c)) = doc.position(&self.path)
        {
            self.line = Some(l);
            self.column = Some(c);
        }
    }
}

/// Every problem found in one template file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct TemplateErrors {
    pub file: String,
    pub errors: Vec<Diagnostic>,
}

impl TemplateErrors {
    pub fn new(file: impl Into<String>, errors: Vec<Diagnostic>) -> Self {
        Self {
            file: file.into(),
            errors,
        }
    }
}

impl fmt::Display for Diagnostic {
    /// `path: reason`, or just the reason at the root; positions are added by [`TemplateErrors`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

impl fmt::Display for TemplateErrors {
    /// One line per problem: `file:line:column: path: reason` (compiler style, so editors can
    /// jump to it), or `file: path: reason` when the position is unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match (d.line, d.column) {
                (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {d}", self.file)?,
                _ => write!(f, "{}: {d}", self.file)?,
            }
        }
        Ok(())
    }
}
