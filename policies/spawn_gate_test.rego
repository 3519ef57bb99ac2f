package frostgate.forge.spawn_test

import data.frostgate.forge.spawn
import rego.v1

good := {
	"subject": {"sub": "client-1", "tenant_id": "acme", "roles": ["forge.spawn", "forge.score.read"]},
	"tenant": {"id": "acme", "plan": "team", "entitled_tracks": ["netplus", "ccna"], "max_active_scenarios": 3, "active_scenarios": 1},
	"request": {"track": "netplus"},
}

patched(p) := object.union(good, p)

denied(inp, msg) if {
	msg in spawn.deny_reasons with input as inp
	not spawn.allow with input as inp
}

test_allow_entitled_under_quota if {
	spawn.allow with input as good
	count(spawn.deny_reasons) == 0 with input as good
}

test_allow_with_template if spawn.allow with input as patched({"request": {"track": "ccna", "template": "ccna-vlan-lab"}})

test_deny_subject_missing if denied(object.remove(good, ["subject"]), "subject is required")

test_deny_role_missing if denied(patched({"subject": {"roles": ["forge.score.read"]}}), "subject.roles must include forge.spawn")

test_deny_roles_not_a_list if denied(patched({"subject": {"roles": "forge.spawn"}}), "subject.roles must include forge.spawn")

test_deny_tenant_id_missing if denied(patched({"subject": {"tenant_id": ""}}), "subject.tenant_id is required")

test_deny_tenant_unknown if denied(patched({"tenant": null}), "tenant acme is unknown (no tenant record)")

test_deny_cross_tenant if denied(patched({"subject": {"tenant_id": "evil"}}), "subject tenant evil does not match tenant record acme")

test_deny_track_missing if denied(patched({"request": {"track": ""}}), "request.track is required")

test_deny_track_not_entitled if denied(
	patched({"request": {"track": "cissp"}}),
	"tenant acme is not entitled to track cissp (entitled: ccna, netplus)",
)

test_deny_no_entitlements if denied(
	patched({"tenant": {"entitled_tracks": []}}),
	"tenant acme is not entitled to track netplus (entitled: none)",
)

test_deny_quota_not_a_number if denied(
	patched({"tenant": {"max_active_scenarios": "unlimited"}}),
	"tenant.max_active_scenarios must be a number",
)

test_deny_active_not_a_number if denied(
	patched({"tenant": {"active_scenarios": null}}),
	"tenant.active_scenarios must be a number",
)

test_deny_quota_exhausted if denied(
	patched({"tenant": {"active_scenarios": 3}}),
	"tenant acme has 3 active scenarios; the team plan allows 3",
)

test_deny_tenant_record_without_id if denied(
	patched({"tenant": {"id": null}}),
	"subject tenant acme does not match tenant record null",
)

test_deny_entitlements_not_a_list if denied(
	patched({"tenant": {"entitled_tracks": "netplus"}}),
	"tenant acme is not entitled to track netplus (entitled: none)",
)

# --- malformed input: a deny with a reason, never an evaluation error ----------------------

test_deny_subject_not_an_object if denied(patched({"subject": "client-1"}), "subject is required")

test_deny_tenant_not_an_object if denied(patched({"tenant": "acme"}), "tenant acme is unknown (no tenant record)")

test_deny_request_missing if denied(object.remove(good, ["request"]), "request.track is required")

test_deny_track_not_a_string if denied(patched({"request": {"track": ["netplus"]}}), "request.track is required")
