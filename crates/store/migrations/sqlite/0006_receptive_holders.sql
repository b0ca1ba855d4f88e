-- Which kas replica dials which receptive agent: exactly one at a time.
-- The holder renews its rows every second; a replica that dies stops
-- renewing, its rows expire and another replica takes them over.
CREATE TABLE receptive_holders (
    agent_id BIGINT PRIMARY KEY REFERENCES url_configurations(agent_id) ON DELETE CASCADE,
    replica_id TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
