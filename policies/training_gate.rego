# Training gate: may this scenario template run on the platform?
#
# Input: the template flattened (design.md §5):
#   {metadata: {name, labels, annotations}, limits: {cpu, memory_mb, attacker_max_exploits,
#    timeout_minutes, pids?}, network: {egress, allowlist_profile?, subnets: [{name, cidr, cidr6?}]},
#    assets: {containers: [...]}, successCriteria: [...]}
#
# Required (as in the spec's seed policy): exactly one class:<track> label of a known track,
# attacker_max_exploits within the track's limit, egress deny (or a configured allowlist
# profile). Everything else (ceilings, images, read_only, capabilities, addressing) is checked
# when present, so the spec's minimal input decides as the spec's policy does.
#
# Written to decide alike under the embedded engine and OPA's own (scripts/check-opa-parity.sh):
# builtins only ever see arguments of the type and shape they accept (OPA raises an error where
# regorus yields undefined: object.get only gets objects, net.cidr_contains only valid CIDRs and
# addresses), and no `not` negates a call whose argument may be undefined (OPA then fails the
# whole expression, regorus lets it hold), so optional fields are read through object.get.
# Digits are matched as [0-9], never \d: OPA's (Go's) \d is ASCII only, regorus's (Rust's)
# takes every Unicode digit.
# No body starts from `x := <a reference that may be undefined>`: regorus's VM, which runs the
# shipped gates, lets such an assignment hold where OPA and the interpreter fail the body, so
# presence is tested with object.keys or read through object.get with a default.
package frostgate.forge.training

import rego.v1

# Per-track limits. cpu in cores for the whole lab, memory_mb in MiB for the whole lab,
# containers per lab, timeout_minutes per scenario, capabilities a container may add back after
# cap_drop ALL.
track_rules := {
	"netplus": {
		"attacker_max_exploits": 0,
		"cpu": 2, "memory_mb": 2048, "containers": 6, "timeout_minutes": 120,
		"capabilities": {"NET_ADMIN", "NET_RAW"},
	},
	"ccna": {
		"attacker_max_exploits": 0,
		"cpu": 4, "memory_mb": 4096, "containers": 10, "timeout_minutes": 180,
		"capabilities": {"NET_ADMIN", "NET_RAW"},
	},
	"cissp": {
		"attacker_max_exploits": 5,
		"cpu": 4, "memory_mb": 4096, "containers": 10, "timeout_minutes": 240,
		"capabilities": {"NET_ADMIN", "NET_RAW"},
	},
}

# Refused with their own reason whatever the track: each one is a sandbox escape.
forbidden_capabilities := {"SYS_ADMIN", "ALL"}

# Processes per container, any track.
max_pids := 1024

image_prefix := "forge/"

# Lab subnets must be private so a lab can never impersonate a public address.
private_ranges := ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]

# Operators enable allowlist egress profiles in data (data.json or the engine builder).
default allowlist_profiles := []

allowlist_profiles := p if {
	p := data.frostgate.forge.config.allowlist_profiles
	is_array(p)
}

default allow := false

allow if {
	count(deny_reasons) == 0
	track_rules[track]
	exploits_within_limit
	egress_ok
}

tracks_text := concat(", ", sort(object.keys(track_rules)))

default labels := []

labels := input.metadata.labels if is_array(input.metadata.labels)

class_labels := [l | some l in labels; is_string(l); startswith(l, "class:")]

track := trim_prefix(class_labels[0], "class:") if count(class_labels) == 1

rules := track_rules[track]

exploits := object.get(input, ["limits", "attacker_max_exploits"], null)

exploits_within_limit if {
	is_number(exploits)
	exploits <= rules.attacker_max_exploits
}

egress := object.get(input, ["network", "egress"], null)

profile := object.get(input, ["network", "allowlist_profile"], null)

egress_ok if egress == "deny"

egress_ok if {
	egress == "allowlist"
	profile in allowlist_profiles
}

containers := c if {
	c := input.assets.containers
	is_array(c)
}

# --- track -------------------------------------------------------------------------------

deny_reasons contains msg if {
	count(class_labels) == 0
	msg := sprintf("metadata.labels must contain one class:<track> label (tracks: %s)", [tracks_text])
}

deny_reasons contains msg if {
	count(class_labels) > 1
	msg := sprintf("metadata.labels has %d class labels (%s); exactly one is allowed", [count(class_labels), concat(", ", sort(class_labels))])
}

deny_reasons contains msg if {
	count(class_labels) == 1
	not track_rules[track]
	msg := sprintf("unknown track %s in label %s (tracks: %s)", [track, class_labels[0], tracks_text])
}

# --- exploits ------------------------------------------------------------------------------

deny_reasons contains "limits.attacker_max_exploits is required" if exploits == null

deny_reasons contains msg if {
	exploits != null
	not is_number(exploits)
	msg := sprintf("limits.attacker_max_exploits must be a number, got %v", [exploits])
}

deny_reasons contains msg if {
	is_number(exploits)
	exploits > rules.attacker_max_exploits
	msg := sprintf("limits.attacker_max_exploits %v exceeds the %s limit of %d", [exploits, track, rules.attacker_max_exploits])
}

# --- egress --------------------------------------------------------------------------------

deny_reasons contains "network.egress is required (set it to deny)" if egress == null

deny_reasons contains msg if {
	egress != null
	not egress in {"deny", "allowlist"}
	msg := sprintf("network.egress must be deny, got %v", [egress])
}

deny_reasons contains msg if {
	egress == "allowlist"
	not profile in allowlist_profiles
	configured := concat(", ", sort([p | some p in allowlist_profiles; is_string(p)]))
	msg := sprintf("network.egress allowlist needs a configured allowlist_profile; %v is not one (configured: %s); use egress deny", [profile, configured_text(configured)])
}

configured_text(s) := "none" if s == ""

configured_text(s) := s if s != ""

# --- ceilings (checked when present) -------------------------------------------------------

limit_fields := ["cpu", "memory_mb", "timeout_minutes"]

deny_reasons contains msg if {
	some field in limit_fields
	v := input.limits[field]
	not is_number(v)
	msg := sprintf("limits.%s must be a number, got %v", [field, v])
}

deny_reasons contains msg if {
	some field in limit_fields
	v := input.limits[field]
	is_number(v)
	v <= 0
	msg := sprintf("limits.%s must be positive, got %v", [field, v])
}

deny_reasons contains msg if {
	some field in limit_fields
	v := input.limits[field]
	is_number(v)
	v > rules[field]
	msg := sprintf("limits.%s %v exceeds the %s ceiling of %v", [field, v, track, rules[field]])
}

deny_reasons contains msg if {
	v := input.limits.pids
	not pids_ok(v)
	msg := sprintf("limits.pids must be a number from 1 to %d, got %v", [max_pids, v])
}

pids_ok(v) if {
	is_number(v)
	v >= 1
	v <= max_pids
}

deny_reasons contains "assets.containers must be a list of containers" if {
	"assets" in object.keys(input)
	not containers
}

deny_reasons contains "assets.containers must not be empty" if count(containers) == 0

deny_reasons contains msg if {
	count(containers) > rules.containers
	msg := sprintf("assets.containers has %d containers; the %s ceiling is %d", [count(containers), track, rules.containers])
}

deny_reasons contains "successCriteria must be a non-empty list" if {
	"successCriteria" in object.keys(input)
	not non_empty_array(input.successCriteria)
}

non_empty_array(a) if {
	is_array(a)
	count(a) > 0
}

# --- containers ----------------------------------------------------------------------------

# The containers that are objects, by index, so each rule need not test every container again.
object_containers[i] := c if {
	some i, c in containers
	is_object(c)
}

container_name(_, c) := c.name if named(c)

container_name(i, c) := sprintf("#%d", [i + 1]) if not named(c)

named(c) if {
	is_object(c)
	is_string(c.name)
}

deny_reasons contains msg if {
	some i, c in containers
	not is_object(c)
	msg := sprintf("assets.containers[%d] must be an object", [i])
}

deny_reasons contains msg if {
	some i, c in object_containers
	not is_string(object.get(c, "image", null))
	msg := sprintf("container %s: image is required", [container_name(i, c)])
}

deny_reasons contains msg if {
	some i, c in containers
	is_string(c.image)
	not startswith(c.image, image_prefix)
	msg := sprintf("container %s: image %s is not allowed (images must start with %s)", [container_name(i, c), c.image, image_prefix])
}

deny_reasons contains msg if {
	some i, c in object_containers
	object.get(c, "read_only", null) != true
	msg := sprintf("container %s: read_only must be true", [container_name(i, c)])
}

deny_reasons contains msg if {
	some i, c in object_containers
	object.get(c, "privileged", false) != false
	msg := sprintf("container %s: privileged containers are never allowed", [container_name(i, c)])
}

deny_reasons contains msg if {
	some i, c in object_containers
	caps := object.get(c, "capabilities", [])
	not is_array(caps)
	msg := sprintf("container %s: capabilities must be a list of names", [container_name(i, c)])
}

deny_reasons contains msg if {
	some i, c in containers
	some raw in container_caps[i]
	is_string(raw)
	cap := trim_prefix(upper(raw), "CAP_")
	cap in forbidden_capabilities
	msg := sprintf("container %s: capability %s is never allowed (allowed: %s)", [container_name(i, c), cap, allowed_caps_text])
}

deny_reasons contains msg if {
	some i, c in containers
	some raw in container_caps[i]
	is_string(raw)
	cap := trim_prefix(upper(raw), "CAP_")
	not cap in forbidden_capabilities
	# A known track first, so an unknown one (no list) fails here under every engine: regorus
	# would let `not cap in allowed_caps` hold on an undefined list, OPA would not.
	track_rules[track]
	not cap in allowed_caps
	msg := sprintf("container %s: capability %s is not allowed on track %s (allowed: %s)", [container_name(i, c), cap, track, allowed_caps_text])
}

deny_reasons contains msg if {
	some i, c in containers
	some raw in container_caps[i]
	not is_string(raw)
	msg := sprintf("container %s: capability %v must be a name", [container_name(i, c), raw])
}

# Lists a container declares, when they are lists (iterating anything else is an error), by
# container index. Rules rather than functions: a rule is evaluated once per decision, a
# function on every call, and the interpreter's calls dominate a decision's cost.
container_caps[i] := caps if {
	some i, c in containers
	caps := c.capabilities
	is_array(caps)
}

container_nets[i] := nets if {
	some i, c in containers
	nets := c.networks
	is_array(nets)
}

deny_reasons contains msg if {
	some i, c in object_containers
	nets := object.get(c, "networks", [])
	not is_array(nets)
	msg := sprintf("container %s: networks must be a list of subnet names", [container_name(i, c)])
}

# Undefined for an unknown track, whose own deny reason says enough: capabilities are only
# judged against a known track's list.
allowed_caps := rules.capabilities

default allowed_caps_text := "none"

allowed_caps_text := concat(", ", sort(allowed_caps)) if count(allowed_caps) > 0

# --- addressing (checked when present) -----------------------------------------------------

subnets := s if {
	s := input.network.subnets
	is_array(s)
}

subnet_names := {s.name | some s in subnets}

# First declaration wins, so a duplicated name is a deny reason rather than a rule conflict.
# Only valid CIDRs are kept: they are what addresses are checked against.
subnet_cidrs[name] := cidr if {
	some i, s in subnets
	is_object(s)
	name := s.name
	not i in redeclared_subnets
	cidr := object.get(s, "cidr", null)
	cidr in valid_cidrs
}

# Indexes of subnets whose name an earlier subnet already declared.
redeclared_subnets contains i if {
	some i, s in subnets
	some j, t in subnets
	j < i
	t.name == s.name
}

# The subnets' CIDRs that pass valid_cidr, computed once: regex.match is the costliest builtin
# here, and each CIDR is judged by several rules.
valid_cidrs contains cidr if {
	some s in subnets
	cidr := s.cidr
	valid_cidr(cidr)
}

deny_reasons contains msg if {
	some i, s in subnets
	i in redeclared_subnets
	msg := sprintf("network.subnets: subnet %v is declared more than once", [s.name])
}

deny_reasons contains msg if {
	some i, s in subnets
	is_object(s)
	not is_string(object.get(s, "name", null))
	msg := sprintf("network.subnets[%d]: name is required", [i])
}

# Absent reads as an empty list: only a present non-list is refused.
deny_reasons contains "network.subnets must be a list" if {
	not is_array(object.get(input, ["network", "subnets"], []))
}

deny_reasons contains msg if {
	some i, s in subnets
	not is_object(s)
	msg := sprintf("network.subnets[%d] must be an object {name, cidr}", [i])
}

deny_reasons contains msg if {
	some i, s in subnets
	is_object(s)
	not object.get(s, "cidr", null) in valid_cidrs
	msg := sprintf("network.subnets[%d] (%v): cidr %v is not a valid IPv4 CIDR", [i, object.get(s, "name", "unnamed"), object.get(s, "cidr", null)])
}

valid_cidr(c) if {
	is_string(c)
	regex.match(`^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$`, c)
	net.cidr_is_valid(c)
}

deny_reasons contains msg if {
	some s in subnets
	s.cidr in valid_cidrs
	not private(s.cidr)
	msg := sprintf("network.subnets %v: cidr %s is not inside a private range (%s)", [s.name, s.cidr, concat(", ", private_ranges)])
}

private(cidr) if {
	some r in private_ranges
	net.cidr_contains(r, cidr)
}

# IPv6 (dual-stack subnets): prefixes and addresses must be unique local (fd00::/8), so a lab
# never uses a routable prefix. Checked as strings: regorus and OPA disagree on IPv6 in the net
# builtins, and the template loader has already checked the addresses' syntax and containment.
ula_cidr(c) if {
	is_string(c)
	regex.match(`^[fF][dD][0-9a-fA-F]{2}:[0-9a-fA-F:]*/[0-9]{1,3}$`, c)
}

ula_address(a) if {
	is_string(a)
	regex.match(`^[fF][dD][0-9a-fA-F]{2}:[0-9a-fA-F:]*$`, a)
}

deny_reasons contains msg if {
	some i, s in subnets
	is_object(s)
	c := object.get(s, "cidr6", null)
	c != null
	not ula_cidr(c)
	msg := sprintf("network.subnets[%d] (%v): cidr6 %v is not a unique local IPv6 prefix (fd00::/8)", [i, object.get(s, "name", "unnamed"), c])
}

deny_reasons contains msg if {
	some i, c in containers
	some a in container_nets[i]
	is_object(a)
	addr := object.get(a, "address6", null)
	addr != null
	addr != "none"
	not ula_address(addr)
	msg := sprintf("container %s: address6 %v on network %v is not a unique local IPv6 address (fd00::/8) or none", [container_name(i, c), addr, object.get(a, "name", null)])
}

# A container's attachment: a subnet name, or {name, address}; address "none" is an interface
# plumbed without IPv4 (a DHCP client's), so there is nothing to check it against.
attachment_name(a) := a if is_string(a)

attachment_name(a) := a.name if is_object(a)

deny_reasons contains msg if {
	some i, c in containers
	some a in container_nets[i]
	name := attachment_name(a)
	not name in subnet_names
	msg := sprintf("container %s: network %v is not a subnet declared in network.subnets", [container_name(i, c), name])
}

deny_reasons contains msg if {
	some i, c in containers
	some a in container_nets[i]
	not attachment_name(a)
	msg := sprintf("container %s: network attachment %v must be a subnet name or {name, address}", [container_name(i, c), a])
}

deny_reasons contains msg if {
	some i, c in containers
	some a in container_nets[i]
	is_object(a)
	addr := a.address
	addr in valid_addresses
	cidr := subnet_cidrs[a.name]
	not net.cidr_contains(cidr, addr)
	msg := sprintf("container %s: address %v is outside subnet %v (%s)", [container_name(i, c), addr, a.name, cidr])
}

deny_reasons contains msg if {
	some i, c in containers
	some a in container_nets[i]
	is_object(a)
	addr := a.address
	not addr in valid_addresses
	addr != "none"
	msg := sprintf("container %s: address %v on network %v is not an IPv4 address or none", [container_name(i, c), addr, object.get(a, "name", null)])
}

# The attachments' addresses that pass valid_address, computed once (see valid_cidrs).
valid_addresses contains addr if {
	some nets in container_nets
	some a in nets
	is_object(a)
	addr := a.address
	valid_address(addr)
}

valid_address(a) if {
	is_string(a)
	regex.match(`^[0-9]{1,3}(\.[0-9]{1,3}){3}$`, a)
	net.cidr_is_valid(concat("", [a, "/32"]))
}

