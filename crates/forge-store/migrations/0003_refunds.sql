-- Refunds (issue 16): a charged scenario that fails before it ever runs gets one refund row in
-- the ledger, a negative amount under the same tenant and request as its charge. The ledger
-- stays unique per (tenant_id, request_id) for charges, and at most one refund joins each.
-- SQLite cannot drop a table constraint, so the table is rebuilt (sqlx runs this in a
-- transaction; nothing references billing_ledger, so the rebuild leaves foreign keys intact).

CREATE TABLE billing_ledger_v3 (
    event_id     TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    scenario_id  TEXT NOT NULL REFERENCES scenarios (scenario_id),
    track        TEXT NOT NULL,
    template     TEXT NOT NULL,
    tier         TEXT NOT NULL,
    plan         TEXT NOT NULL,
    -- a charge, or the refund of the request's charge
    kind         TEXT NOT NULL DEFAULT 'charge' CHECK (kind IN ('charge', 'refund')),
    amount_cents INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    -- why a refund was made (the scenario's failure); NULL for charges
    reason       TEXT,
    CHECK ((kind = 'charge' AND amount_cents >= 0 AND reason IS NULL)
           OR (kind = 'refund' AND amount_cents <= 0)),
    UNIQUE (tenant_id, request_id, kind)
);
INSERT INTO billing_ledger_v3 (event_id, tenant_id, request_id, scenario_id, track, template,
                               tier, plan, kind, amount_cents, currency, created_at)
SELECT event_id, tenant_id, request_id, scenario_id, track, template, tier, plan, 'charge',
       amount_cents, currency, created_at
FROM billing_ledger;
DROP TABLE billing_ledger;
ALTER TABLE billing_ledger_v3 RENAME TO billing_ledger;
CREATE INDEX billing_ledger_created ON billing_ledger (created_at);
-- refund: the charge of a scenario
CREATE INDEX billing_ledger_scenario ON billing_ledger (scenario_id);
