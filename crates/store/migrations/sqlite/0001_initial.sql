-- The initial schema. Secrets are stored only as SHA-256 digests.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    is_admin BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE TABLE personal_access_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    token_digest TEXT NOT NULL UNIQUE,
    expires_at TEXT,
    revoked BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    last_used_at TEXT
);

-- Groups and users' personal namespaces share one id space, as in GitLab.
CREATE TABLE namespaces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    full_path TEXT NOT NULL UNIQUE,
    parent_id BIGINT REFERENCES namespaces(id) ON DELETE CASCADE,
    owner_id BIGINT REFERENCES users(id) ON DELETE CASCADE,
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);

CREATE TABLE projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    full_path TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    default_branch TEXT NOT NULL DEFAULT 'main',
    creator_id BIGINT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE members (
    source_kind TEXT NOT NULL,
    source_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    access_level BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (source_kind, source_id, user_id)
);

CREATE TABLE cluster_agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_by_user_id BIGINT,
    created_at TEXT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE cluster_agent_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id BIGINT NOT NULL REFERENCES cluster_agents(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    token_digest TEXT NOT NULL UNIQUE,
    status BIGINT NOT NULL DEFAULT 0,
    created_by_user_id BIGINT,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE INDEX cluster_agent_tokens_agent ON cluster_agent_tokens (agent_id, status);

CREATE TABLE push_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    ref_name TEXT NOT NULL,
    before_sha TEXT NOT NULL,
    after_sha TEXT NOT NULL,
    user_id BIGINT,
    created_at TEXT NOT NULL
);
