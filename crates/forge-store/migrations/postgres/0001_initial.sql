-- FrostGate Forge state on PostgreSQL, first schema: the tables of ../0001_initial.sql (SQLite)
-- with PostgreSQL's types. Times are timestamptz; the store writes them at millisecond precision,
-- as SQLite keeps them, so both backends return the same instants. JSON is jsonb, bytes bytea.
-- Many replicas share one database: every invariant below holds under concurrent transactions
-- (unique indexes, row locks taken by conditional UPDATEs and upserts), not by a single writer.

CREATE TABLE scenarios (
    scenario_id TEXT PRIMARY KEY,
    -- insertion order, to list scenarios created in the same millisecond oldest first
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    tenant_id   TEXT NOT NULL,
    owner_sub   TEXT NOT NULL,
    track       TEXT NOT NULL,
    template    TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    status      TEXT NOT NULL
        CHECK (status IN ('pending', 'creating', 'running', 'completed', 'failed', 'timeout')),
    error       TEXT,
    network_id  TEXT,
    -- array of container names
    containers  JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(containers) = 'array'),
    access_url  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    started_at  TIMESTAMPTZ,
    ended_at    TIMESTAMPTZ,
    expires_at  TIMESTAMPTZ NOT NULL
);
-- One request_id per tenant yields one scenario (design.md §6): a concurrent insert of the same
-- pair waits on this index for the first one's transaction, then sees its row.
CREATE UNIQUE INDEX scenarios_tenant_request ON scenarios (tenant_id, request_id);
-- list_by_status: filter and order in one index
CREATE INDEX scenarios_status_created ON scenarios (status, created_at, seq);

-- Active (pending, creating, running) scenarios per tenant, kept in step with `scenarios`: the
-- insert counts up with a guarded upsert in its transaction (the row lock makes concurrent
-- spawns of one tenant take turns, so the quota is exact), the trigger below counts down.
CREATE TABLE tenant_usage (
    tenant_id TEXT PRIMARY KEY,
    active    BIGINT NOT NULL DEFAULT 0 CHECK (active >= 0)
);

-- A scenario that reaches a final status stops counting against its tenant's quota, in the
-- transition's own transaction, whoever runs the UPDATE.
CREATE FUNCTION scenarios_activity_end() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tenant_usage SET active = active - 1
    WHERE tenant_id = NEW.tenant_id AND active > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER scenarios_activity_end AFTER UPDATE OF status ON scenarios
FOR EACH ROW
WHEN (OLD.status IN ('pending', 'creating', 'running')
      AND NEW.status NOT IN ('pending', 'creating', 'running'))
EXECUTE FUNCTION scenarios_activity_end();

CREATE TABLE idempotency_keys (
    tenant_id     TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    status_code   INTEGER,
    response_body BYTEA,
    created_at    TIMESTAMPTZ NOT NULL,
    -- an in-flight key whose owner has not finished by then is presumed dead and may be taken over
    locked_until  TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
-- purge_expired
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

CREATE TABLE billing_ledger (
    event_id     TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    scenario_id  TEXT NOT NULL REFERENCES scenarios (scenario_id),
    track        TEXT NOT NULL,
    template     TEXT NOT NULL,
    tier         TEXT NOT NULL,
    plan         TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents >= 0),
    currency     TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, request_id)
);
-- ledger queries: by period across tenants, by tenant and period; both in ledger order
CREATE INDEX billing_ledger_created ON billing_ledger (created_at, event_id);
CREATE INDEX billing_ledger_tenant_created ON billing_ledger (tenant_id, created_at, event_id);

CREATE TABLE outbox (
    event_id        TEXT PRIMARY KEY,
    topic           TEXT NOT NULL,
    payload         JSONB NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    delivered_at    TIMESTAMPTZ
);
-- due_outbox and outbox_backlog look only at undelivered items, a small part of the table
CREATE INDEX outbox_due ON outbox (next_attempt_at, created_at) WHERE delivered_at IS NULL;
