-- CI jobs registered by an external CI system, each with a job token
-- (stored as a digest) that is valid until the job ends.
CREATE TABLE ci_jobs (
    job_id BIGINT PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    pipeline_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    ref_name TEXT NOT NULL,
    ref_protected BIGINT NOT NULL DEFAULT 0,
    environment_slug TEXT,
    environment_tier TEXT,
    token_digest TEXT NOT NULL UNIQUE,
    expires_at TEXT NOT NULL,
    finished BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
