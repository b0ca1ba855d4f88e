-- Where kas dials a receptive agent (GitLab's agent URL configurations):
-- one per agent. Private keys (the Ed25519 key that signs kas's JWTs, or an
-- mTLS client key) are stored sealed with the data directory's key, never
-- in usable form.
CREATE TABLE url_configurations (
    id BIGSERIAL PRIMARY KEY,
    agent_id BIGINT NOT NULL UNIQUE REFERENCES cluster_agents(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    ca_cert TEXT,
    tls_host TEXT,
    client_cert TEXT,
    client_key_sealed TEXT,
    public_key TEXT,
    private_key_sealed TEXT,
    created_by_user_id BIGINT,
    created_at TEXT NOT NULL
);
