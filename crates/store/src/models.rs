//! What the store hands out: domain types, decoded from their rows at the
//! store's edge (flags as `bool`, roles as [`AccessLevel`], scopes as a
//! list, kinds and statuses as enums), so nothing above the store sees a
//! column type. Times are RFC 3339 strings in UTC.

use glagent_core::access::AccessLevel;
pub use glagent_core::environment::{State as EnvironmentState, Tier};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Timestamp;

/// A column whose value is not one the store writes.
#[derive(Debug, thiserror::Error)]
#[error("column {column} holds {value:?}, which this kas cannot read")]
struct BadColumn {
    column: &'static str,
    value: String,
}

fn bad(column: &'static str, value: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(BadColumn {
        column,
        value: value.to_string(),
    }))
}

fn time(row: &AnyRow, column: &'static str) -> sqlx::Result<Timestamp> {
    let text: String = row.try_get(column)?;
    text.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn optional_time(row: &AnyRow, column: &'static str) -> sqlx::Result<Option<Timestamp>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| t.parse().map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

fn flag(row: &AnyRow, column: &'static str) -> sqlx::Result<bool> {
    match row.try_get::<i64, _>(column)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(bad(column, other)),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub email: String,
    pub is_admin: bool,
    pub created_at: Timestamp,
}

impl sqlx::FromRow<'_, AnyRow> for User {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(User {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            is_admin: flag(row, "is_admin")?,
            created_at: time(row, "created_at")?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct NewUser {
    pub username: String,
    pub name: String,
    pub email: String,
    pub is_admin: bool,
}

#[derive(Clone, Debug)]
pub struct PersonalAccessToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    pub token_digest: String,
    /// A day, `YYYY-MM-DD`: the token works until the end of it.
    pub expires_at: Option<String>,
    pub revoked: bool,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

impl PersonalAccessToken {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Expiry dates are days: as in GitLab, a token expires on its date at
    /// midnight (00:00 UTC), so `expires_at` tomorrow works until the end
    /// of today.
    pub fn is_expired(&self) -> bool {
        self.expires_at.as_deref().is_some_and(|day| {
            format!("{day}T00:00:00.000Z")
                .parse::<Timestamp>()
                .is_ok_and(|end| end.is_past())
        })
    }
}

impl sqlx::FromRow<'_, AnyRow> for PersonalAccessToken {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let scopes: String = row.try_get("scopes")?;
        Ok(PersonalAccessToken {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            name: row.try_get("name")?,
            scopes: scopes
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            token_digest: row.try_get("token_digest")?,
            expires_at: row.try_get("expires_at")?,
            revoked: flag(row, "revoked")?,
            created_at: time(row, "created_at")?,
            last_used_at: optional_time(row, "last_used_at")?,
        })
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
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

#[derive(Clone, Debug)]
pub struct Namespace {
    pub id: i64,
    pub kind: NamespaceKind,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub parent_id: Option<i64>,
    pub owner_id: Option<i64>,
    pub description: String,
    pub created_at: Timestamp,
}

impl Namespace {
    pub fn is_group(&self) -> bool {
        self.kind == NamespaceKind::Group
    }
}

impl sqlx::FromRow<'_, AnyRow> for Namespace {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let kind: String = row.try_get("kind")?;
        Ok(Namespace {
            id: row.try_get("id")?,
            kind: match kind.as_str() {
                "user" => NamespaceKind::User,
                "group" => NamespaceKind::Group,
                _ => return Err(bad("namespaces.kind", kind)),
            },
            name: row.try_get("name")?,
            path: row.try_get("path")?,
            full_path: row.try_get("full_path")?,
            parent_id: row.try_get("parent_id")?,
            owner_id: row.try_get("owner_id")?,
            description: row.try_get("description")?,
            created_at: time(row, "created_at")?,
        })
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
    #[sqlx(try_from = "String")]
    pub created_at: Timestamp,
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

#[derive(Clone, Debug)]
pub struct Member {
    pub user_id: i64,
    pub access_level: AccessLevel,
    pub created_at: Timestamp,
}

impl sqlx::FromRow<'_, AnyRow> for Member {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let level: i64 = row.try_get("access_level")?;
        Ok(Member {
            user_id: row.try_get("user_id")?,
            access_level: AccessLevel::try_from(level).map_err(|_| bad("members.access_level", level))?,
            created_at: time(row, "created_at")?,
        })
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Agent {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub created_by_user_id: Option<i64>,
    #[sqlx(try_from = "String")]
    pub created_at: Timestamp,
}

#[derive(Clone, Debug)]
pub struct AgentToken {
    pub id: i64,
    pub agent_id: i64,
    pub name: String,
    pub description: Option<String>,
    pub token_digest: String,
    pub status: AgentTokenStatus,
    pub created_by_user_id: Option<i64>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// Whether kas finished sending the token to whoever created it, or the
    /// token has been used. Undelivered tokens are those kas was answering
    /// for when it stopped: [`crate::Store::forget_undelivered_agent_tokens`].
    pub delivered: bool,
}

/// GitLab's agent token statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentTokenStatus {
    Active,
    Revoked,
}

impl sqlx::FromRow<'_, AnyRow> for AgentToken {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(AgentToken {
            id: row.try_get("id")?,
            agent_id: row.try_get("agent_id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            token_digest: row.try_get("token_digest")?,
            status: match row.try_get::<i64, _>("status")? {
                0 => AgentTokenStatus::Active,
                1 => AgentTokenStatus::Revoked,
                other => return Err(bad("cluster_agent_tokens.status", other)),
            },
            created_by_user_id: row.try_get("created_by_user_id")?,
            created_at: time(row, "created_at")?,
            last_used_at: optional_time(row, "last_used_at")?,
            revoked_at: optional_time(row, "revoked_at")?,
            delivered: match row.try_get::<i64, _>("delivered")? {
                0 => false,
                1 => true,
                other => return Err(bad("cluster_agent_tokens.delivered", other)),
            },
        })
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
    #[sqlx(try_from = "String")]
    pub created_at: Timestamp,
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
#[derive(Clone, Debug)]
pub struct CiJob {
    pub job_id: i64,
    pub project_id: i64,
    pub pipeline_id: i64,
    pub user_id: i64,
    pub ref_name: String,
    pub ref_protected: bool,
    pub environment_slug: Option<String>,
    pub environment_tier: Option<String>,
    pub token_digest: String,
    pub expires_at: Timestamp,
    pub finished: bool,
    pub created_at: Timestamp,
}

impl CiJob {
    /// A job token works while the job runs and before it expires.
    pub fn is_active(&self) -> bool {
        !self.finished && !self.expires_at.is_past()
    }
}

impl sqlx::FromRow<'_, AnyRow> for CiJob {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(CiJob {
            job_id: row.try_get("job_id")?,
            project_id: row.try_get("project_id")?,
            pipeline_id: row.try_get("pipeline_id")?,
            user_id: row.try_get("user_id")?,
            ref_name: row.try_get("ref_name")?,
            ref_protected: flag(row, "ref_protected")?,
            environment_slug: row.try_get("environment_slug")?,
            environment_tier: row.try_get("environment_tier")?,
            token_digest: row.try_get("token_digest")?,
            expires_at: time(row, "expires_at")?,
            finished: flag(row, "finished")?,
            created_at: time(row, "created_at")?,
        })
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
    pub expires_at: Timestamp,
}

/// An environment of a project, optionally linked to a cluster through an
/// agent.
#[derive(Clone, Debug)]
pub struct Environment {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub slug: String,
    pub external_url: Option<String>,
    pub description: Option<String>,
    pub tier: Tier,
    pub state: EnvironmentState,
    /// `always` or `with_action`, as GitLab takes it.
    pub auto_stop_setting: String,
    pub cluster_agent_id: Option<i64>,
    pub kubernetes_namespace: Option<String>,
    /// glagent's extension: namespaces watched besides
    /// `kubernetes_namespace`.
    pub more_namespaces: Vec<String>,
    pub flux_resource_path: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl sqlx::FromRow<'_, AnyRow> for Environment {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let tier: String = row.try_get("tier")?;
        let state: String = row.try_get("state")?;
        Ok(Environment {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            name: row.try_get("name")?,
            slug: row.try_get("slug")?,
            external_url: row.try_get("external_url")?,
            description: row.try_get("description")?,
            tier: Tier::parse(&tier).map_err(|_| bad("environments.tier", &tier))?,
            state: EnvironmentState::parse(&state).ok_or_else(|| bad("environments.state", &state))?,
            auto_stop_setting: row.try_get("auto_stop_setting")?,
            cluster_agent_id: row.try_get("cluster_agent_id")?,
            kubernetes_namespace: row.try_get("kubernetes_namespace")?,
            more_namespaces: row
                .try_get::<String, _>("more_namespaces")?
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
            flux_resource_path: row.try_get("flux_resource_path")?,
            created_at: time(row, "created_at")?,
            updated_at: time(row, "updated_at")?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct NewEnvironment {
    pub project_id: i64,
    pub name: String,
    pub slug: String,
    pub external_url: Option<String>,
    pub description: Option<String>,
    pub tier: Tier,
    pub auto_stop_setting: String,
    pub cluster_agent_id: Option<i64>,
    pub kubernetes_namespace: Option<String>,
    pub more_namespaces: Vec<String>,
    pub flux_resource_path: Option<String>,
}

/// Where kas dials a receptive agent. Either a key pair (`public_key`, the
/// raw Ed25519 public key in base64, and the sealed private key) or an mTLS
/// client certificate and sealed key.
#[derive(Clone, Debug)]
pub struct UrlConfiguration {
    pub id: i64,
    pub agent_id: i64,
    pub url: String,
    pub ca_cert: Option<String>,
    pub tls_host: Option<String>,
    pub client_cert: Option<String>,
    pub client_key_sealed: Option<String>,
    pub public_key: Option<String>,
    pub private_key_sealed: Option<String>,
    pub created_by_user_id: Option<i64>,
    pub created_at: Timestamp,
}

impl sqlx::FromRow<'_, AnyRow> for UrlConfiguration {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(UrlConfiguration {
            id: row.try_get("id")?,
            agent_id: row.try_get("agent_id")?,
            url: row.try_get("url")?,
            ca_cert: row.try_get("ca_cert")?,
            tls_host: row.try_get("tls_host")?,
            client_cert: row.try_get("client_cert")?,
            client_key_sealed: row.try_get("client_key_sealed")?,
            public_key: row.try_get("public_key")?,
            private_key_sealed: row.try_get("private_key_sealed")?,
            created_by_user_id: row.try_get("created_by_user_id")?,
            created_at: time(row, "created_at")?,
        })
    }
}

/// A URL configuration to store; the sealed fields are sealed already.
#[derive(Clone, Debug)]
pub struct NewUrlConfiguration {
    pub agent_id: i64,
    pub url: String,
    pub ca_cert: Option<String>,
    pub tls_host: Option<String>,
    pub client_cert: Option<String>,
    pub client_key_sealed: Option<String>,
    pub public_key: Option<String>,
    pub private_key_sealed: Option<String>,
    pub created_by_user_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires_at: Option<String>) -> PersonalAccessToken {
        PersonalAccessToken {
            id: 1,
            user_id: 1,
            name: "t".into(),
            scopes: vec!["api".into()],
            token_digest: String::new(),
            expires_at,
            revoked: false,
            created_at: Timestamp::now(),
            last_used_at: None,
        }
    }

    #[test]
    fn tokens_expire_at_midnight_utc_on_their_date() {
        let day = |offset: i64| {
            let at = time::OffsetDateTime::now_utc() + time::Duration::days(offset);
            format!("{:04}-{:02}-{:02}", at.year(), u8::from(at.month()), at.day())
        };
        assert!(!token(None).is_expired());
        assert!(
            !token(Some(day(1))).is_expired(),
            "tomorrow: works for the rest of today"
        );
        assert!(token(Some(day(0))).is_expired(), "today: expired since midnight");
        assert!(token(Some(day(-1))).is_expired());
    }
}

/// What happened to an agent, for its activity list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentEventKind {
    Registered,
    Connected,
    Disconnected,
    TokenCreated,
    TokenRevoked,
    ConfigError,
}

impl AgentEventKind {
    pub const ALL: [AgentEventKind; 6] = [
        AgentEventKind::Registered,
        AgentEventKind::Connected,
        AgentEventKind::Disconnected,
        AgentEventKind::TokenCreated,
        AgentEventKind::TokenRevoked,
        AgentEventKind::ConfigError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentEventKind::Registered => "registered",
            AgentEventKind::Connected => "agent_connected",
            AgentEventKind::Disconnected => "agent_disconnected",
            AgentEventKind::TokenCreated => "token_created",
            AgentEventKind::TokenRevoked => "token_revoked",
            AgentEventKind::ConfigError => "config_error",
        }
    }
}

/// One entry of an agent's activity list.
#[derive(Clone, Debug, Serialize)]
pub struct AgentEvent {
    pub id: i64,
    pub agent_id: i64,
    pub kind: AgentEventKind,
    /// Words for people: who, which token, which pod, the reason or the
    /// error. Never a secret.
    pub detail: String,
    pub created_at: Timestamp,
}

impl sqlx::FromRow<'_, AnyRow> for AgentEvent {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let kind: String = row.try_get("kind")?;
        Ok(AgentEvent {
            id: row.try_get("id")?,
            agent_id: row.try_get("agent_id")?,
            kind: AgentEventKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
                .ok_or_else(|| bad("agent_events.kind", &kind))?,
            detail: row.try_get("detail")?,
            created_at: time(row, "created_at")?,
        })
    }
}

/// A token revoked (`token_id`) or an agent deleted (`agent_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub id: i64,
    pub token_id: Option<i64>,
    pub agent_id: Option<i64>,
}

/// A request through the Kubernetes API proxy, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub agent_id: i64,
    pub started_at: Timestamp,
    /// `personal_access_token`, `session_cookie` or `ci_job`.
    pub credential: String,
    pub user_id: i64,
    pub username: String,
    /// The CI job's project, pipeline and job, for a job's token.
    pub project_id: Option<i64>,
    pub pipeline_id: Option<i64>,
    pub job_id: Option<i64>,
    /// The user kas imposed on the request; `None`: the agent's own
    /// service account.
    pub impersonated: Option<String>,
    /// The Kubernetes verb.
    pub verb: String,
    /// The API server path, without the query.
    pub path: String,
    pub status: i64,
    pub duration_us: i64,
}

/// A stored audit event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub event: NewAuditEvent,
}

impl sqlx::FromRow<'_, AnyRow> for AuditEvent {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(AuditEvent {
            id: row.try_get("id")?,
            event: NewAuditEvent {
                agent_id: row.try_get("agent_id")?,
                started_at: time(row, "started_at")?,
                credential: row.try_get("credential")?,
                user_id: row.try_get("user_id")?,
                username: row.try_get("username")?,
                project_id: row.try_get("project_id")?,
                pipeline_id: row.try_get("pipeline_id")?,
                job_id: row.try_get("job_id")?,
                impersonated: row.try_get("impersonated")?,
                verb: row.try_get("verb")?,
                path: row.try_get("path")?,
                status: row.try_get("status")?,
                duration_us: row.try_get("duration_us")?,
            },
        })
    }
}
