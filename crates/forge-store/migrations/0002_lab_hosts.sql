-- Lab hosts (distributed mode, docs/design.md §3): which host runs a scenario's lab, and the
-- lease each host renews while it is alive. A host whose lease expired has lost its labs.

-- The lab host that claimed the scenario (NULL while pending).
ALTER TABLE scenarios ADD COLUMN host_id TEXT;
CREATE INDEX scenarios_host_status ON scenarios (host_id, status);

CREATE TABLE lab_hosts (
    host_id          TEXT PRIMARY KEY NOT NULL,
    -- where the host's worker answers lab actions (check, exec, terminal)
    url              TEXT NOT NULL,
    -- where the host's playbook runner answers playbooks run in its labs
    runner_url       TEXT NOT NULL DEFAULT '',
    -- most labs the host runs at once
    capacity         INTEGER NOT NULL CHECK (capacity >= 0),
    -- when this run of the host started (a restart changes it)
    started_at       INTEGER NOT NULL,
    heartbeat_at     INTEGER NOT NULL,
    lease_expires_at INTEGER NOT NULL
);
