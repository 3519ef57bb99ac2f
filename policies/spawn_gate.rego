# Spawn gate: may this caller start a lab on this track now?
#
# Input:
#   {subject: {sub, tenant_id, roles: [..]},
#    tenant: {id, plan, entitled_tracks: [..], max_active_scenarios, active_scenarios} | null,
#    request: {track, template?}}
#
# The caller's tenant_id claim must name its own tenant record (spec: Tenant Boundaries and
# Claims), the roles claim must include forge.spawn, the tenant must be entitled to the track,
# and the tenant must be under its concurrent-lab quota.
#
# This gate sits on the spawn API's hot path, so it reads `input` directly instead of through
# helper rules: every rule reference costs the interpreter a lookup.
#
# Written to decide alike under the embedded engine and OPA's own (scripts/check-opa-parity.sh):
# a `not` never negates a call on a field that may be missing (OPA fails the whole expression
# where regorus lets it hold), so such fields are read through object.get with a default, and
# object.get is only given objects.
# No body starts from `x := <a reference that may be undefined>`: regorus's VM, which runs the
# shipped gates, lets such an assignment hold where OPA and the interpreter fail the body, so
# presence is tested with object.keys or read through object.get with a default.
package frostgate.forge.spawn

import rego.v1

default allow := false

allow if {
	count(deny_reasons) == 0
	has_role
	object.get(input, ["tenant", "id"], null) == input.subject.tenant_id
	entitled
	input.tenant.active_scenarios < input.tenant.max_active_scenarios
}

has_role if {
	is_array(input.subject.roles)
	"forge.spawn" in input.subject.roles
}

entitled if {
	is_array(input.tenant.entitled_tracks)
	input.request.track in input.tenant.entitled_tracks
}

default entitled_text := "none"

entitled_text := concat(", ", sort([t | some t in input.tenant.entitled_tracks; is_string(t)])) if {
	is_array(input.tenant.entitled_tracks)
	count(input.tenant.entitled_tracks) > 0
}

non_empty_string(s) if {
	is_string(s)
	s != ""
}

deny_reasons contains "subject is required" if {
	not is_object(object.get(input, "subject", null))
}

deny_reasons contains "subject.roles must include forge.spawn" if {
	is_object(input.subject)
	not has_role
}

deny_reasons contains "subject.tenant_id is required" if {
	is_object(input.subject)
	not non_empty_string(object.get(input.subject, "tenant_id", null))
}

deny_reasons contains msg if {
	non_empty_string(input.subject.tenant_id)
	not is_object(object.get(input, "tenant", null))
	msg := sprintf("tenant %s is unknown (no tenant record)", [input.subject.tenant_id])
}

# A token for one tenant must never act on another tenant's record.
deny_reasons contains msg if {
	non_empty_string(input.subject.tenant_id)
	is_object(input.tenant)
	id := object.get(input.tenant, "id", null)
	id != input.subject.tenant_id
	msg := sprintf("subject tenant %s does not match tenant record %v", [input.subject.tenant_id, id])
}

deny_reasons contains "request.track is required" if {
	not non_empty_string(object.get(input, ["request", "track"], null))
}

deny_reasons contains msg if {
	non_empty_string(input.request.track)
	is_object(input.tenant)
	not entitled
	msg := sprintf("tenant %v is not entitled to track %s (entitled: %s)", [object.get(input.tenant, "id", null), input.request.track, entitled_text])
}

deny_reasons contains msg if {
	is_object(input.tenant)
	some field in ["max_active_scenarios", "active_scenarios"]
	not is_number(object.get(input.tenant, field, null))
	msg := sprintf("tenant.%s must be a number", [field])
}

deny_reasons contains msg if {
	is_number(input.tenant.active_scenarios)
	is_number(input.tenant.max_active_scenarios)
	input.tenant.active_scenarios >= input.tenant.max_active_scenarios
	msg := sprintf("tenant %v has %v active scenarios; the %v plan allows %v", [object.get(input.tenant, "id", null), input.tenant.active_scenarios, object.get(input.tenant, "plan", "current"), input.tenant.max_active_scenarios])
}
