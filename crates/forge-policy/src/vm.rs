//! Bundled gates compiled to regorus's register VM: the fast path of an uncached decision.
//!
//! The interpreter walks a gate's rules on every decision, paying for rule lookups, path strings
//! and scopes on each one; the VM runs a program compiled once when the engine is built, four to
//! five times faster on the bundled gates (`benches/decision.rs` prints both, same run).
//!
//! Only gates whose modules are all bundled run on the VM: those are the gates that
//! `scripts/check-opa-parity.sh` decides under OPA's own engine and under this one (through
//! `forge policy eval`, hence through this path) on every CI run, so a VM that decided
//! differently from the interpreter would fail CI, not a learner. A gate an operator overrides
//! or adds runs on the interpreter, which is the reference; so does any gate whose program does
//! not compile, and every gate when [`crate::EmbeddedEngineBuilder::vm`] is off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::RegoVM;
use regorus::utils::limits::ExecutionTimerConfig;

use crate::PolicyName;

/// VMs kept per gate for reuse; more concurrent decisions than this just make and drop one.
const POOL_CAP: usize = 64;

/// One gate's program and idle VMs loaded with it. A VM resets its per-run state (registers,
/// rule values, loops) at the start of every `execute`, so reuse cannot leak one input into the
/// next decision; a VM whose run failed is dropped all the same.
struct Gate {
    program: Arc<Program>,
    idle: Mutex<Vec<RegoVM>>,
}

/// The compiled programs of the gates that run on the VM, with what every run needs.
pub(crate) struct GatePrograms {
    gates: HashMap<PolicyName, Gate>,
    data: regorus::Value,
    timeout: Option<Duration>,
}

impl GatePrograms {
    /// Compiles `rule` of each gate in `gates` from a prepared `engine` (left untouched: the
    /// compilation runs on a clone). A gate whose program does not compile is left out, and
    /// says why in the log.
    pub(crate) fn compile(
        engine: &regorus::Engine,
        gates: impl IntoIterator<Item = PolicyName>,
        rule: impl Fn(PolicyName) -> String,
        timeout: Option<Duration>,
    ) -> Self {
        let mut compiled_gates = HashMap::new();
        for gate in gates {
            let entry = rule(gate);
            let compiled = engine
                .clone()
                .compile_with_entrypoint(&entry.as_str().into())
                .map_err(|e| e.to_string())
                .and_then(|policy| {
                    Compiler::compile_from_policy(&policy, &[entry.as_str()])
                        .map_err(|e| e.to_string())
                });
            match compiled {
                Ok(program) => {
                    let idle = Mutex::new(Vec::new());
                    compiled_gates.insert(gate, Gate { program, idle });
                }
                Err(error) => tracing::warn!(
                    gate = gate.as_str(),
                    error = crate::error::tidy(&error),
                    "policy gate does not compile for the vm; it runs on the interpreter"
                ),
            }
        }
        Self {
            gates: compiled_gates,
            data: engine.get_data(),
            timeout,
        }
    }

    /// No gate on the VM.
    pub(crate) fn none() -> Self {
        Self {
            gates: HashMap::new(),
            data: regorus::Value::new_object(),
            timeout: None,
        }
    }

    /// Whether `gate` runs on the VM.
    pub(crate) fn has(&self, gate: PolicyName) -> bool {
        self.gates.contains_key(&gate)
    }

    /// A VM loaded with `gate`'s program and the data.
    fn load(&self, gate: &Gate) -> Result<RegoVM, String> {
        let mut vm = RegoVM::new();
        vm.load_program(gate.program.clone());
        // The wall-time cap below bounds a run; the VM's own default instruction budget
        // (25,000) would refuse a large lab's template.
        vm.set_max_instructions(usize::MAX);
        if let Some(limit) = self.timeout {
            vm.set_execution_timer_config(Some(ExecutionTimerConfig {
                limit,
                check_interval: std::num::NonZeroU32::MIN.saturating_add(63),
            }));
        }
        vm.set_data(self.data.clone())
            .map_err(|e| crate::error::tidy(&e.to_string()))?;
        Ok(vm)
    }

    /// Runs `gate`'s program on `input`.
    pub(crate) fn run(
        &self,
        gate: PolicyName,
        input: regorus::Value,
    ) -> Result<regorus::Value, String> {
        let Some(compiled) = self.gates.get(&gate) else {
            return Err(format!("policy gate {gate} is not compiled for the vm"));
        };
        let pooled = compiled
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let mut vm = match pooled {
            Some(vm) => vm,
            None => self.load(compiled)?,
        };
        vm.set_input(input);
        let value = vm
            .execute()
            .map_err(|e| crate::error::tidy(&e.to_string()))?;
        vm.set_input(regorus::Value::Undefined);
        let mut idle = compiled.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_CAP {
            idle.push(vm);
        }
        Ok(value)
    }
}
