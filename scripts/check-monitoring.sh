#!/usr/bin/env bash
# Checks the monitoring files (docs/monitoring.md) without starting anything:
#
# - the scrape configs deploy/prometheus/prometheus.yml (`forge up`) and prometheus.compose.yml
#   (deploy/compose.yaml) pass `promtool check config`, load rules/*.yml, name one job per
#   service at its port, and keep each process's samples once; the compose one scrapes the
#   services and lab hosts deploy/compose.yaml has;
# - the alert rules pass `promtool check rules`, their unit tests `promtool test rules`, and
#   every alert has a firing and a quiet test case and a runbook section in docs/monitoring.md;
# - the Grafana provisioning files and dashboards are well formed (ids, grid, the `datasource`
#   variable on every panel), and every PromQL `expr` of every dashboard, collected into a
#   generated recording-rules file, passes `promtool check rules`;
# - every metric and label used in the alert rules, their tests and the dashboards is in the
#   contract deploy/prometheus/metrics.txt (or is Prometheus's `up`), and docs/monitoring.md
#   describes every metric of it.
#
# Needs promtool (Debian: prometheus) and python3 with PyYAML (Debian: python3-yaml). No root.
#
#   bash scripts/check-monitoring.sh
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null 2>&1 || {
  echo "check-monitoring: promtool not found: apt-get install prometheus (Debian's package has promtool)" >&2
  exit 1
}
python3 -c 'import yaml' 2>/dev/null || {
  echo "check-monitoring: python3 cannot import yaml: apt-get install python3-yaml (or pip install pyyaml)" >&2
  exit 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Runs a promtool command quietly; on failure prints its output and what failed.
promtool_ok() {
  local what=$1
  shift
  if ! out=$(promtool "$@" 2>&1); then
    echo "$out" >&2
    echo "check-monitoring: $what: promtool $* failed" >&2
    exit 1
  fi
  echo "check-monitoring: $what: ok"
}

# Paths in a config are relative to the config's directory (rules/*.yml), so promtool resolves
# them from anywhere.
for f in deploy/prometheus/prometheus.yml deploy/prometheus/prometheus.compose.yml; do
  promtool_ok "$f" check config "$f"
done
promtool_ok "alert rules" check rules deploy/prometheus/rules/*.yml
promtool_ok "rule tests" test rules deploy/prometheus/tests/*.yml

# Everything promtool does not see; writes the dashboards' expressions as recording rules.
python3 - "$tmp/dashboards.rules.yml" <<'EOF'
import glob
import json
import os
import re
import sys

import yaml

out_rules = sys.argv[1]
errors = []
def fail(msg):
    errors.append(msg)

PROM = "deploy/prometheus"
GRAFANA = "deploy/grafana"
# job -> (compose.yaml service or None for the lab hosts, port)
SERVICES = {
    "forge_spawn_service": ("spawn", 8082),
    "forge_orchestrator": (None, 8083),
    "forge_worker_agent": (None, 8084),
    "forge_observer_hub": ("observer", 8085),
    "forge_scoreboard": ("scoreboard", 8086),
    "forge_playbook_runner": (None, 8087),
    "forge_opa": ("opa", 8181),
}
LAB_HOST_JOBS = ["forge_orchestrator", "forge_worker_agent", "forge_playbook_runner"]

# --- the contract --------------------------------------------------------------------------

contract = {}
with open(f"{PROM}/metrics.txt") as f:
    for n, line in enumerate(f, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) > 2 or not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", parts[0]):
            fail(f"{PROM}/metrics.txt:{n}: expected `name label,label,…`, got `{line}`")
            continue
        labels = set(parts[1].split(",")) if len(parts) == 2 else set()
        if parts[0] in contract:
            fail(f"{PROM}/metrics.txt:{n}: {parts[0]} is listed twice")
        contract[parts[0]] = labels

def is_histogram(name):
    return name.endswith("_seconds") or name.endswith("_bytes")

def labels_of(name):
    """The labels a series of `name` may carry, or an error message."""
    if name == "up":
        return {"job", "instance"}
    if name in contract:
        if is_histogram(name):
            return f"{name} is a histogram: use {name}_bucket, _sum or _count"
        return contract[name] | {"job", "instance"}
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and base in contract and is_histogram(base):
            return contract[base] | {"job", "instance"} | ({"le"} if suffix == "_bucket" else set())
    return f"{name} is not in {PROM}/metrics.txt"

# --- PromQL, as far as names and labels go --------------------------------------------------

DURATION = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|y))+(?![a-zA-Z0-9_])")
NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
OPS = ["=~", "!~", "!=", "==", "<=", ">=", "=", "<", ">", "+", "-", "*", "/", "%", "^", "@", ":"]
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile"}
KEYWORDS = GROUPING | AGGREGATIONS | {"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
# Grafana's interval variables, as durations promtool accepts.
INTERVALS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

def with_intervals(expr):
    for var, value in INTERVALS.items():
        expr = expr.replace("${" + var + "}", value)
        expr = re.sub(r"\$" + var + r"(?![a-zA-Z0-9_])", value, expr)
    return expr

def tokens(expr):
    out, i, n = [], 0, len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif c == "#":
            j = expr.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'`":
            j, buf = i + 1, []
            while j < n and expr[j] != c:
                if expr[j] == "\\" and c != "`" and j + 1 < n:
                    buf.append(expr[j : j + 2])
                    j += 2
                else:
                    buf.append(expr[j])
                    j += 1
            if j >= n:
                raise ValueError("unterminated string")
            out.append(("str", "".join(buf)))
            i = j + 1
        elif c in "(){}[],":
            out.append((c, c))
            i += 1
        elif (m := DURATION.match(expr, i)) or (m := NUMBER.match(expr, i)):
            out.append(("num", m.group()))
            i = m.end()
        elif m := IDENT.match(expr, i):
            out.append(("id", m.group()))
            i = m.end()
        else:
            op = next((o for o in OPS if expr.startswith(o, i)), None)
            if op is None:
                raise ValueError(f"unexpected `{c}` at {i}")
            out.append(("op", op))
            i += len(op)
    return out

def matchers(toks, i):
    """Parses `{l op "v", …}` at toks[i] == "{"; returns ({label: (op, value)}, next index)."""
    found, i = {}, i + 1
    while toks[i][0] != "}":
        if toks[i][0] == ",":
            i += 1
            continue
        (k1, label), (k2, op), (k3, value) = toks[i : i + 3]
        if k1 != "id" or k2 != "op" or k3 != "str":
            raise ValueError(f"bad label matcher near `{label}`")
        found[label] = (op, value)
        i += 3
    return found, i + 1

def analyse(expr):
    """The selectors [(metric, {label: (op, value)})] and grouping labels of an expression."""
    toks = tokens(expr) + [(None, None)]
    selectors, grouping, i = [], set(), 0
    while toks[i][0] is not None:
        kind, val = toks[i]
        nxt = toks[i + 1][0]
        if kind == "id" and val.lower() in GROUPING and nxt == "(":
            i += 2
            while toks[i][0] != ")":
                if toks[i][0] == "id":
                    grouping.add(toks[i][1])
                i += 1
            i += 1
        elif kind == "id" and (nxt == "(" or val.lower() in KEYWORDS):
            i += 1  # a function, an aggregation or a keyword
        elif kind == "id":
            found, i = matchers(toks, i + 1) if nxt == "{" else ({}, i + 1)
            selectors.append((val, found))
        elif kind == "{":
            found, i = matchers(toks, i)
            name = found.pop("__name__", ("=", None))
            if name[0] != "=" or name[1] is None:
                raise ValueError("a selector without a metric name")
            selectors.append((name[1], found))
        else:
            i += 1
    return selectors, grouping

def check_expr(where, expr):
    """Checks names and labels; returns the labels the expression's series may carry."""
    try:
        selectors, grouping = analyse(with_intervals(expr))
    except (ValueError, IndexError) as e:
        fail(f"{where}: cannot read `{expr}`: {e}")
        return set()
    if not selectors:
        fail(f"{where}: `{expr}` uses no metric")
    known, unknown = set(), False
    for name, found in selectors:
        labels = labels_of(name)
        if isinstance(labels, str):
            fail(f"{where}: {labels}")
            unknown = True
            continue
        known |= labels
        for label, (op, value) in found.items():
            if label not in labels:
                fail(f"{where}: {name} has no label `{label}` (it has {', '.join(sorted(labels))})")
            if "$" in value and op not in ("=~", "!~"):
                fail(f"{where}: `{label}{op}\"{value}\"`: a dashboard variable needs =~ or !~")
    for label in set() if unknown else grouping - known:
        fail(f"{where}: no metric of `{expr}` has label `{label}`")
    return known

# --- scrape configs -----------------------------------------------------------------------

def drops_all(job):
    return any(r.get("action") == "drop" and r.get("source_labels") == ["__name__"]
               and r.get("regex") in (".+", ".*") for r in job.get("metric_relabel_configs") or [])

def targets(job):
    """(host, port) of every static target and DNS name of a job."""
    out = []
    for sc in job.get("static_configs") or []:
        for t in sc.get("targets") or []:
            host, _, port = t.rpartition(":")
            out.append((host, int(port)))
    for dc in job.get("dns_sd_configs") or []:
        for name in dc.get("names") or []:
            out.append((name, dc.get("port")))
    return out

with open("deploy/compose.yaml") as f:
    compose = yaml.safe_load(f)["services"]
compose_hosts = sorted(n for n, s in compose.items()
                       if (s.get("command") or [])[:2] == ["serve", "host"])

for path, embedded in [(f"{PROM}/prometheus.yml", True), (f"{PROM}/prometheus.compose.yml", False)]:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if (cfg.get("global") or {}).get("scrape_interval") != "15s":
        fail(f"{path}: global scrape_interval is not 15s")
    if cfg.get("rule_files") != ["rules/*.yml"]:
        fail(f"{path}: rule_files is not [rules/*.yml]")
    if not glob.glob(os.path.join(os.path.dirname(path), "rules/*.yml")):
        fail(f"{path}: rules/*.yml matches no file")
    jobs = {j["job_name"]: j for j in cfg.get("scrape_configs") or []}
    if set(jobs) != set(SERVICES):
        fail(f"{path}: jobs {sorted(jobs)} are not the services {sorted(SERVICES)}")
    for name, (service, port) in SERVICES.items():
        job = jobs.get(name)
        if not job:
            continue
        got = targets(job)
        if not got or any(p != port for _, p in got):
            fail(f"{path}: job {name}: targets {got} are not all on port {port}")
        hosts = sorted(h for h, _ in got)
        if embedded:
            if hosts != ["localhost"]:
                fail(f"{path}: job {name}: targets {hosts} are not localhost")
        elif service is None:
            if hosts != compose_hosts:
                fail(f"{path}: job {name}: targets {hosts} are not the lab hosts of "
                     f"deploy/compose.yaml ({', '.join(compose_hosts)})")
        elif hosts != [service] or service not in compose:
            fail(f"{path}: job {name}: targets {hosts} are not the compose service `{service}`")
    # One process serves several ports: its samples are kept from one job only.
    keep = {n for n, j in jobs.items() if not drops_all(j)}
    want = {"forge_spawn_service"} if embedded else set(SERVICES) - {"forge_worker_agent", "forge_playbook_runner"}
    if keep != want:
        fail(f"{path}: the jobs keeping samples are {sorted(keep)}, expected {sorted(want)} "
             "(the others drop every sample and keep only `up`)")

# --- alert rules and their tests ------------------------------------------------------------

with open("docs/monitoring.md") as f:
    doc = f.read()
headings = set(re.findall(r"^### (\S+)\s*$", doc, re.M))

alerts = {}
for path in sorted(glob.glob(f"{PROM}/rules/*.yml")):
    with open(path) as f:
        rules = yaml.safe_load(f)
    for group in rules.get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record")
            where = f"{path}: {name}"
            known = check_expr(where, rule["expr"])
            if not rule.get("alert"):
                continue
            alerts[name] = path
            labels = rule.get("labels") or {}
            ann = rule.get("annotations") or {}
            if labels.get("severity") not in ("warning", "critical"):
                fail(f"{where}: severity is not warning or critical")
            for key in ("summary", "description", "runbook"):
                if not ann.get(key):
                    fail(f"{where}: no `{key}` annotation")
            if ann.get("runbook") != f"docs/monitoring.md#{name.lower()}":
                fail(f"{where}: runbook is not docs/monitoring.md#{name.lower()}")
            if name not in headings:
                fail(f"{where}: docs/monitoring.md has no runbook section `### {name}`")
            if f"docs/monitoring.md, {name}" not in " ".join((ann.get("description") or "").split()):
                fail(f"{where}: the description does not name its runbook (docs/monitoring.md, {name})")
            for text in ann.values():
                for label in re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", text):
                    if label not in known:
                        fail(f"{where}: annotation uses $labels.{label}, which its series do not have")

fires, quiet = set(), set()
for path in sorted(glob.glob(f"{PROM}/tests/*.yml")):
    with open(path) as f:
        tests = yaml.safe_load(f)
    for t in tests.get("tests") or []:
        for s in t.get("input_series") or []:
            check_expr(f"{path}: {t.get('name')}", s["series"])
        for a in t.get("alert_rule_test") or []:
            (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
for name in sorted(alerts):
    if name not in fires:
        fail(f"{alerts[name]}: {name}: no test case fires it ({PROM}/tests/)")
    if name not in quiet:
        fail(f"{alerts[name]}: {name}: no test case keeps it quiet ({PROM}/tests/)")
for name in sorted((fires | quiet) - set(alerts)):
    fail(f"{PROM}/tests/: tests alert {name}, which no rule defines")

# --- docs ----------------------------------------------------------------------------------

for name in contract:
    if f"`{name}" not in doc:
        fail(f"docs/monitoring.md does not describe {name} ({PROM}/metrics.txt)")

# --- Grafana -------------------------------------------------------------------------------

with open(f"{GRAFANA}/provisioning/datasources/prometheus.yml") as f:
    ds = yaml.safe_load(f)
if not any(d.get("type") == "prometheus" for d in ds.get("datasources") or []):
    fail(f"{GRAFANA}/provisioning/datasources/prometheus.yml: no prometheus data source")
with open(f"{GRAFANA}/provisioning/dashboards/forge.yml") as f:
    prov = yaml.safe_load(f)
if not any(p.get("type") == "file" and (p.get("options") or {}).get("path")
           for p in prov.get("providers") or []):
    fail(f"{GRAFANA}/provisioning/dashboards/forge.yml: no file provider with options.path")

def for_promtool(expr):
    """Grafana's interval variables as durations, any other variable (in a regex) as `.*`."""
    return re.sub(r"\$\{[^}]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*|\[\[[^\]]*\]\]", ".*",
                  with_intervals(expr))

PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "bargauge", "state-timeline", "table",
               "barchart", "heatmap", "text"}
DS = {"type": "prometheus", "uid": "${datasource}"}
groups, uids = [], {}
dashboards = sorted(glob.glob(f"{GRAFANA}/dashboards/*.json"))
if not dashboards:
    fail(f"{GRAFANA}/dashboards: no dashboard")
for path in dashboards:
    try:
        with open(path) as f:
            d = json.load(f)
    except ValueError as e:
        fail(f"{path}: not JSON: {e}")
        continue
    uid = d.get("uid")
    stem = os.path.basename(path)[: -len(".json")]
    if uid != stem:
        fail(f"{path}: uid {uid!r} is not the file name {stem!r}")
    if uid in uids:
        fail(f"{path}: uid {uid} is also {uids[uid]}'s")
    uids[uid] = path
    if not d.get("title"):
        fail(f"{path}: no title")
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        fail(f"{path}: schemaVersion {d.get('schemaVersion')!r} is not 36 or later")
    variables = {v.get("name"): v for v in (d.get("templating") or {}).get("list") or []}
    dv = variables.get("datasource") or {}
    if dv.get("type") != "datasource" or dv.get("query") != "prometheus":
        fail(f"{path}: no `datasource` variable of type datasource (query prometheus)")
    for name, v in variables.items():
        if v.get("type") != "query":
            continue
        if v.get("datasource") != DS:
            fail(f"{path}: variable {name}: datasource is not {DS}")
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", q or "")
        if not m:
            fail(f"{path}: variable {name}: query {q!r} is not label_values(metric, label)")
        elif m.group(2) not in check_expr(f"{path}: variable {name}", m.group(1)):
            fail(f"{path}: variable {name}: {m.group(1)} has no label {m.group(2)}")
    panels = list(d.get("panels") or [])
    for p in list(panels):
        panels.extend(p.get("panels") or [])  # panels of collapsed rows
    ids, cells, rules = set(), {}, []
    for p in panels:
        pid, title = p.get("id"), p.get("title")
        where = f"{path}: panel {pid} ({title})"
        if not isinstance(pid, int) or pid in ids:
            fail(f"{where}: id missing or not unique")
        ids.add(pid)
        if not title:
            fail(f"{where}: no title")
        if p.get("type") not in PANEL_TYPES:
            fail(f"{where}: unknown panel type {p.get('type')!r}")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] < 0 or g["x"] + g["w"] > 24:
            fail(f"{where}: gridPos {g} is not within 24 columns")
        else:
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        fail(f"{where}: overlaps panel {cells[(x, y)]}")
                        break
                    cells[(x, y)] = pid
                else:
                    continue
                break
        if p.get("type") in ("row", "text"):
            continue
        if p.get("datasource") != DS:
            fail(f"{where}: datasource is not {DS}")
        targets_ = p.get("targets") or []
        if not targets_:
            fail(f"{where}: no queries")
        refs = set()
        for t in targets_:
            ref = t.get("refId")
            twhere = f"{where} query {ref}"
            if not ref or ref in refs:
                fail(f"{twhere}: refId missing or not unique")
            refs.add(ref)
            if t.get("datasource") != DS:
                fail(f"{twhere}: datasource is not {DS}")
            expr = t.get("expr")
            if not expr:
                fail(f"{twhere}: no expr")
                continue
            check_expr(twhere, expr)
            record = re.sub(r"[^a-zA-Z0-9_:]", "_", f"dashboard:{uid}:panel_{pid}_{ref}")
            rules.append({"record": record, "expr": for_promtool(expr)})
    groups.append({"name": f"dashboard_{uid}", "rules": rules})

with open(out_rules, "w") as f:
    json.dump({"groups": groups}, f, indent=2)  # JSON is YAML

if errors:
    for e in errors:
        print(f"check-monitoring: {e}", file=sys.stderr)
    sys.exit(1)
n = sum(len(g["rules"]) for g in groups)
print(f"check-monitoring: {len(contract)} metrics in the contract; {len(alerts)} alerts, each "
      f"with a firing and a quiet test and a runbook; {len(dashboards)} dashboards, {n} queries: "
      "names and labels ok")
EOF

promtool_ok "dashboard queries" check rules "$tmp/dashboards.rules.yml"
