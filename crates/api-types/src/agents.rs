//! Cluster agents, their tokens, connections and configuration.

use glagent_core::agent_config::AgentConfig;
use glagent_proto::AgentInfo;
use serde::{Deserialize, Serialize};

/// The project an agent is registered in, as GitLab embeds it in an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigProject {
    pub created_at: String,
    pub description: String,
    pub id: i64,
    pub name: String,
    pub name_with_namespace: String,
    pub path: String,
    pub path_with_namespace: String,
}

/// A cluster agent, as GitLab's Agents API shows one
/// (`/projects/:id/cluster_agents`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub config_project: ConfigProject,
    pub created_at: String,
    pub created_by_user_id: Option<i64>,
    pub id: i64,
    /// Whether kas dials the agent (it has a URL configuration).
    pub is_receptive: bool,
    pub name: String,
}

/// Where kas dials a receptive agent, as GitLab's URL configurations API
/// shows it; certificates and the public key are base64-encoded (the
/// public key is the raw 32-byte Ed25519 key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlConfiguration {
    pub agent_id: i64,
    pub ca_cert: Option<String>,
    pub client_cert: Option<String>,
    pub id: i64,
    pub public_key: Option<String>,
    pub tls_host: Option<String>,
    pub url: String,
}

/// GitLab's agent token statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentTokenStatus {
    Active,
    Revoked,
}

/// An agent token, as GitLab's Agent Tokens API shows one (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentToken {
    pub agent_id: i64,
    pub created_at: String,
    pub created_by_user_id: Option<i64>,
    pub description: Option<String>,
    pub id: i64,
    /// Only in `GET` of one token, where it is `null` or a time; lists
    /// leave it out, as GitLab does.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::present"
    )]
    pub last_used_at: Option<Option<String>>,
    pub name: String,
    pub status: AgentTokenStatus,
}

/// An agent token just created: the only time `token` is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedAgentToken {
    pub agent_id: i64,
    pub created_at: String,
    pub created_by_user_id: Option<i64>,
    pub description: Option<String>,
    pub id: i64,
    /// glagent's extension: the Helm commands that install the agent with
    /// this token.
    pub install_command: String,
    pub name: String,
    pub status: AgentTokenStatus,
    /// The secret.
    pub token: String,
}

/// glagent's extension (GitLab has this in GraphQL): one live connection
/// of an agent to a kas replica
/// (`GET /projects/:id/cluster_agents/:agent_id/connections`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub agent_id: i64,
    pub connected_at: String,
    /// The agent process's id: the same on every connection of one pod.
    pub connection_id: u64,
    /// What the agent reported about itself, once it has.
    #[serde(serialize_with = "crate::sorted_keys")]
    pub metadata: Option<AgentInfo>,
    /// The agent token the connection was made with.
    #[serde(default)]
    pub token_id: i64,
    pub warnings: Vec<ConnectionWarning>,
}

/// Why a connection needs attention: `{"version": {"message": ...}}` or
/// `{"mixed_versions": {"message": ...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionWarning {
    /// The agent's version and kas's are too far apart.
    Version { message: String },
    /// The agent's pods run different versions.
    MixedVersions { message: String },
}

impl ConnectionWarning {
    pub fn message(&self) -> &str {
        match self {
            ConnectionWarning::Version { message } | ConnectionWarning::MixedVersions { message } => message,
        }
    }
}

/// glagent's extension: how to install an agent
/// (`GET /projects/:id/cluster_agents/:agent_id/install_command`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallCommand {
    pub agent_id: i64,
    pub agent_version: String,
    /// kas's own CA (PEM), when it uses one.
    pub ca_cert: Option<String>,
    pub chart_repository: String,
    /// The Helm commands, with a placeholder for the token.
    pub command: String,
    pub kas_address: String,
}

/// glagent's extension: the agent's configuration file as parsed from the
/// default branch, or the error that keeps it from being used
/// (`GET /projects/:id/cluster_agents/:agent_id/configuration`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentConfiguration {
    pub agent_id: i64,
    /// The project's default branch.
    pub branch: String,
    /// `null` while the branch does not exist.
    pub commit_id: Option<String>,
    /// The configuration in use when `valid` (a missing file means the
    /// defaults), else `null`.
    #[serde(serialize_with = "crate::sorted_keys")]
    pub config: Option<AgentConfig>,
    /// Why the file is not valid, else `null`.
    pub error: Option<ConfigurationError>,
    pub file_exists: bool,
    /// `.gitlab/agents/<agent name>/config.yaml`.
    pub path: String,
    pub valid: bool,
}

/// Why a configuration file was refused, and where (1-based), when known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigurationError {
    pub column: Option<usize>,
    pub line: Option<usize>,
    pub message: String,
}

/// glagent's extension: one request through the Kubernetes API proxy to an
/// agent (`GET /projects/:id/cluster_agents/:agent_id/audit_events`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub agent_id: i64,
    /// The CI job behind a job's token.
    pub ci_job: Option<AuditJob>,
    /// `personal_access_token`, `session_cookie` or `ci_job`.
    pub credential: String,
    /// Until the response ended (a watch or an upgrade: until it closed).
    pub duration_ms: f64,
    pub id: i64,
    /// The user kas imposed (`gitlab:user:...`, `gitlab:ci_job:...` or a
    /// configured identity); `null`: the agent's own service account.
    pub impersonated_as: Option<String>,
    /// The API server path, without the query.
    pub path: String,
    /// When the request arrived.
    pub started_at: String,
    /// The status the client received (101 for an upgrade).
    pub status: i64,
    pub user: AuditUser,
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, `connect`, ...).
    pub verb: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditUser {
    pub id: i64,
    pub username: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditJob {
    pub id: i64,
    pub pipeline_id: i64,
    pub project_id: i64,
}
