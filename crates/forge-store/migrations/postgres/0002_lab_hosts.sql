-- Lab hosts (distributed mode, docs/design.md §3), as ../0002_lab_hosts.sql (SQLite): which
-- host runs a scenario's lab, and the lease each host renews while it is alive.

ALTER TABLE scenarios ADD COLUMN host_id TEXT;
CREATE INDEX scenarios_host_status ON scenarios (host_id, status);

CREATE TABLE lab_hosts (
    host_id          TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    runner_url       TEXT NOT NULL DEFAULT '',
    capacity         INTEGER NOT NULL CHECK (capacity >= 0),
    started_at       TIMESTAMPTZ NOT NULL,
    heartbeat_at     TIMESTAMPTZ NOT NULL,
    lease_expires_at TIMESTAMPTZ NOT NULL
);
