-- Warm pools (issue 13), as ../0005_warm_pools.sql (SQLite): labs launched ahead of time per
-- template, taken by spawns, and the claims counted per template.

CREATE TABLE warm_labs (
    scenario_id     TEXT PRIMARY KEY,
    template        TEXT NOT NULL,
    template_digest TEXT NOT NULL,
    host_id         TEXT NOT NULL,
    network_id      TEXT NOT NULL,
    containers      JSONB NOT NULL,
    ready_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX warm_labs_take ON warm_labs (template, template_digest, ready_at);
CREATE INDEX warm_labs_host ON warm_labs (host_id);

CREATE TABLE pool_claims (
    template TEXT PRIMARY KEY,
    hits     BIGINT NOT NULL DEFAULT 0,
    misses   BIGINT NOT NULL DEFAULT 0
);
