//! The embedded backend: regorus in-process, policies compiled once at build time.
//!
//! Preparing a regorus engine (parse, analyse, schedule) costs milliseconds, so
//! [`EmbeddedEngine`] prepares one when built and keeps a small pool of clones of it. A decision
//! pops a clone (or makes one), sets the input, evaluates one rule, and returns the clone; regorus
//! resets its per-evaluation state on every `eval_rule`, so reuse cannot leak one input into the
//! next decision. Concurrent decisions each get their own clone. The shipped gates skip the
//! interpreter: they run as programs on regorus's VM ([`crate::vm`]), four to five times faster.
//! Repeated inputs are answered from a decision cache either way (see
//! [`EmbeddedEngineBuilder::decision_cache`]).
//!
//! Each loaded gate gets a small generated module `forge_internal.decision.<gate>` whose single
//! `result` rule gathers `allow` (default false), `deny_reasons` (default empty) and the gate's
//! extra outputs, so one rule evaluation yields the whole decision even for v0 operator policies
//! that define only `allow`.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forge_core::audit::AuditSink;
use serde_json::Value;

use crate::cache::{DecisionCache, Outcome};
use crate::loader::{self, Module, PolicySource, RegoVersion};
use crate::vm::GatePrograms;
use crate::{Decision, DecisionContext, DecisionObserver, PolicyError, PolicyName, input_hash};

/// Engines kept for reuse; more concurrent decisions than this just clone and drop.
const POOL_CAP: usize = 64;
/// Package prefix of the generated decision modules.
const INTERNAL_PREFIX: &str = "forge_internal.decision";

/// Where the bundled gates come from.
#[derive(Debug, Clone)]
enum Bundled {
    /// Compiled into the binary (`include_str!`).
    Embedded,
    /// Read from a directory (`*_test.rego` skipped), e.g. while editing policies.
    Dir(PathBuf),
    /// No bundled gates: only operator policies.
    None,
}

/// Configures and compiles an [`EmbeddedEngine`].
#[derive(Debug, Clone)]
pub struct EmbeddedEngineBuilder {
    bundled: Bundled,
    operator_dirs: Vec<PathBuf>,
    sources: Vec<PolicySource>,
    data: Vec<(String, Value)>,
    observer: DecisionObserver,
    eval_timeout: Option<Duration>,
    cache_capacity: usize,
    vm: bool,
}

impl Default for EmbeddedEngineBuilder {
    fn default() -> Self {
        Self {
            bundled: Bundled::Embedded,
            operator_dirs: Vec::new(),
            sources: Vec::new(),
            data: Vec::new(),
            observer: DecisionObserver::default(),
            eval_timeout: Some(Duration::from_secs(1)),
            cache_capacity: 4096,
            vm: true,
        }
    }
}

impl EmbeddedEngineBuilder {
    /// Loads the bundled gates from `dir` instead of the copies compiled into the binary.
    pub fn bundled_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bundled = Bundled::Dir(dir.into());
        self
    }

    /// Loads no bundled gates; only operator policies.
    pub fn without_bundled(mut self) -> Self {
        self.bundled = Bundled::None;
        self
    }

    /// Adds an operator policy directory (`*.rego` recursively, `*_test.rego` skipped,
    /// `data.json` merged into `data`). An operator module whose package is a bundled gate's
    /// package replaces that bundled module.
    pub fn operator_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.operator_dirs.push(dir.into());
        self
    }

    /// Adds one operator module from memory (same replacement rule as [`Self::operator_dir`]).
    pub fn policy(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.sources.push(PolicySource::new(name, text));
        self
    }

    /// Merges a data document (a JSON object) into `data`, e.g.
    /// `{"frostgate": {"forge": {"config": {"allowlist_profiles": ["pypi-mirror"]}}}}`.
    pub fn data(mut self, name: impl Into<String>, doc: Value) -> Self {
        self.data.push((name.into(), doc));
        self
    }

    /// Where decisions are audited, and the audit events' default actor.
    pub fn audit(mut self, sink: Arc<dyn AuditSink>, actor: impl Into<String>) -> Self {
        self.observer = DecisionObserver::new(sink, actor);
        self
    }

    /// Caps one evaluation's wall time (default 1 s; `None` = no cap). Guards against an
    /// operator policy that is accidentally quadratic in its input.
    pub fn eval_timeout(mut self, limit: Option<Duration>) -> Self {
        self.eval_timeout = limit;
        self
    }

    /// Remembers up to `capacity` decisions by (gate, input hash) so a repeated input skips
    /// evaluation (default 4096; 0 turns it off). Turned off automatically when a module uses a
    /// builtin whose answer can change between calls (`time.now_ns`, `rand.intn`, ...).
    pub fn decision_cache(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Runs the shipped gates on regorus's VM (default on; see [`crate::vm`]); off, every
    /// gate runs on the interpreter.
    pub fn vm(mut self, on: bool) -> Self {
        self.vm = on;
        self
    }

    /// Parses, compiles and smoke-evaluates every module.
    pub fn build(self) -> Result<EmbeddedEngine, PolicyError> {
        let mut data = self.data;
        let bundled_sources = match &self.bundled {
            Bundled::Embedded => loader::bundled_sources(),
            Bundled::Dir(dir) => {
                let contents = loader::read_dir(dir, false)?;
                data.extend(contents.data);
                contents.sources
            }
            Bundled::None => Vec::new(),
        };
        let mut operator_sources = Vec::new();
        for dir in &self.operator_dirs {
            let contents = loader::read_dir(dir, false)?;
            operator_sources.extend(contents.sources);
            data.extend(contents.data);
        }
        operator_sources.extend(self.sources);

        let operator = operator_sources
            .into_iter()
            .map(loader::parse_module)
            .collect::<Result<Vec<_>, _>>()?;
        let overridden: BTreeSet<&str> = operator.iter().map(|m| m.package.as_str()).collect();
        let mut modules = Vec::new();
        for src in bundled_sources {
            let module = loader::parse_module(src)?;
            if !overridden.contains(module.package.as_str()) {
                modules.push(module);
            }
        }
        modules.extend(operator);

        let mut engine = loader::new_engine();
        if let Some(limit) = self.eval_timeout {
            engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
                limit,
                check_interval: std::num::NonZeroU32::MIN.saturating_add(63),
            });
        }
        for m in &modules {
            loader::add_module(&mut engine, m)?;
        }
        for (name, doc) in data {
            if !doc.is_object() {
                return Err(PolicyError::Data {
                    source_name: name,
                    message: "a data document must be a JSON object".into(),
                });
            }
            loader::add_data(&mut engine, name, doc)?;
        }
        let packages: BTreeSet<String> = modules.iter().map(|m| m.package.clone()).collect();
        let gates: Vec<PolicyName> = PolicyName::ALL
            .into_iter()
            .filter(|p| packages.contains(p.package()))
            .collect();
        for gate in &gates {
            let helper = Module {
                name: format!("<{INTERNAL_PREFIX}.{gate}>"),
                text: helper_module(*gate),
                package: format!("{INTERNAL_PREFIX}.{gate}"),
                version: RegoVersion::V1,
            };
            loader::add_module(&mut engine, &helper)?;
        }

        // Prepare once (analysis, scheduling) so every clone starts ready, and evaluate each gate
        // on an empty input so conflicts and unknown functions surface now, not at first use.
        loader::prepare(&mut engine)?;
        for gate in &gates {
            engine.set_input(regorus::Value::new_object());
            engine
                .eval_rule(result_rule(*gate))
                .map_err(|e| PolicyError::Compile(crate::error::tidy(&e.to_string())))?;
        }
        let programs = if self.vm {
            // What CI checks against OPA (scripts/check-opa-parity.sh) is the shipped text, so
            // a gate runs on the VM only while every module of its package is shipped text.
            let shipped_sources = loader::bundled_sources();
            let shipped: BTreeSet<&str> = shipped_sources.iter().map(|s| s.text.as_str()).collect();
            let on_vm = gates.iter().copied().filter(|gate| {
                let mut own = modules.iter().filter(|m| m.package == gate.package());
                own.all(|m| shipped.contains(m.text.as_str()))
            });
            GatePrograms::compile(&engine, on_vm, result_rule, self.eval_timeout)
        } else {
            GatePrograms::none()
        };

        Ok(EmbeddedEngine {
            prepared: engine,
            programs,
            pool: Mutex::new(Vec::new()),
            cache: DecisionCache::new(self.cache_capacity, &modules),
            modules,
            gates,
            observer: self.observer,
        })
    }
}

fn helper_module(gate: PolicyName) -> String {
    let pkg = gate.package();
    let mut text = format!(
        "package {INTERNAL_PREFIX}.{gate}\nimport rego.v1\n\
         default allow := false\nallow := data.{pkg}.allow\n\
         default deny_reasons := []\ndeny_reasons := data.{pkg}.deny_reasons\n"
    );
    let mut fields = String::from("\"allow\": allow, \"deny_reasons\": deny_reasons");
    for rule in gate.extra_rules() {
        text.push_str(&format!(
            "default x_{rule} := null\nx_{rule} := data.{pkg}.{rule}\n"
        ));
        fields.push_str(&format!(", \"{rule}\": x_{rule}"));
    }
    text.push_str(&format!("result := {{{fields}}}\n"));
    text
}

fn result_rule(gate: PolicyName) -> String {
    format!("data.{INTERNAL_PREFIX}.{gate}.result")
}

/// The regorus-backed policy engine. Cheap to share (`Arc`); decisions run concurrently.
pub struct EmbeddedEngine {
    prepared: regorus::Engine,
    programs: GatePrograms,
    pool: Mutex<Vec<regorus::Engine>>,
    cache: Option<DecisionCache>,
    modules: Vec<Module>,
    gates: Vec<PolicyName>,
    observer: DecisionObserver,
}

impl std::fmt::Debug for EmbeddedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedEngine")
            .field(
                "modules",
                &self.modules.iter().map(|m| &m.name).collect::<Vec<_>>(),
            )
            .field("gates", &self.gates)
            .field("decision_cache", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl EmbeddedEngine {
    pub fn builder() -> EmbeddedEngineBuilder {
        EmbeddedEngineBuilder::default()
    }

    /// The bundled gates only, audited nowhere.
    pub fn bundled() -> Result<Self, PolicyError> {
        Self::builder().build()
    }

    /// The loaded modules (without the generated helpers), in load order.
    pub fn modules(&self) -> &[Module] {
        &self.modules
    }

    /// Whether a module declares the gate's package.
    pub fn has_policy(&self, policy: PolicyName) -> bool {
        self.gates.contains(&policy)
    }

    /// Decides `policy` for `input` (a JSON object), counting and auditing the decision.
    pub fn decide(&self, policy: PolicyName, input: &Value) -> Result<Decision, PolicyError> {
        self.decide_with(policy, input, &DecisionContext::default())
    }

    /// [`Self::decide`] with an explicit audit actor / resource.
    pub fn decide_with(
        &self,
        policy: PolicyName,
        input: &Value,
        ctx: &DecisionContext,
    ) -> Result<Decision, PolicyError> {
        let started = std::time::Instant::now();
        let result = self.evaluate(policy, input);
        crate::decision::record_latency(policy, started.elapsed());
        self.observer.observe(policy, input, ctx, result)
    }

    /// [`Self::decide`], counted but not audited: for the Data API's anonymous callers on a
    /// loopback listener, whose queries must not each cost a signed audit record (a platform
    /// asking through a [`crate::RemoteEngine`] audits the decision on its own side).
    pub fn decide_unaudited(
        &self,
        policy: PolicyName,
        input: &Value,
    ) -> Result<Decision, PolicyError> {
        let started = std::time::Instant::now();
        let result = self.evaluate(policy, input);
        crate::decision::record_latency(policy, started.elapsed());
        DecisionObserver::count(policy, &result);
        result
    }

    fn evaluate(&self, policy: PolicyName, input: &Value) -> Result<Decision, PolicyError> {
        self.check_decidable(policy, input)?;
        let hash = input_hash(input);
        let decision_id = uuid::Uuid::new_v4().to_string();
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(policy, &hash)) {
            return Ok(Decision {
                allow: hit.allow,
                deny_reasons: hit.deny_reasons,
                policy: policy.as_str().to_owned(),
                decision_id,
                input_hash: hash,
                extra: hit.extra,
            });
        }
        let decision =
            self.evaluate_uncached(policy, crate::convert::to_rego(input), decision_id, hash)?;
        if let Some(cache) = &self.cache {
            cache.put(
                policy,
                decision.input_hash.clone(),
                Outcome {
                    allow: decision.allow,
                    deny_reasons: decision.deny_reasons.clone(),
                    extra: decision.extra.clone(),
                },
            );
        }
        Ok(decision)
    }

    /// Whether `policy` runs on regorus's VM (a shipped gate, see [`crate::vm`]) rather than
    /// on the interpreter.
    pub fn on_vm(&self, policy: PolicyName) -> bool {
        self.programs.has(policy)
    }

    fn check_decidable(&self, policy: PolicyName, input: &Value) -> Result<(), PolicyError> {
        if !input.is_object() {
            return Err(PolicyError::InvalidInput(format!(
                "input must be a JSON object, got {}",
                json_type(input)
            )));
        }
        if !self.has_policy(policy) {
            return Err(PolicyError::NotLoaded {
                policy: policy.as_str().to_owned(),
                package: policy.package().to_owned(),
            });
        }
        Ok(())
    }

    /// Evaluates the gate's generated `result` rule on a pooled engine.
    fn evaluate_uncached(
        &self,
        policy: PolicyName,
        rego_input: regorus::Value,
        decision_id: String,
        hash: String,
    ) -> Result<Decision, PolicyError> {
        let value = if self.programs.has(policy) {
            catch_unwind(AssertUnwindSafe(|| self.programs.run(policy, rego_input)))
                .unwrap_or_else(|_| Err("the policy vm panicked".into()))
        } else {
            self.eval(Some(rego_input), |e| e.eval_rule(result_rule(policy)))
        };
        let value = value.map_err(|message| PolicyError::Eval {
            policy: policy.as_str().to_owned(),
            message,
        })?;
        let doc = match serde_json::to_value(&value) {
            Ok(Value::Object(doc)) => doc,
            _ => {
                return Err(PolicyError::Eval {
                    policy: policy.as_str().to_owned(),
                    message: format!("decision is not an object: {value}"),
                });
            }
        };
        Decision::from_document(policy, &doc, decision_id, hash)
    }

    /// Whether repeated inputs reuse earlier decisions (see
    /// [`EmbeddedEngineBuilder::decision_cache`]).
    pub fn caches_decisions(&self) -> bool {
        self.cache.is_some()
    }

    /// Evaluates the document at `path` (OPA Data API style, slash separated: `""` is all of
    /// `data`, `frostgate/forge/training/allow` one rule). `Ok(None)` means undefined. This is
    /// a raw query: it is neither counted nor audited.
    pub fn query(&self, path: &str, input: Option<&Value>) -> Result<Option<Value>, PolicyError> {
        let query = data_ref(path);
        let rego_input = input.map(crate::convert::to_rego);
        let results = self
            .eval(rego_input, |e| e.eval_query(query.clone(), false))
            .map_err(|message| PolicyError::Eval {
                policy: path.to_owned(),
                message,
            })?;
        let Some(value) = results
            .result
            .into_iter()
            .next()
            .and_then(|r| r.expressions.into_iter().next())
            .map(|e| e.value)
        else {
            return Ok(None);
        };
        if value == regorus::Value::Undefined {
            return Ok(None);
        }
        let mut json = serde_json::to_value(&value).map_err(|e| PolicyError::Eval {
            policy: path.to_owned(),
            message: e.to_string(),
        })?;
        // The generated decision modules are an implementation detail of this engine.
        if let Some(root) = json.as_object_mut()
            && path.trim_matches('/').is_empty()
        {
            root.remove("forge_internal");
        }
        Ok(Some(json))
    }

    /// Runs `f` on a pooled engine with `input` set. A panic inside regorus becomes an error
    /// and the engine that panicked is discarded.
    fn eval<T, E: std::fmt::Display>(
        &self,
        input: Option<regorus::Value>,
        f: impl FnOnce(&mut regorus::Engine) -> Result<T, E>,
    ) -> Result<T, String> {
        let mut engine = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| self.prepared.clone());
        engine.set_input(input.unwrap_or(regorus::Value::Undefined));
        let out = catch_unwind(AssertUnwindSafe(|| f(&mut engine)));
        match out {
            Ok(result) => {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                if pool.len() < POOL_CAP {
                    pool.push(engine);
                }
                result.map_err(|e| crate::error::tidy(&e.to_string()))
            }
            Err(_) => Err("the policy engine panicked".into()),
        }
    }
}

/// A Rego reference for a slash-separated data path; segments that are not identifiers are
/// written in brackets as JSON strings.
fn data_ref(path: &str) -> String {
    let mut out = String::from("data");
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let ident = seg
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ident {
            out.push('.');
            out.push_str(seg);
        } else {
            out.push('[');
            out.push_str(&Value::String(seg.to_owned()).to_string());
            out.push(']');
        }
    }
    out
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ref_quotes_non_identifiers() {
        assert_eq!(data_ref(""), "data");
        assert_eq!(
            data_ref("frostgate/forge/training/allow"),
            "data.frostgate.forge.training.allow"
        );
        assert_eq!(data_ref("a/1.0/b c"), "data.a[\"1.0\"][\"b c\"]");
    }
}
