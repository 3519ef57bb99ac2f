-- What instructors see of live labs (issue 15): the last check of each lab, and the tenant's
-- labs newest first without a scan.

-- JSON of forge_store::CheckSummary: when, passed of total, the weighted score, per criterion.
ALTER TABLE scenarios ADD COLUMN last_check TEXT;
CREATE INDEX scenarios_tenant_created ON scenarios (tenant_id, created_at);
