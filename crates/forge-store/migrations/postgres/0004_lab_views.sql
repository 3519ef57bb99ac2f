-- What instructors see of live labs (issue 15), as ../0004_lab_views.sql (SQLite): the last
-- check of each lab, and the tenant's labs newest first without a scan.

ALTER TABLE scenarios ADD COLUMN last_check JSONB;
CREATE INDEX scenarios_tenant_created ON scenarios (tenant_id, created_at DESC, seq DESC);
