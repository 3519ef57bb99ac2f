#!/usr/bin/env python3
"""Runs the bundled gates under OPA's own Go engine and compares them with the embedded one.

The platform evaluates the gates in-process with regorus, but a deployment may point OPA_URL at
a real OPA instead, so the gates must mean the same under both engines. This helper (run by
scripts/check-opa-parity.sh, which installs the engine) does two things with OPA's engine, loaded
from PyPI's opa-golib-python-bindings (OPA's `rego` package as a shared library):

1. Runs every `test_*` rule of the policy directory, as `opa test` does, and checks it is the
   same set of tests `forge policy test` runs.
2. Decides each gate under both engines on every input its tests use, captured while they run,
   plus variations of those inputs (a field dropped, replaced by a value of the wrong type or a
   tricky string, a wrong-typed element appended to a list), and compares allow, the sorted deny
   reasons and the gate's extra outputs. The embedded side is `forge policy eval --lines`, one
   process per gate. An evaluation error on either side counts as a mismatch: a gate must deny
   malformed input, not fail on it.

    python3 scripts/opa_parity.py --forge FORGE --opa-lib DIR [--show N] [POLICY_DIR]
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Gate name (as `forge policy eval --policy` takes it), package, extra outputs (names.rs).
GATES = [
    ("training_gate", "frostgate.forge.training", []),
    ("spawn_gate", "frostgate.forge.spawn", []),
    ("action_gate", "frostgate.forge.action", []),
    ("llm_gate", "frostgate.forge.llm", ["requires_approval", "approval_reasons"]),
]

CAPTURE_REASON = "forge-parity-capture"

# Values of the wrong shape put in place of every field and appended to every list. Numbers
# are written as a gate's caller writes them (integers and plain decimals): OPA's sprintf keeps
# a JSON number's own spelling (1e+20, 3.0 inside a list) where regorus prints it normalised,
# which would make reason texts differ on inputs no caller sends.
WRONG_VALUES = [None, 0, -1, 2.5, 3, 1025, True, False, "", "x", [], {}, [None], {"x": None}, ["x", 1]]

# Strings put in place of every string: addresses in and out of the lab and malformed ones,
# unknown and odd tracks, host names, capabilities, roles, commands that fetch or destroy, and
# one over the llm gate's length limit.
TRICKY_STRINGS = [
    "10.20.0.10",
    "10.20.0.0/24",
    "10.20.0.10/24",
    "10.0.0.0/8",
    "8.8.8.8",
    "999.1.1.1",
    "010.020.000.010",
    "1.2.3.4.5",
    " 10.20.0.10",
    "::1",
    "10.10.0.0/33",
    "target_server",
    "example.com",
    "class:oscp",
    "class:",
    "class:NETPLUS",
    "class:cissp",
    "oscp",
    "allowlist",
    "SYS_ADMIN",
    "ALL",
    "cap_net_raw",
    "forge.agent",
    "forge.spawn",
    "forge/x:1",
    "curl http://example.com/x",
    "curl -s http://10.20.0.10:80/",
    "wget target_server",
    "ping 10.20.0.300",
    "rm -rf /",
    "iptables -F",
    "a" * 600,
]

MAX_DEPTH = 6

# The "new value" of an edit that removes a field or an element.
DROPPED = "<dropped>"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--forge", required=True, help="the forge binary (embedded engine)")
    p.add_argument("--opa-lib", required=True, help="directory holding opa_bindings/")
    p.add_argument("--show", type=int, default=5, help="mismatches shown per gate")
    p.add_argument("policy_dir", nargs="?", default="policies")
    return p.parse_args()


def read_policies(policy_dir):
    """The modules (path, text, package) and data.json documents, in path order."""
    modules, data = [], []
    for path in sorted(Path(policy_dir).rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(policy_dir).parts):
            continue
        if path.name == "data.json":
            data.append(json.loads(path.read_text()))
        elif path.suffix == ".rego":
            text = path.read_text()
            m = re.search(r"^package\s+([\w.]+)", text, re.M)
            if not m:
                sys.exit(f"opa-parity: {path} declares no package")
            modules.append((str(path), text, m.group(1)))
    return modules, data


def new_engine(opa, modules, data, extra=()):
    engine = opa.OpaEngine()
    for path, text, _ in modules:
        engine.add_policy(path, text)
    for path, text in extra:
        engine.add_policy(path, text)
    for doc in data:
        engine.add_data(doc)
    return engine


def test_rules(modules):
    """(package, rule) of every test_* rule, in module then declaration order, like the
    embedded runner (testing.rs) finds them."""
    out = []
    for _, text, package in modules:
        seen = set()
        for line in text.splitlines():
            m = re.match(r"(?:default\s+)?(test_\w+)", line.strip())
            if m and m.group(1) not in seen:
                seen.add(m.group(1))
                out.append((package, m.group(1)))
    return out


def run_opa_tests(opa, engine, tests):
    failures = []
    for package, rule in tests:
        try:
            value = engine.eval_document(f"{package}.{rule}")
            why = None if value is True else f"evaluated to {json.dumps(value)}"
        except opa.OpaUndefinedError:
            why = "undefined"
        except opa.OpaError as e:
            why = f"error: {e}"
        if why:
            failures.append(f"data.{package}.{rule} ({why})")
    return failures


def embedded_test_names(forge, policy_dir):
    out = subprocess.run(
        [forge, "policy", "test", policy_dir], capture_output=True, text=True, check=False
    )
    names = re.findall(r"^(?:PASS|FAIL) (data\.\S+)", out.stdout, re.M)
    if not names:
        sys.exit(f"opa-parity: `forge policy test` ran no tests:\n{out.stdout}{out.stderr}")
    return names, out.returncode


def capture_inputs(opa, modules, data, tests):
    """Every input a gate was asked about while its tests ran, per gate package.

    A module added to each gate's package contributes a deny reason that never holds but prints
    the input first; every test reaches deny_reasons (allow counts them first), so this sees
    each `with input as` the tests use, without parsing the tests."""
    extra = []
    for _, package, _ in GATES:
        extra.append(
            (
                f"<capture>/{package}.rego",
                f"package {package}\nimport rego.v1\n"
                f'deny_reasons contains "{CAPTURE_REASON}" if {{\n'
                f"\tprint(json.marshal(input))\n\tfalse\n}}\n",
            )
        )
    engine = new_engine(opa, modules, data, extra)
    seen = {package: {} for _, package, _ in GATES}
    engine.print_handler = lambda message, location: record(seen, message, location)
    for package, rule in tests:
        try:
            engine.eval_document(f"{package}.{rule}")
        except opa.OpaError:
            pass  # reported by the test run
    engine.close()
    return {package: list(inputs.values()) for package, inputs in seen.items()}


def record(seen, message, location):
    m = re.match(r"<capture>/([\w.]+)\.rego", location)
    if m and m.group(1) in seen:
        doc = json.loads(message)
        if isinstance(doc, dict):
            seen[m.group(1)].setdefault(canonical(doc), doc)


def canonical(doc):
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def variations(doc, done):
    """doc with one change each: every node (to MAX_DEPTH) dropped or replaced by a wrong value
    (strings also by tricky strings), and every list given one more wrong-typed element.

    An edit (path, old value, new value) already made to an earlier input is not repeated: test
    inputs are mostly one template with one field changed, and evaluating each edit of the
    shared fields once per test input would cost minutes for no new case."""
    out = [{}]

    def edit(path, old, new, put):
        key = (path, canonical(old), canonical(new))
        if key not in done:
            done.add(key)
            out.append(put(new))

    def walk(node, path, rebuild, depth):
        if isinstance(node, dict):
            items = list(node.items())
            for key, child in items:
                edit(path + (key,), child, DROPPED,
                     lambda _, key=key: rebuild({k: v for k, v in items if k != key}))
                visit(child, path + (key,), lambda v, key=key: rebuild({**node, key: v}), depth)
        elif isinstance(node, list):
            for i, child in enumerate(node):
                edit(path + (i,), child, DROPPED,
                     lambda _, i=i: rebuild(node[:i] + node[i + 1 :]))
                visit(child, path + (i,), lambda v, i=i: rebuild(node[:i] + [v] + node[i + 1 :]),
                      depth)
            for wrong in WRONG_VALUES:
                edit(path + (len(node),), node, wrong, lambda v: rebuild(node + [v]))

    def visit(child, path, put, depth):
        for wrong in WRONG_VALUES:
            edit(path, child, wrong, put)
        if isinstance(child, str):
            for s in TRICKY_STRINGS:
                edit(path, child, s, put)
        if depth < MAX_DEPTH:
            walk(child, path, put, depth + 1)

    walk(doc, (), lambda v: v, 1)
    return [v for v in out if isinstance(v, dict)]


def opa_decision(opa, engine, package, extras, doc):
    """The decision OPA's Data API would give the platform (decision.rs, from_document)."""
    try:
        result = engine.eval_document(package, doc)
    except opa.OpaUndefinedError:
        return {"error": f"package {package} is undefined"}
    except opa.OpaError as e:
        return {"error": str(e)}
    allow = result.get("allow")
    if allow is not None and not isinstance(allow, bool):
        return {"error": f"allow must be a boolean, got {json.dumps(allow)}"}
    reasons = result.get("deny_reasons") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    if not isinstance(reasons, list):
        return {"error": f"deny_reasons must be a set of strings, got {json.dumps(reasons)}"}
    reasons = [r if isinstance(r, str) else canonical(r) for r in reasons]
    extra = {k: result[k] for k in extras if result.get(k) is not None}
    return normalise({"allow": bool(allow), "deny_reasons": reasons, "extra": extra})


def normalise(decision):
    if "error" in decision:
        return {"error": decision["error"]}
    extra = {
        k: sorted(v, key=canonical) if isinstance(v, list) else v
        for k, v in (decision.get("extra") or {}).items()
    }
    return {
        "allow": decision["allow"],
        "deny_reasons": sorted(set(decision["deny_reasons"])),
        "extra": extra,
    }


def gate_inputs(base):
    """The test inputs and their variations, each once, in a stable order."""
    docs, done = {}, set()
    for doc in base:
        docs.setdefault(canonical(doc), doc)
        for v in variations(doc, done):
            docs.setdefault(canonical(v), v)
    return list(docs.values())


def start_embedded(forge, policy_dir, gate, docs, workdir):
    """Starts `forge policy eval --lines` on docs; it runs while OPA decides the same inputs."""
    path = Path(workdir) / f"{gate}.jsonl"
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    out = open(Path(workdir) / f"{gate}.out", "w+")
    proc = subprocess.Popen(
        [forge, "policy", "eval", "--policy", gate, "--lines", "--input", str(path),
         "--policy-dir", policy_dir],
        stdout=out, stderr=subprocess.PIPE, text=True,
    )
    return proc, out


def embedded_decisions(proc, out, count):
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"opa-parity: forge policy eval --lines failed:\n{stderr}")
    out.seek(0)
    lines = out.read().splitlines()
    out.close()
    if len(lines) != count:
        sys.exit(f"opa-parity: forge answered {len(lines)} lines for {count} inputs")
    return [normalise(json.loads(line)) for line in lines]


def report(gate, docs, ours, theirs, show):
    mismatches = 0
    for doc, opa_side, embedded in zip(docs, ours, theirs):
        if opa_side == embedded and "error" not in opa_side:
            continue
        mismatches += 1
        if mismatches <= show:
            print(f"  {gate} mismatch on input {canonical(doc)}")
            print(f"    opa:      {canonical(opa_side)}")
            print(f"    embedded: {canonical(embedded)}")
    return mismatches


def main():
    args = parse_args()
    sys.path.insert(0, args.opa_lib)
    import opa_bindings as opa

    modules, data = read_policies(args.policy_dir)
    tests = test_rules(modules)
    engine = new_engine(opa, modules, data)

    failures = run_opa_tests(opa, engine, tests)
    for f in failures:
        print(f"FAIL {f}")
    passed = len(tests) - len(failures)
    ok = not failures and bool(tests)

    names, rc = embedded_test_names(args.forge, args.policy_dir)
    ours = {f"data.{p}.{r}" for p, r in tests}
    if set(names) != ours:
        ok = False
        print(f"opa-parity: the engines found different tests: only under opa "
              f"{sorted(ours - set(names))}, only embedded {sorted(set(names) - ours)}")
    if rc != 0:
        ok = False
        print("opa-parity: `forge policy test` fails under the embedded engine")

    captured = capture_inputs(opa, modules, data, tests)
    total = mismatches = 0
    with tempfile.TemporaryDirectory(prefix="forge-opa-parity-") as workdir:
        runs = []
        for gate, package, extras in GATES:
            base = captured[package]
            if not base:
                ok = False
                print(f"opa-parity: no test input found for {gate}")
            docs = gate_inputs(base)
            runs.append((gate, package, extras, base, docs,
                         start_embedded(args.forge, args.policy_dir, gate, docs, workdir)))
        for gate, package, extras, base, docs, (proc, out) in runs:
            ours = [opa_decision(opa, engine, package, extras, doc) for doc in docs]
            theirs = embedded_decisions(proc, out, len(docs))
            m = report(gate, docs, ours, theirs, args.show)
            print(f"{gate}: {len(base)} test inputs, {len(docs)} inputs with variations, "
                  f"{m} mismatches")
            total += len(docs)
            mismatches += m
    engine.close()

    print(f"opa: {passed}/{len(tests)} tests passed; parity: {total} inputs, "
          f"{mismatches} mismatches")
    return 0 if ok and mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
