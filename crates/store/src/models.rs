//! Rows as stored. Times are RFC 3339 strings in UTC.

use serde::Serialize;

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub email: String,
    pub is_admin: i64,
    pub created_at: String,
}

impl User {
    pub fn admin(&self) -> bool {
        self.is_admin != 0
    }
}

#[derive(Clone, Debug)]
pub struct NewUser {
    pub username: String,
    pub name: String,
    pub email: String,
    pub is_admin: bool,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PersonalAccessToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub scopes: String,
    pub token_digest: String,
    pub expires_at: Option<String>,
    pub revoked: i64,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

impl PersonalAccessToken {
    pub fn scope_list(&self) -> Vec<String> {
        self.scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.split(',').any(|s| s == scope)
    }
}

#[derive(Clone, Debug)]
pub struct NewPersonalAccessToken {
    pub user_id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    pub token_digest: String,
    pub expires_at: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceKind {
    User,
    Group,
}

impl NamespaceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceKind::User => "user",
            NamespaceKind::Group => "group",
        }
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Namespace {
    pub id: i64,
    pub kind: String,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub parent_id: Option<i64>,
    pub owner_id: Option<i64>,
    pub description: String,
    pub created_at: String,
}

impl Namespace {
    pub fn is_group(&self) -> bool {
        self.kind == NamespaceKind::Group.as_str()
    }
}

#[derive(Clone, Debug)]
pub struct NewNamespace {
    pub kind: NamespaceKind,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub parent_id: Option<i64>,
    pub owner_id: Option<i64>,
    pub description: String,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Project {
    pub id: i64,
    pub namespace_id: i64,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub description: String,
    pub default_branch: String,
    pub creator_id: i64,
    pub created_at: String,
}

#[derive(Clone, Debug)]
pub struct NewProject {
    pub namespace_id: i64,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub description: String,
    pub default_branch: String,
    pub creator_id: i64,
}

/// What a membership is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberSource {
    Project(i64),
    Namespace(i64),
}

impl MemberSource {
    pub(crate) fn key(self) -> (&'static str, i64) {
        match self {
            MemberSource::Project(id) => ("project", id),
            MemberSource::Namespace(id) => ("namespace", id),
        }
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Member {
    pub source_kind: String,
    pub source_id: i64,
    pub user_id: i64,
    pub access_level: i64,
    pub created_at: String,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Agent {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub created_by_user_id: Option<i64>,
    pub created_at: String,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AgentToken {
    pub id: i64,
    pub agent_id: i64,
    pub name: String,
    pub description: Option<String>,
    pub token_digest: String,
    pub status: i64,
    pub created_by_user_id: Option<i64>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl AgentToken {
    pub fn status_name(&self) -> &'static str {
        if self.status == 0 { "active" } else { "revoked" }
    }
}

#[derive(Clone, Debug)]
pub struct NewAgentToken {
    pub agent_id: i64,
    pub name: String,
    pub description: Option<String>,
    pub token_digest: String,
    pub created_by: i64,
}

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct PushEvent {
    pub id: i64,
    pub project_id: i64,
    pub ref_name: String,
    pub before_sha: String,
    pub after_sha: String,
    pub user_id: Option<i64>,
    pub created_at: String,
}

#[derive(Clone, Debug)]
pub struct NewPushEvent {
    pub project_id: i64,
    pub ref_name: String,
    pub before_sha: String,
    pub after_sha: String,
    pub user_id: Option<i64>,
}

/// A CI job and its token.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CiJob {
    pub job_id: i64,
    pub project_id: i64,
    pub pipeline_id: i64,
    pub user_id: i64,
    pub ref_name: String,
    pub ref_protected: i64,
    pub environment_slug: Option<String>,
    pub environment_tier: Option<String>,
    pub token_digest: String,
    pub expires_at: String,
    pub finished: i64,
    pub created_at: String,
}

impl CiJob {
    /// A job token works while the job runs and before it expires.
    pub fn is_active(&self) -> bool {
        self.finished == 0 && !crate::is_past(&self.expires_at)
    }
}

#[derive(Clone, Debug)]
pub struct NewCiJob {
    pub job_id: i64,
    pub project_id: i64,
    pub pipeline_id: i64,
    pub user_id: i64,
    pub ref_name: String,
    pub ref_protected: bool,
    pub environment_slug: Option<String>,
    pub environment_tier: Option<String>,
    pub token_digest: String,
    pub expires_at: String,
}
