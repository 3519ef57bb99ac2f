-- Refunds (issue 16), as ../0003_refunds.sql (SQLite): a charged scenario that fails before it
-- ever runs gets one refund row, a negative amount under the same tenant and request as its
-- charge. Charges stay unique per (tenant_id, request_id); at most one refund joins each.

ALTER TABLE billing_ledger
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'charge' CHECK (kind IN ('charge', 'refund')),
    ADD COLUMN reason TEXT,
    DROP CONSTRAINT billing_ledger_amount_cents_check,
    DROP CONSTRAINT billing_ledger_tenant_id_request_id_key,
    ADD CONSTRAINT billing_ledger_amount_by_kind
        CHECK ((kind = 'charge' AND amount_cents >= 0 AND reason IS NULL)
               OR (kind = 'refund' AND amount_cents <= 0)),
    ADD CONSTRAINT billing_ledger_tenant_request_kind UNIQUE (tenant_id, request_id, kind);
-- refund: the charge of a scenario
CREATE INDEX billing_ledger_scenario ON billing_ledger (scenario_id);
