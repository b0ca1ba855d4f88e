-- Agent tokens revoked and agents deleted, in order, for the kas
-- replicas that hold their connections: each reads what came after the
-- last row it saw (one query a second, whatever the number of agents)
-- and closes those connections. Rows are kept for a few minutes.
CREATE TABLE revocations (
    id BIGSERIAL PRIMARY KEY,
    token_id BIGINT,
    agent_id BIGINT,
    created_at TEXT NOT NULL
);
