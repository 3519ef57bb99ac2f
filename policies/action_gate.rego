# Action gate: may this agent perform this action inside its lab?
#
# Input:
#   {actor: {sub, roles: [..]},
#    action: {kind, target, command?},
#    scenario: {id, subnets: ["10.10.0.0/24", ..], attacker_max_exploits, exploits_used}}
#
# Actions stay inside the lab: the target (an IPv4 address or CIDR) must lie in one of the
# lab's subnets, and exploits are rationed by the template's attacker_max_exploits.
#
# Written to decide alike under the embedded engine and OPA's own (scripts/check-opa-parity.sh):
# builtins only ever see arguments of the type and shape they accept (OPA raises an error where
# regorus yields undefined), and no `not` negates a call whose argument may be undefined (OPA
# then fails the whole expression, regorus lets it hold): input is read through object.get.
# Digits are matched as [0-9], never \d: OPA's (Go's) \d is ASCII only, regorus's (Rust's)
# takes every Unicode digit.
# No body starts from `x := <a reference that may be undefined>`: regorus's VM, which runs the
# shipped gates, lets such an assignment hold where OPA and the interpreter fail the body, so
# presence is tested with object.keys or read through object.get with a default.
package frostgate.forge.action

import rego.v1

actor_roles_allowed := {"forge.agent", "forge.instructor"}

kinds := {"scan", "connect", "exec", "exploit", "capture"}

default allow := false

allow if {
	count(deny_reasons) == 0
	has_allowed_role
	kind in kinds
	target_in_lab
}

default roles := []

roles := r if {
	r := input.actor.roles
	is_array(r)
}

kind := object.get(input, ["action", "kind"], null)

target := object.get(input, ["action", "target"], null)

command := object.get(input, ["action", "command"], null)

default raw_subnets := []

raw_subnets := s if {
	s := object.get(input, ["scenario", "subnets"], null)
	is_array(s)
}

# Only valid CIDRs reach net.cidr_contains; the others are a deny reason of their own.
#
# Validity is judged by rules, not functions: a rule is evaluated once per decision, a function
# on every call, and regex.match is the costliest builtin here. The regex rules out what the
# engines' CIDR parsers disagree on; net.cidr_is_valid then checks the ranges.
valid_subnets contains s if {
	some s in raw_subnets
	is_string(s)
	regex.match(`^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$`, s)
	net.cidr_is_valid(s)
}

subnets := [s | some s in raw_subnets; s in valid_subnets]

subnets_text := concat(", ", subnets)

# Whether the target is an IPv4 address or CIDR (see valid_subnets).
target_valid if {
	is_string(target)
	regex.match(`^[0-9]{1,3}(\.[0-9]{1,3}){3}$`, target)
	net.cidr_is_valid(concat("", [target, "/32"]))
}

target_valid if {
	is_string(target)
	regex.match(`^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$`, target)
	net.cidr_is_valid(target)
}

target_in_lab if {
	target_valid
	some s in subnets
	net.cidr_contains(s, target)
}

deny_reasons contains msg if {
	not has_allowed_role
	msg := sprintf("actor.roles must include one of %s", [concat(", ", sort(actor_roles_allowed))])
}

has_allowed_role if {
	some role in roles
	role in actor_roles_allowed
}

deny_reasons contains "action.kind is required" if kind == null

deny_reasons contains msg if {
	kind != null
	not kind in kinds
	msg := sprintf("action.kind %v is not allowed (allowed: %s)", [kind, concat(", ", sort(kinds))])
}

deny_reasons contains "scenario.subnets must list the lab's subnets" if count(subnets) == 0

deny_reasons contains msg if {
	some i, s in raw_subnets
	not s in valid_subnets
	msg := sprintf("scenario.subnets[%d] %v is not an IPv4 CIDR", [i, s])
}

deny_reasons contains "action.target is required" if not is_string(target)

deny_reasons contains msg if {
	is_string(target)
	not target_valid
	msg := sprintf("action.target %s must be an IPv4 address or CIDR inside the lab (%s)", [target, subnets_text])
}

deny_reasons contains msg if {
	target_valid
	count(subnets) > 0
	not target_in_lab
	msg := sprintf("action.target %s is outside the lab's subnets (%s)", [target, subnets_text])
}

deny_reasons contains "action.command is required for exec" if {
	kind == "exec"
	not non_empty_string(command)
}

non_empty_string(s) if {
	is_string(s)
	s != ""
}

exploit_budget := object.get(input, ["scenario", "attacker_max_exploits"], null)

exploits_used := object.get(input, ["scenario", "exploits_used"], null)

deny_reasons contains msg if {
	kind == "exploit"
	some field in ["attacker_max_exploits", "exploits_used"]
	not is_number(object.get(input, ["scenario", field], null))
	msg := sprintf("scenario.%s must be a number for exploit actions", [field])
}

deny_reasons contains msg if {
	kind == "exploit"
	is_number(exploit_budget)
	is_number(exploits_used)
	exploits_used >= exploit_budget
	msg := sprintf("exploit budget exhausted: %v of %v exploits used", [exploits_used, exploit_budget])
}

