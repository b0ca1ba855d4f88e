-- Every request through the Kubernetes API proxy: when, who, through which
-- agent as whom, what, and how it ended (watches and upgrades at their
-- end). No foreign key: an agent's trail outlives the agent until the
-- retention (kas --audit-retention-days) removes it.
CREATE TABLE proxy_audit_events (
    id BIGSERIAL PRIMARY KEY,
    agent_id BIGINT NOT NULL,
    started_at TEXT NOT NULL,
    credential TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    username TEXT NOT NULL,
    project_id BIGINT,
    pipeline_id BIGINT,
    job_id BIGINT,
    impersonated TEXT,
    verb TEXT NOT NULL,
    path TEXT NOT NULL,
    status BIGINT NOT NULL,
    duration_us BIGINT NOT NULL
);
CREATE INDEX proxy_audit_events_by_agent ON proxy_audit_events (agent_id, id);
CREATE INDEX proxy_audit_events_by_time ON proxy_audit_events (started_at);
