-- Environments of a project (GitLab's Environments API). An environment
-- may be linked to a cluster through an agent: the agent, a namespace and
-- a Flux object. Deleting the agent unlinks its environments.
CREATE TABLE environments (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    external_url TEXT,
    description TEXT,
    tier TEXT NOT NULL,
    state TEXT NOT NULL,
    auto_stop_setting TEXT NOT NULL,
    cluster_agent_id BIGINT REFERENCES cluster_agents(id) ON DELETE SET NULL,
    kubernetes_namespace TEXT,
    flux_resource_path TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (project_id, name),
    UNIQUE (project_id, slug)
);
