//! Finding policy modules (bundled into the binary, or on disk), telling Rego v0 from v1, and
//! reading data documents.
//!
//! Version rule: a module with a line starting `import rego.v1` is v1 and is parsed only as v1.
//! Any other module is parsed as v1 first (OPA 1.x's default) and, if that fails, as v0 (the
//! spec's seed policies, e.g. `allow { ... }`). A module valid in neither reports both errors.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::PolicyError;

/// One Rego module's text and the name it is reported under (its path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    pub name: String,
    pub text: String,
}

impl PolicySource {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// The Rego dialect a module was parsed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegoVersion {
    V0,
    V1,
}

/// A module that parses, with its package (dotted, without `data.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub text: String,
    pub package: String,
    pub version: RegoVersion,
}

/// The four gates as shipped, compiled into the binary so it works from any directory.
pub fn bundled_sources() -> Vec<PolicySource> {
    [
        (
            "policies/training_gate.rego",
            include_str!("../../../policies/training_gate.rego"),
        ),
        (
            "policies/spawn_gate.rego",
            include_str!("../../../policies/spawn_gate.rego"),
        ),
        (
            "policies/action_gate.rego",
            include_str!("../../../policies/action_gate.rego"),
        ),
        (
            "policies/llm_gate.rego",
            include_str!("../../../policies/llm_gate.rego"),
        ),
    ]
    .into_iter()
    .map(|(name, text)| PolicySource::new(name, text))
    .collect()
}

/// Whether the module opts into v1 explicitly.
pub fn declares_v1(text: &str) -> bool {
    text.lines()
        .any(|l| l.trim_start().starts_with("import rego.v1"))
}

/// Parses one module, choosing its dialect by the rule in the module docs.
pub fn parse_module(src: PolicySource) -> Result<Module, PolicyError> {
    let v1 = try_parse(&src, RegoVersion::V1);
    let (package, version) = match v1 {
        Ok(pkg) => (pkg, RegoVersion::V1),
        Err(e1) if declares_v1(&src.text) => {
            return Err(PolicyError::Parse {
                file: src.name,
                message: e1,
            });
        }
        Err(e1) => match try_parse(&src, RegoVersion::V0) {
            Ok(pkg) => (pkg, RegoVersion::V0),
            Err(e0) => {
                return Err(PolicyError::Parse {
                    file: src.name,
                    message: format!("as rego v1: {e1}\nas rego v0: {e0}"),
                });
            }
        },
    };
    Ok(Module {
        name: src.name,
        text: src.text,
        package,
        version,
    })
}

fn try_parse(src: &PolicySource, version: RegoVersion) -> Result<String, String> {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(version == RegoVersion::V0);
    engine
        .add_policy(src.name.clone(), src.text.clone())
        .map(|pkg| pkg.strip_prefix("data.").unwrap_or(&pkg).to_owned())
        .map_err(|e| crate::error::tidy(&e.to_string()))
}

/// A regorus engine with OPA's builtin semantics: a builtin given bad arguments (a malformed
/// CIDR in the input, say) is undefined rather than an error, so hostile input yields deny
/// reasons, not failures. The embedded engine and the test runner both start from it.
pub(crate) fn new_engine() -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine.set_strict_builtin_errors(false);
    engine
}

/// Adds `m` to `engine` in the dialect it was parsed as.
pub(crate) fn add_module(engine: &mut regorus::Engine, m: &Module) -> Result<(), PolicyError> {
    engine.set_rego_v0(m.version == RegoVersion::V0);
    engine
        .add_policy(m.name.clone(), m.text.clone())
        .map(|_| ())
        .map_err(|e| PolicyError::Parse {
            file: m.name.clone(),
            message: crate::error::tidy(&e.to_string()),
        })
}

/// Merges the data document `doc`, read from `source_name`, into `engine`'s `data`.
pub(crate) fn add_data(
    engine: &mut regorus::Engine,
    source_name: String,
    doc: Value,
) -> Result<(), PolicyError> {
    engine
        .add_data(regorus::Value::from(doc))
        .map_err(|e| PolicyError::Data {
            source_name,
            message: e.to_string(),
        })
}

/// Prepares `engine` (analysis, scheduling), so conflicts and unknown functions surface as a
/// compile error now rather than at the first evaluation.
pub(crate) fn prepare(engine: &mut regorus::Engine) -> Result<(), PolicyError> {
    engine
        .eval_query("true".into(), false)
        .map(|_| ())
        .map_err(|e| PolicyError::Compile(crate::error::tidy(&e.to_string())))
}

/// What a policy directory holds.
#[derive(Debug, Default)]
pub struct DirContents {
    pub sources: Vec<PolicySource>,
    /// `data.json` documents, merged at the root of `data` (as `opa run` does for a bundle root).
    pub data: Vec<(String, Value)>,
}

/// Reads every `*.rego` (and `data.json`) under `dir`, recursively, in path order. Test modules
/// (`*_test.rego`) are skipped unless `include_tests`.
pub fn read_dir(dir: &Path, include_tests: bool) -> Result<DirContents, PolicyError> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    let mut out = DirContents::default();
    for path in files {
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let name = path.display().to_string();
        if file_name == "data.json" {
            let text = std::fs::read_to_string(&path).map_err(|e| PolicyError::io(&path, e))?;
            let value: Value = serde_json::from_str(&text).map_err(|e| PolicyError::Data {
                source_name: name.clone(),
                message: e.to_string(),
            })?;
            out.data.push((name, value));
        } else if file_name.ends_with(".rego") {
            if !include_tests && file_name.ends_with("_test.rego") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| PolicyError::io(&path, e))?;
            out.sources.push(PolicySource::new(name, text));
        }
    }
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| PolicyError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| PolicyError::io(dir, e))?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let file_type = entry.file_type().map_err(|e| PolicyError::io(&path, e))?;
        if hidden {
            continue;
        } else if file_type.is_dir() {
            collect(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
