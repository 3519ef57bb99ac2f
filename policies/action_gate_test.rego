package frostgate.forge.action_test

import data.frostgate.forge.action
import rego.v1

good := {
	"actor": {"sub": "agent-7", "roles": ["forge.agent"]},
	"action": {"kind": "scan", "target": "10.20.0.10"},
	"scenario": {"id": "scn-1", "subnets": ["10.10.0.0/24", "10.20.0.0/24"], "attacker_max_exploits": 2, "exploits_used": 1},
}

patched(p) := object.union(good, p)

denied(inp, msg) if {
	msg in action.deny_reasons with input as inp
	not action.allow with input as inp
}

test_allow_scan_in_lab if {
	action.allow with input as good
	count(action.deny_reasons) == 0 with input as good
}

test_allow_scan_of_a_subnet if action.allow with input as patched({"action": {"target": "10.10.0.0/24"}})

test_allow_instructor_exec if action.allow with input as patched({
	"actor": {"roles": ["forge.instructor"]},
	"action": {"kind": "exec", "command": "ip route"},
})

test_allow_exploit_within_budget if action.allow with input as patched({"action": {"kind": "exploit"}})

test_deny_role_missing if denied(
	patched({"actor": {"roles": ["forge.spawn"]}}),
	"actor.roles must include one of forge.agent, forge.instructor",
)

test_deny_kind_missing if denied(patched({"action": {"kind": null}}), "action.kind is required")

test_deny_kind_unknown if denied(
	patched({"action": {"kind": "pivot"}}),
	"action.kind pivot is not allowed (allowed: capture, connect, exec, exploit, scan)",
)

test_deny_subnets_missing if denied(patched({"scenario": {"subnets": []}}), "scenario.subnets must list the lab's subnets")

test_deny_target_missing if denied(patched({"action": {"target": null}}), "action.target is required")

test_deny_target_hostname if denied(
	patched({"action": {"target": "example.com"}}),
	"action.target example.com must be an IPv4 address or CIDR inside the lab (10.10.0.0/24, 10.20.0.0/24)",
)

test_deny_target_outside if denied(
	patched({"action": {"target": "192.168.1.1"}}),
	"action.target 192.168.1.1 is outside the lab's subnets (10.10.0.0/24, 10.20.0.0/24)",
)

test_deny_target_wider_than_lab if denied(
	patched({"action": {"target": "10.0.0.0/8"}}),
	"action.target 10.0.0.0/8 is outside the lab's subnets (10.10.0.0/24, 10.20.0.0/24)",
)

test_deny_exec_without_command if denied(patched({"action": {"kind": "exec"}}), "action.command is required for exec")

test_deny_exploit_counters_missing if denied(
	patched({"action": {"kind": "exploit"}, "scenario": {"exploits_used": null}}),
	"scenario.exploits_used must be a number for exploit actions",
)

test_deny_exploit_budget_exhausted if denied(
	patched({"action": {"kind": "exploit"}, "scenario": {"exploits_used": 2}}),
	"exploit budget exhausted: 2 of 2 exploits used",
)

test_deny_exploit_on_a_training_track if denied(
	patched({"action": {"kind": "exploit"}, "scenario": {"attacker_max_exploits": 0, "exploits_used": 0}}),
	"exploit budget exhausted: 0 of 0 exploits used",
)

# --- malformed input: a deny with a reason, never an evaluation error ----------------------

test_deny_target_not_a_string if denied(patched({"action": {"target": 7}}), "action.target is required")

test_deny_action_not_an_object if denied(patched({"action": "scan"}), "action.kind is required")

test_deny_subnet_not_a_cidr if denied(
	patched({"scenario": {"subnets": ["10.10.0.0/24", "lab", 7]}}),
	"scenario.subnets[1] lab is not an IPv4 CIDR",
)

test_deny_target_octet_out_of_range if denied(
	patched({"action": {"target": "10.20.0.300"}}),
	"action.target 10.20.0.300 must be an IPv4 address or CIDR inside the lab (10.10.0.0/24, 10.20.0.0/24)",
)

test_deny_exploit_scenario_not_an_object if denied(
	patched({"action": {"kind": "exploit"}, "scenario": "scn-1"}),
	"scenario.exploits_used must be a number for exploit actions",
)
