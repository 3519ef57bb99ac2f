-- FrostGate Forge state, first schema. Times are integer milliseconds since the Unix epoch (UTC)
-- so that comparisons in SQL are exact and portable to PostgreSQL (BIGINT).

CREATE TABLE scenarios (
    scenario_id TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL,
    owner_sub   TEXT NOT NULL,
    track       TEXT NOT NULL,
    template    TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    status      TEXT NOT NULL
        CHECK (status IN ('pending', 'creating', 'running', 'completed', 'failed', 'timeout')),
    error       TEXT,
    network_id  TEXT,
    -- JSON array of container names
    containers  TEXT NOT NULL DEFAULT '[]',
    access_url  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    started_at  INTEGER,
    ended_at    INTEGER,
    expires_at  INTEGER NOT NULL
);
-- One request_id per tenant yields one scenario (design.md §6), whatever the idempotency table says.
CREATE UNIQUE INDEX scenarios_tenant_request ON scenarios (tenant_id, request_id);
CREATE INDEX scenarios_tenant_status ON scenarios (tenant_id, status);
CREATE INDEX scenarios_status ON scenarios (status);

-- Active (pending, creating, running) scenarios per tenant, kept in step with `scenarios`: the
-- insert counts up (guarded by the quota, in the insert's transaction), the trigger below counts
-- down. The quota check is O(1) and exact under concurrency.
CREATE TABLE tenant_usage (
    tenant_id TEXT PRIMARY KEY NOT NULL,
    active    INTEGER NOT NULL DEFAULT 0 CHECK (active >= 0)
);

-- A scenario that reaches a final status stops counting against its tenant's quota.
CREATE TRIGGER scenarios_activity_end AFTER UPDATE OF status ON scenarios
WHEN old.status IN ('pending', 'creating', 'running')
     AND new.status NOT IN ('pending', 'creating', 'running')
BEGIN
    UPDATE tenant_usage SET active = active - 1 WHERE tenant_id = new.tenant_id AND active > 0;
END;

CREATE TABLE idempotency_keys (
    tenant_id     TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    status_code   INTEGER,
    response_body BLOB,
    created_at    INTEGER NOT NULL,
    -- an in-flight key whose owner has not finished by then is presumed dead and may be taken over
    locked_until  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

CREATE TABLE billing_ledger (
    event_id     TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    scenario_id  TEXT NOT NULL REFERENCES scenarios (scenario_id),
    track        TEXT NOT NULL,
    template     TEXT NOT NULL,
    tier         TEXT NOT NULL,
    plan         TEXT NOT NULL,
    amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
    currency     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (tenant_id, request_id)
);
CREATE INDEX billing_ledger_created ON billing_ledger (created_at);

CREATE TABLE outbox (
    event_id        TEXT PRIMARY KEY NOT NULL,
    topic           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER
);
CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at);
