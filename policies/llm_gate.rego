# LLM gate: may this LLM proposal run inside the lab without a human looking first?
#
# Input:
#   {proposal: {kind, command, target?, rationale?},
#    scenario: {id?, subnets: ["10.10.0.0/24", ..], hosts?: ["target_server", ..]},
#    require_human_approval?: bool}
#
# Outputs:
#   deny_reasons       hard violations: the proposal must never run, approved or not
#   requires_approval  true when a human must approve first (input flag, or a risky-but-allowed
#                      command such as a firewall change)
#   approval_reasons   why approval is required
#   allow              true only when the proposal may run with no human: no deny reasons and no
#                      approval required
#
# Written to decide alike under the embedded engine and OPA's own (scripts/check-opa-parity.sh):
# builtins only ever see arguments of the type and shape they accept (OPA raises an error where
# regorus yields undefined; net.cidr_contains in particular only gets valid CIDRs and IPv4
# addresses), and no `not` negates a call whose argument may be undefined.
# Digits are matched as [0-9], never \d: OPA's (Go's) \d is ASCII only, regorus's (Rust's)
# takes every Unicode digit.
# No body starts from `x := <a reference that may be undefined>`: regorus's VM, which runs the
# shipped gates, lets such an assignment hold where OPA and the interpreter fail the body, so
# presence is tested with object.keys or read through object.get with a default.
# regex.match and regex.find_n dominate a decision's cost (each call builds a fresh matcher
# cache in regorus), so every pattern carries needles: literal substrings at least one of which
# any match must contain. A pattern runs only when its command contains a needle, which changes
# no decision and skips most patterns for most commands. A pattern's needles must stay true to
# it: each alternative of the pattern contains one of them verbatim.
package frostgate.forge.llm

import rego.v1

kinds := {"exec", "explain", "hint"}

max_command_length := 512

# Addresses a command may name without being a lab host: any-address, loopback inside the
# container, and netmask / broadcast notation.
harmless_addresses := ["0.0.0.0/32", "127.0.0.0/8", "255.0.0.0/8"]

# Destructive or out-of-scope patterns, each with the reason shown when it matches. Evidence
# paths are refused outright: a lab (or its assistant) has no business near the evidence store.
forbidden_patterns := [
	{"needles": ["{"], "pattern": `:\s*\(\s*\)\s*\{[^}]*:\s*\|\s*:\s*&[^}]*\}\s*;\s*:`, "reason": "proposal.command contains a fork bomb"},
	{"needles": ["rm"], "pattern": `\brm\s+([^;&|]*\s)?/\*?(\s|;|&|\||$)`, "reason": "proposal.command deletes the root filesystem (rm ... /)"},
	{"needles": ["mkfs"], "pattern": `\bmkfs(\.[a-z0-9]+)?\b`, "reason": "proposal.command formats a filesystem (mkfs)"},
	{"needles": ["of=/dev/"], "pattern": `\bdd\b[^;&|]*\bof=/dev/`, "reason": "proposal.command writes a raw device (dd of=/dev/...)"},
	{"needles": ["/var/lib/forge"], "pattern": `/var/lib/forge\b`, "reason": "proposal.command touches the evidence store /var/lib/forge"},
	{"needles": ["/evidence"], "pattern": `(^|[\s'"=:;&|<>(])/evidence\b`, "reason": "proposal.command touches the evidence path /evidence"},
	{"needles": ["shutdown", "reboot", "halt", "poweroff", "init"], "pattern": `\b(shutdown|reboot|halt|poweroff)\b|\binit\s+[06]\b`, "reason": "proposal.command shuts down or reboots a host"},
]

# Allowed, but only after a human approved them.
approval_patterns := [
	{"needles": ["iptables", "ip6tables", "nft"], "pattern": `\b(iptables|ip6tables|nft)\b`, "reason": "proposal.command changes firewall rules"},
	{"needles": ["sysctl"], "pattern": `\bsysctl\b`, "reason": "proposal.command changes kernel parameters (sysctl)"},
	{"needles": ["kill"], "pattern": `\b(kill|pkill|killall)\b`, "reason": "proposal.command kills processes"},
	{"needles": ["down"], "pattern": `\b(ip\s+link\s+set\b[^;&|]*\bdown|ifconfig\b[^;&|]*\bdown|ifdown)\b`, "reason": "proposal.command takes a network interface down"},
]

default allow := false

allow if {
	count(deny_reasons) == 0
	kind in kinds
	not requires_approval
}

default requires_approval := false

requires_approval if count(approval_reasons) > 0

approval_reasons contains "the caller requires human approval" if input.require_human_approval == true

approval_reasons contains p.reason if {
	some p in approval_patterns
	mentions_any(p.needles)
	regex.match(p.pattern, command)
}

kind := object.get(input, ["proposal", "kind"], null)

command := c if {
	c := input.proposal.command
	is_string(c)
}

default raw_subnets := []

raw_subnets := s if {
	s := object.get(input, ["scenario", "subnets"], null)
	is_array(s)
}

# Only valid CIDRs reach net.cidr_contains; the others are a deny reason of their own. Judged
# once per decision: regex.match is the costliest builtin here, and a function is evaluated on
# every call where a rule is evaluated once.
valid_subnets contains s if {
	some s in raw_subnets
	valid_cidr(s)
}

subnets := [s | some s in raw_subnets; s in valid_subnets]

subnets_text := concat(", ", subnets)

default lab_hosts := set()

lab_hosts := {h | some h in input.scenario.hosts; is_string(h)} if is_array(input.scenario.hosts)

# --- shape ---------------------------------------------------------------------------------

deny_reasons contains "proposal.kind is required" if kind == null

deny_reasons contains msg if {
	kind != null
	not kind in kinds
	msg := sprintf("proposal.kind %v is not allowed (allowed: %s)", [kind, concat(", ", sort(kinds))])
}

deny_reasons contains "proposal.command is required for exec" if {
	kind == "exec"
	not command
}

deny_reasons contains msg if {
	c := input.proposal.command
	not is_string(c)
	msg := sprintf("proposal.command must be a string, got %v", [c])
}

deny_reasons contains msg if {
	count(command) > max_command_length
	msg := sprintf("proposal.command is %d characters; the limit is %d", [count(command), max_command_length])
}

deny_reasons contains "scenario.subnets must list the lab's subnets" if count(subnets) == 0

deny_reasons contains msg if {
	some i, s in raw_subnets
	not s in valid_subnets
	msg := sprintf("scenario.subnets[%d] %v is not an IPv4 CIDR", [i, s])
}

# Absent reads as false, which is a boolean: only a present non-boolean is refused.
deny_reasons contains "require_human_approval must be a boolean" if {
	not is_boolean(object.get(input, "require_human_approval", false))
}

# --- destructive and out-of-scope commands -------------------------------------------------

deny_reasons contains p.reason if {
	some p in forbidden_patterns
	mentions_any(p.needles)
	regex.match(p.pattern, command)
}

# Every IPv4 literal in the command must be a lab address (or harmless, see above).
ipv4_literals := {ip | some ip in regex.find_n(`\b[0-9]{1,3}(\.[0-9]{1,3}){3}\b`, command, -1)}

# The literals match the address shape by construction (the pattern above), so only their
# octets remain to be checked: valid_address would run its regex again on each.
valid_literals := {ip | some ip in ipv4_literals; net.cidr_is_valid(concat("", [ip, "/32"]))}

literal_in_lab(ip) if {
	ip in valid_literals
	some s in subnets
	net.cidr_contains(s, ip)
}

literal_harmless(ip) if {
	ip in valid_literals
	some r in harmless_addresses
	net.cidr_contains(r, ip)
}

# ip: an IPv4 address (or a CIDR, for a target), checked before any net.cidr_contains sees it.
in_lab(ip) if {
	valid_address(ip)
	some s in subnets
	net.cidr_contains(s, ip)
}

harmless(ip) if {
	valid_address(ip)
	some r in harmless_addresses
	net.cidr_contains(r, ip)
}

valid_address(a) if {
	is_string(a)
	regex.match(`^[0-9]{1,3}(\.[0-9]{1,3}){3}$`, a)
	net.cidr_is_valid(concat("", [a, "/32"]))
}

valid_address(a) if valid_cidr(a)

valid_cidr(c) if {
	is_string(c)
	regex.match(`^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$`, c)
	net.cidr_is_valid(c)
}

deny_reasons contains msg if {
	some ip in ipv4_literals
	not literal_in_lab(ip)
	not literal_harmless(ip)
	msg := sprintf("proposal.command names %s, outside the lab's subnets (%s)", [ip, subnets_text])
}

deny_reasons contains msg if {
	t := input.proposal.target
	not target_ok(t)
	msg := sprintf("proposal.target %v is not a lab host (lab subnets: %s)", [t, subnets_text])
}

target_ok(t) if in_lab(t)

target_ok(t) if t in lab_hosts

# curl/wget may only fetch from lab hosts: URL hosts (scheme://host) and a bare host given as
# the first argument (after flag-only options) must be lab addresses or scenario.hosts names.
# fetch_hosts' second rule implies fetches (curl or wget followed by whitespace), so guarding it
# with fetches changes nothing but skips its find_n for commands that fetch nothing. URL hosts
# and bare hosts are cut with split, which makes the same cut as a regex would (a URL holds one
# "://", a bare host's remainder no whitespace).
fetches if {
	mentions_any(["curl", "wget"])
	regex.match(`\b(curl|wget)\b`, command)
}

fetch_hosts contains lower(h) if {
	fetches
	contains(command, "://")
	some url in regex.find_n(`[A-Za-z][A-Za-z0-9+.-]*://[^/\s:'"?#]+`, command, -1)
	h := split(url, "://")[1]
}

fetch_hosts contains lower(h) if {
	fetches
	some m in regex.find_n(`\b(curl|wget)(\s+-[A-Za-z]+)*\s+[A-Za-z0-9][^\s'";&|<>()]*`, command, -1)
	arg := regex.replace(m, `^.*\s`, "")
	not contains(arg, "://")
	h := split(split(arg, ":")[0], "/")[0]
}

lab_host(h) if in_lab(h)

lab_host(h) if h in lab_hosts

deny_reasons contains msg if {
	some h in fetch_hosts
	not lab_host(h)
	msg := sprintf("proposal.command fetches from %s, which is not a lab host", [h])
}

# The command contains at least one of needles (see the header).
mentions_any(needles) if {
	some n in needles
	contains(command, n)
}
