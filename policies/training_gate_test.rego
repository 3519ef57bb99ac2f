package frostgate.forge.training_test

import data.frostgate.forge.training
import rego.v1

# The bundled netplus routing lab, flattened as the orchestrator sends it.
netplus := {
	"metadata": {"name": "netplus-routing-lab", "labels": ["class:netplus", "tier:intermediate"], "annotations": {}},
	"limits": {"cpu": 2, "memory_mb": 2048, "attacker_max_exploits": 0, "timeout_minutes": 30, "pids": 128},
	"network": {"egress": "deny", "allowlist_profile": null, "subnets": [
		{"name": "learner_net", "cidr": "10.10.0.0/24"},
		{"name": "target_net", "cidr": "10.20.0.0/24", "gateway": "10.20.0.1"},
	]},
	"assets": {"containers": [learner, router, target]},
	"successCriteria": [{"id": "route-add", "weight": 1}, {"id": "connectivity", "weight": 1}],
}

learner := {"name": "learner_vm", "image": "forge/learner-alpine:3.19", "read_only": true, "environment": {"LEARNER_MODE": "true"}, "networks": ["learner_net"], "capabilities": ["NET_RAW"], "setup": []}

router := {"name": "router", "image": "forge/vyos-mini:1.4", "read_only": true, "environment": {}, "networks": [{"name": "learner_net"}, {"name": "target_net", "address": "10.20.0.1"}], "capabilities": ["NET_ADMIN"], "setup": []}

target := {"name": "target_server", "image": "forge/nginx-test:1.0", "read_only": true, "environment": {}, "networks": ["target_net"], "capabilities": [], "setup": []}

# The spec's runbook input (Operations Runbook: Check OPA Policy).
minimal(track, exploits) := {
	"metadata": {"labels": [sprintf("class:%s", [track])]},
	"limits": {"attacker_max_exploits": exploits},
	"network": {"egress": "deny"},
}

patched(p) := object.union(netplus, p)

with_router(p) := patched({"assets": {"containers": [learner, object.union(router, p), target]}})

# A reason is reported and the template is refused.
denied(inp, msg) if {
	msg in training.deny_reasons with input as inp
	not training.allow with input as inp
}

# --- allow ---------------------------------------------------------------------------------

test_allow_netplus_template if {
	training.allow with input as netplus
	count(training.deny_reasons) == 0 with input as netplus
}

test_allow_spec_minimal_netplus if training.allow with input as minimal("netplus", 0)

test_allow_spec_minimal_ccna if training.allow with input as minimal("ccna", 0)

test_allow_spec_minimal_cissp if training.allow with input as minimal("cissp", 5)

test_allow_configured_allowlist_profile if {
	inp := patched({"network": {"egress": "allowlist", "allowlist_profile": "pypi-mirror"}})
	training.allow with input as inp with data.frostgate.forge.config.allowlist_profiles as ["pypi-mirror"]
}

test_allow_cap_prefix_and_case_normalised if training.allow with input as with_router({"capabilities": ["cap_net_admin"]})

# --- track ---------------------------------------------------------------------------------

test_deny_missing_class_label if denied(
	patched({"metadata": {"labels": ["tier:foundation"]}}),
	"metadata.labels must contain one class:<track> label (tracks: ccna, cissp, netplus)",
)

test_deny_missing_metadata if denied(
	{"limits": {"attacker_max_exploits": 0}, "network": {"egress": "deny"}},
	"metadata.labels must contain one class:<track> label (tracks: ccna, cissp, netplus)",
)

test_deny_two_class_labels if denied(
	patched({"metadata": {"labels": ["class:netplus", "class:ccna"]}}),
	"metadata.labels has 2 class labels (class:ccna, class:netplus); exactly one is allowed",
)

test_deny_unknown_track if denied(
	patched({"metadata": {"labels": ["class:oscp"]}}),
	"unknown track oscp in label class:oscp (tracks: ccna, cissp, netplus)",
)

# --- exploits ------------------------------------------------------------------------------

test_deny_exploits_missing if denied(
	{"metadata": {"labels": ["class:netplus"]}, "limits": {}, "network": {"egress": "deny"}},
	"limits.attacker_max_exploits is required",
)

test_deny_exploits_not_a_number if denied(
	patched({"limits": {"attacker_max_exploits": "none"}}),
	"limits.attacker_max_exploits must be a number, got none",
)

test_deny_exploits_netplus if denied(minimal("netplus", 1), "limits.attacker_max_exploits 1 exceeds the netplus limit of 0")

test_deny_exploits_ccna if denied(minimal("ccna", 1), "limits.attacker_max_exploits 1 exceeds the ccna limit of 0")

test_deny_exploits_cissp if denied(minimal("cissp", 6), "limits.attacker_max_exploits 6 exceeds the cissp limit of 5")

# --- egress --------------------------------------------------------------------------------

test_deny_egress_missing if denied(
	{"metadata": {"labels": ["class:netplus"]}, "limits": {"attacker_max_exploits": 0}},
	"network.egress is required (set it to deny)",
)

test_deny_egress_open if denied(patched({"network": {"egress": "open"}}), "network.egress must be deny, got open")

test_deny_egress_allowlist_unconfigured if denied(
	patched({"network": {"egress": "allowlist", "allowlist_profile": "pypi-mirror"}}),
	"network.egress allowlist needs a configured allowlist_profile; pypi-mirror is not one (configured: none); use egress deny",
)

test_deny_egress_allowlist_other_profile if {
	inp := patched({"network": {"egress": "allowlist", "allowlist_profile": "github"}})
	msg := "network.egress allowlist needs a configured allowlist_profile; github is not one (configured: pypi-mirror); use egress deny"
	msg in training.deny_reasons with input as inp with data.frostgate.forge.config.allowlist_profiles as ["pypi-mirror"]
}

# --- ceilings ------------------------------------------------------------------------------

test_deny_limit_not_a_number if denied(patched({"limits": {"cpu": "two"}}), "limits.cpu must be a number, got two")

test_deny_limit_not_positive if denied(patched({"limits": {"memory_mb": 0}}), "limits.memory_mb must be positive, got 0")

test_deny_cpu_ceiling if denied(patched({"limits": {"cpu": 3}}), "limits.cpu 3 exceeds the netplus ceiling of 2")

test_deny_memory_ceiling if denied(patched({"limits": {"memory_mb": 4096}}), "limits.memory_mb 4096 exceeds the netplus ceiling of 2048")

test_deny_timeout_ceiling if denied(
	patched({"limits": {"timeout_minutes": 121}}),
	"limits.timeout_minutes 121 exceeds the netplus ceiling of 120",
)

test_ccna_ceilings_are_higher if training.allow with input as patched({
	"metadata": {"labels": ["class:ccna"]},
	"limits": {"cpu": 4, "memory_mb": 4096, "timeout_minutes": 180},
})

test_deny_pids if denied(patched({"limits": {"pids": 4096}}), "limits.pids must be a number from 1 to 1024, got 4096")

test_deny_containers_not_a_list if denied(patched({"assets": {"containers": "all"}}), "assets.containers must be a list of containers")

test_deny_containers_empty if denied(patched({"assets": {"containers": []}}), "assets.containers must not be empty")

test_deny_container_count if denied(
	patched({"assets": {"containers": [learner, router, target, learner, router, target, learner]}}),
	"assets.containers has 7 containers; the netplus ceiling is 6",
)

test_deny_success_criteria_empty if denied(patched({"successCriteria": []}), "successCriteria must be a non-empty list")

# --- containers ----------------------------------------------------------------------------

test_deny_container_not_an_object if denied(
	patched({"assets": {"containers": [learner, "router"]}}),
	"assets.containers[1] must be an object",
)

test_deny_image_missing if denied(
	patched({"assets": {"containers": [learner, object.remove(router, ["image"])]}}),
	"container router: image is required",
)

test_deny_image_not_forge if denied(
	with_router({"image": "docker.io/library/nginx:latest"}),
	"container router: image docker.io/library/nginx:latest is not allowed (images must start with forge/)",
)

test_deny_read_only_false if denied(with_router({"read_only": false}), "container router: read_only must be true")

test_deny_read_only_missing if denied(
	patched({"assets": {"containers": [object.remove(router, ["read_only"])]}}),
	"container router: read_only must be true",
)

test_deny_unnamed_container if denied(
	patched({"assets": {"containers": [learner, object.remove(object.union(router, {"read_only": false}), ["name"])]}}),
	"container #2: read_only must be true",
)

test_deny_privileged if denied(with_router({"privileged": true}), "container router: privileged containers are never allowed")

test_deny_capabilities_not_a_list if denied(with_router({"capabilities": "NET_ADMIN"}), "container router: capabilities must be a list of names")

test_deny_sys_admin if denied(
	with_router({"capabilities": ["SYS_ADMIN"]}),
	"container router: capability SYS_ADMIN is never allowed (allowed: NET_ADMIN, NET_RAW)",
)

test_deny_cap_all if denied(
	with_router({"capabilities": ["ALL"]}),
	"container router: capability ALL is never allowed (allowed: NET_ADMIN, NET_RAW)",
)

test_deny_cap_not_allowlisted if denied(
	with_router({"capabilities": ["SYS_PTRACE"]}),
	"container router: capability SYS_PTRACE is not allowed on track netplus (allowed: NET_ADMIN, NET_RAW)",
)

test_deny_cap_not_a_name if denied(with_router({"capabilities": [7]}), "container router: capability 7 must be a name")

# --- addressing ----------------------------------------------------------------------------

test_deny_subnets_not_a_list if denied(patched({"network": {"subnets": "10.10.0.0/24"}}), "network.subnets must be a list")

test_deny_subnet_bad_cidr if denied(
	patched({"network": {"subnets": [{"name": "learner_net", "cidr": "10.10.0.0/33"}, {"name": "target_net", "cidr": "10.20.0.0/24"}]}}),
	"network.subnets[0] (learner_net): cidr 10.10.0.0/33 is not a valid IPv4 CIDR",
)

test_deny_subnet_public if denied(
	patched({"network": {"subnets": [{"name": "learner_net", "cidr": "8.8.8.0/24"}, {"name": "target_net", "cidr": "10.20.0.0/24"}]}}),
	"network.subnets learner_net: cidr 8.8.8.0/24 is not inside a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)",
)

test_deny_subnet_duplicate if denied(
	patched({"network": {"subnets": [
		{"name": "learner_net", "cidr": "10.10.0.0/24"},
		{"name": "target_net", "cidr": "10.20.0.0/24"},
		{"name": "target_net", "cidr": "10.30.0.0/24"},
	]}}),
	"network.subnets: subnet target_net is declared more than once",
)

test_deny_subnet_unnamed if denied(
	patched({"network": {"subnets": [{"cidr": "10.10.0.0/24"}, {"name": "target_net", "cidr": "10.20.0.0/24"}]}}),
	"network.subnets[0]: name is required",
)

test_deny_undeclared_network if denied(
	with_router({"networks": ["learner_net", "dmz"]}),
	"container router: network dmz is not a subnet declared in network.subnets",
)

test_deny_attachment_shape if denied(
	with_router({"networks": ["learner_net", 42]}),
	"container router: network attachment 42 must be a subnet name or {name, address}",
)

test_deny_address_outside_subnet if denied(
	with_router({"networks": [{"name": "target_net", "address": "10.10.0.9"}]}),
	"container router: address 10.10.0.9 is outside subnet target_net (10.20.0.0/24)",
)

# Point-to-point links: a /31 (RFC 3021) uses both of its addresses, a /30 its two hosts.
test_allow_point_to_point_links if {
	inp := patched({
		"network": {"egress": "deny", "subnets": [
			{"name": "learner_net", "cidr": "10.10.0.0/31"},
			{"name": "target_net", "cidr": "10.20.0.4/30"},
		]},
		"assets": {"containers": [
			object.union(learner, {"networks": [{"name": "learner_net", "address": "10.10.0.0"}]}),
			object.union(router, {"networks": [{"name": "learner_net", "address": "10.10.0.1"}, {"name": "target_net", "address": "10.20.0.5"}]}),
			object.union(target, {"networks": [{"name": "target_net", "address": "10.20.0.6"}]}),
		]},
	})
	training.allow with input as inp
}

# An unaddressed attachment (a DHCP client's interface) has nothing to check; a misspelling does.
test_allow_unaddressed_attachment if training.allow with input as with_router({"networks": [{"name": "learner_net", "address": "none"}, {"name": "target_net", "address": "10.20.0.1"}]})

test_deny_misspelt_unaddressed_attachment if denied(
	with_router({"networks": [{"name": "target_net", "address": "None"}]}),
	"container router: address None on network target_net is not an IPv4 address or none",
)

# Dual-stack: unique local prefixes and addresses pass; anything routable is refused.
test_allow_dual_stack if {
	inp := patched({
		"network": {"egress": "deny", "subnets": [
			{"name": "learner_net", "cidr": "10.10.0.0/24", "cidr6": "fd00:10::/64"},
			{"name": "target_net", "cidr": "10.20.0.0/24", "gateway": "10.20.0.1"},
		]},
		"assets": {"containers": [
			object.union(learner, {"networks": [{"name": "learner_net", "address6": "none"}]}),
			object.union(router, {"networks": [{"name": "learner_net", "address6": "fd00:10::1"}, {"name": "target_net", "address": "10.20.0.1"}]}),
			target,
		]},
	})
	training.allow with input as inp
}

test_deny_routable_cidr6 if denied(
	patched({"network": {"egress": "deny", "subnets": [{"name": "learner_net", "cidr": "10.10.0.0/24", "cidr6": "2001:db8::/64"}, {"name": "target_net", "cidr": "10.20.0.0/24"}]}}),
	"network.subnets[0] (learner_net): cidr6 2001:db8::/64 is not a unique local IPv6 prefix (fd00::/8)",
)

test_deny_routable_address6 if denied(
	with_router({"networks": [{"name": "target_net", "address": "10.20.0.1", "address6": "2001:db8::1"}]}),
	"container router: address6 2001:db8::1 on network target_net is not a unique local IPv6 address (fd00::/8) or none",
)

test_deny_networks_not_a_list if denied(with_router({"networks": "learner_net"}), "container router: networks must be a list of subnet names")

test_deny_subnet_not_an_object if denied(
	patched({"network": {"subnets": ["10.10.0.0/24"]}}),
	"network.subnets[0] must be an object {name, cidr}",
)

# --- malformed input: a deny with a reason, never an evaluation error ----------------------

# An unknown track is reported once; its containers' capabilities are not judged against a
# track that has no list.
test_unknown_track_is_the_only_reason if {
	inp := patched({"metadata": {"labels": ["class:oscp"]}})
	training.deny_reasons == {"unknown track oscp in label class:oscp (tracks: ccna, cissp, netplus)"} with input as inp
}

test_deny_container_null if denied(
	patched({"assets": {"containers": [learner, null]}}),
	"assets.containers[1] must be an object",
)

test_deny_subnet_without_cidr if denied(
	patched({"network": {"subnets": [{"name": "learner_net"}, {"name": "target_net", "cidr": "10.20.0.0/24"}]}}),
	"network.subnets[0] (learner_net): cidr null is not a valid IPv4 CIDR",
)

test_deny_address_not_an_address if denied(
	with_router({"networks": [{"name": "target_net", "address": "10.20.0.300"}]}),
	"container router: address 10.20.0.300 on network target_net is not an IPv4 address or none",
)

test_deny_containers_of_other_types if denied(
	patched({"assets": {"containers": [learner, "router", 7]}}),
	"assets.containers[2] must be an object",
)
