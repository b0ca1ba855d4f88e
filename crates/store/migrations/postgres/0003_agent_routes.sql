-- Which kas replica holds a connection of which agent, so that a replica
-- without one can forward proxied requests to a replica with one. Each
-- replica refreshes its rows every few seconds; rows of a replica that died
-- expire on their own.
CREATE TABLE agent_routes (
    agent_id BIGINT NOT NULL REFERENCES cluster_agents(id) ON DELETE CASCADE,
    replica_id TEXT NOT NULL,
    private_url TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (agent_id, replica_id)
);
