-- An agent's activity, as its page lists it: registered, connected,
-- disconnected, token created or revoked, configuration error. At most
-- 200 kept per agent (the newest), as GitLab keeps.
CREATE TABLE agent_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id BIGINT NOT NULL REFERENCES cluster_agents(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX agent_events_by_agent ON agent_events (agent_id, id);
