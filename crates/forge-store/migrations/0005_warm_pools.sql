-- Warm pools (issue 13): labs launched ahead of time per template, taken by spawns, and the
-- claims counted per template. A warm lab's id is the scenario id its spawn will get.

CREATE TABLE warm_labs (
    scenario_id     TEXT PRIMARY KEY NOT NULL,
    template        TEXT NOT NULL,
    -- the template's content digest at launch: a changed template takes no old lab
    template_digest TEXT NOT NULL,
    host_id         TEXT NOT NULL,
    network_id      TEXT NOT NULL,
    -- JSON array of container names
    containers      TEXT NOT NULL,
    ready_at        INTEGER NOT NULL
);
CREATE INDEX warm_labs_take ON warm_labs (template, template_digest, ready_at);
CREATE INDEX warm_labs_host ON warm_labs (host_id);

CREATE TABLE pool_claims (
    template TEXT PRIMARY KEY NOT NULL,
    hits     INTEGER NOT NULL DEFAULT 0,
    misses   INTEGER NOT NULL DEFAULT 0
);
