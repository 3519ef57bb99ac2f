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
package frostgate.forge.action

import rego.v1

actor_roles_allowed := {"forge.agent", "forge.instructor"}

kinds := {"scan", "connect", "exec", "exploit", "capture"}

default allow := false

allow if {
	count(deny_reasons) == 0
	some role in roles
	role in actor_roles_allowed
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
subnets := [s | some s in raw_subnets; valid_cidr(s)]

subnets_text := concat(", ", subnets)

target_in_lab if {
	valid_target(target)
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
	not valid_cidr(s)
	msg := sprintf("scenario.subnets[%d] %v is not an IPv4 CIDR", [i, s])
}

deny_reasons contains "action.target is required" if not is_string(target)

deny_reasons contains msg if {
	is_string(target)
	not valid_target(target)
	msg := sprintf("action.target %s must be an IPv4 address or CIDR inside the lab (%s)", [target, subnets_text])
}

deny_reasons contains msg if {
	valid_target(target)
	count(subnets) > 0
	not target_in_lab
	msg := sprintf("action.target %s is outside the lab's subnets (%s)", [target, subnets_text])
}

valid_target(t) if {
	is_string(t)
	regex.match(`^\d{1,3}(\.\d{1,3}){3}$`, t)
	net.cidr_is_valid(concat("", [t, "/32"]))
}

valid_target(t) if valid_cidr(t)

valid_cidr(c) if {
	is_string(c)
	regex.match(`^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$`, c)
	net.cidr_is_valid(c)
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
