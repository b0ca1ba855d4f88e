//! GitLab's API entities, built from the store's types: the one place that
//! decides what of a stored row a client sees. The shapes themselves are in
//! `glagent-api-types`, shared with the CLI and the tests.

use glagent_api_types as api;
use glagent_connections::ConnectionSummary;
use glagent_store::{
    Agent, AgentToken, AgentTokenStatus, CiJob, Environment, Member, Namespace, NamespaceKind, PersonalAccessToken,
    Project, UrlConfiguration, User,
};

use crate::Api;

/// A user; `with_private` adds `email` and `is_admin` (for the user
/// themselves and for administrators).
pub fn user(state: &Api, user: &User, with_private: bool) -> api::User {
    api::User {
        avatar_url: None,
        bot: false,
        created_at: user.created_at.to_string(),
        email: with_private.then(|| user.email.clone()),
        id: user.id,
        is_admin: with_private.then_some(user.is_admin),
        locked: false,
        name: user.name.clone(),
        state: "active".into(),
        username: user.username.clone(),
        web_url: format!("{}/{}", state.urls.base(), user.username),
    }
}

/// A member: the user's public fields, with the role and the membership's
/// own date.
pub fn member(state: &Api, user: &User, member: &Member) -> api::Member {
    let user = self::user(state, user, false);
    api::Member {
        access_level: member.access_level,
        avatar_url: user.avatar_url,
        bot: user.bot,
        created_at: member.created_at.to_string(),
        expires_at: None,
        id: user.id,
        locked: user.locked,
        name: user.name,
        state: user.state,
        username: user.username,
        web_url: user.web_url,
    }
}

/// `a/b/c` as GitLab writes it in names: `a / b / c`.
fn spaced(full_path: &str) -> String {
    full_path.replace('/', " / ")
}

pub fn group(state: &Api, group: &Namespace) -> api::Group {
    api::Group {
        created_at: group.created_at.to_string(),
        description: group.description.clone(),
        full_name: spaced(&group.full_path),
        full_path: group.full_path.clone(),
        id: group.id,
        name: group.name.clone(),
        parent_id: group.parent_id,
        path: group.path.clone(),
        visibility: api::Visibility::Private,
        web_url: format!("{}/groups/{}", state.urls.base(), group.full_path),
    }
}

fn namespace(state: &Api, ns: &Namespace) -> api::Namespace {
    api::Namespace {
        full_path: ns.full_path.clone(),
        id: ns.id,
        kind: match ns.kind {
            NamespaceKind::User => api::NamespaceKind::User,
            NamespaceKind::Group => api::NamespaceKind::Group,
        },
        name: ns.name.clone(),
        parent_id: ns.parent_id,
        path: ns.path.clone(),
        web_url: format!("{}/{}", state.urls.base(), ns.full_path),
    }
}

pub fn project(state: &Api, project: &Project, ns: &Namespace) -> api::Project {
    api::Project {
        created_at: project.created_at.to_string(),
        creator_id: project.creator_id,
        default_branch: project.default_branch.clone(),
        description: project.description.clone(),
        http_url_to_repo: format!("{}/{}.git", state.urls.base(), project.full_path),
        id: project.id,
        name: project.name.clone(),
        name_with_namespace: format!("{} / {}", spaced(&ns.full_path), project.name),
        namespace: namespace(state, ns),
        path: project.path.clone(),
        path_with_namespace: project.full_path.clone(),
        ssh_url_to_repo: None,
        visibility: api::Visibility::Private,
        web_url: format!("{}/{}", state.urls.base(), project.full_path),
    }
}

fn config_project(project: &Project, ns: &Namespace) -> api::ConfigProject {
    api::ConfigProject {
        created_at: project.created_at.to_string(),
        description: project.description.clone(),
        id: project.id,
        name: project.name.clone(),
        name_with_namespace: format!("{} / {}", spaced(&ns.full_path), project.name),
        path: project.path.clone(),
        path_with_namespace: project.full_path.clone(),
    }
}

/// An agent; `is_receptive`: whether it has a URL configuration.
pub fn agent(agent: &Agent, project: &Project, ns: &Namespace, is_receptive: bool) -> api::Agent {
    api::Agent {
        config_project: config_project(project, ns),
        created_at: agent.created_at.to_string(),
        created_by_user_id: agent.created_by_user_id,
        id: agent.id,
        is_receptive,
        name: agent.name.clone(),
    }
}

/// A URL configuration as GitLab shows it: certificates and the public key
/// base64-encoded, no private key ever.
pub fn url_configuration(config: &UrlConfiguration) -> api::UrlConfiguration {
    use base64::Engine;
    let b64 = |text: &Option<String>| {
        text.as_ref()
            .map(|t| base64::engine::general_purpose::STANDARD.encode(t.as_bytes()))
    };
    api::UrlConfiguration {
        agent_id: config.agent_id,
        ca_cert: b64(&config.ca_cert),
        client_cert: b64(&config.client_cert),
        id: config.id,
        public_key: config.public_key.clone(),
        tls_host: config.tls_host.clone(),
        url: config.url.clone(),
    }
}

fn agent_token_status(status: AgentTokenStatus) -> api::AgentTokenStatus {
    match status {
        AgentTokenStatus::Active => api::AgentTokenStatus::Active,
        AgentTokenStatus::Revoked => api::AgentTokenStatus::Revoked,
    }
}

/// An agent token; `with_last_used` adds `last_used_at` (GET of one token).
pub fn agent_token(token: &AgentToken, with_last_used: bool) -> api::AgentToken {
    api::AgentToken {
        agent_id: token.agent_id,
        created_at: token.created_at.to_string(),
        created_by_user_id: token.created_by_user_id,
        description: token.description.clone(),
        id: token.id,
        last_used_at: with_last_used.then(|| token.last_used_at.map(|t| t.to_string())),
        name: token.name.clone(),
        status: agent_token_status(token.status),
    }
}

/// A request through the proxy, from the audit log.
pub fn audit_event(stored: &glagent_store::AuditEvent) -> api::AuditEvent {
    let event = &stored.event;
    let ci_job = match (event.job_id, event.pipeline_id, event.project_id) {
        (Some(id), Some(pipeline_id), Some(project_id)) => Some(api::AuditJob {
            id,
            pipeline_id,
            project_id,
        }),
        _ => None,
    };
    api::AuditEvent {
        id: stored.id,
        agent_id: event.agent_id,
        started_at: event.started_at.to_string(),
        credential: event.credential.clone(),
        user: api::AuditUser {
            id: event.user_id,
            username: event.username.clone(),
        },
        ci_job,
        impersonated_as: event.impersonated.clone(),
        verb: event.verb.clone(),
        path: event.path.clone(),
        status: event.status,
        duration_ms: event.duration_us as f64 / 1000.0,
    }
}

/// A new agent token with its secret and the install command that uses it.
pub fn created_agent_token(token: &AgentToken, secret: &str, install_command: String) -> api::CreatedAgentToken {
    api::CreatedAgentToken {
        agent_id: token.agent_id,
        created_at: token.created_at.to_string(),
        created_by_user_id: token.created_by_user_id,
        description: token.description.clone(),
        id: token.id,
        install_command,
        name: token.name.clone(),
        status: agent_token_status(token.status),
        token: secret.to_string(),
    }
}

/// A live connection; `mixed_versions` is the warning shared by all the
/// agent's connections when its pods run different versions.
pub fn connection(connection: &ConnectionSummary, mixed_versions: Option<&str>) -> api::Connection {
    let version = connection
        .metadata
        .as_ref()
        .and_then(|info| glagent_core::version::version_warning(&info.version, glagent_core::VERSION))
        .map(|message| api::ConnectionWarning::Version { message });
    let mixed = mixed_versions.map(|message| api::ConnectionWarning::MixedVersions {
        message: message.to_string(),
    });
    api::Connection {
        agent_id: connection.agent_id,
        connected_at: connection.connected_at.to_string(),
        connection_id: connection.connection_id,
        token_id: connection.token_id,
        metadata: connection.metadata.clone(),
        warnings: version.into_iter().chain(mixed).collect(),
    }
}

/// A personal access token as GitLab lists it (never the secret).
pub fn personal_access_token(record: &PersonalAccessToken) -> api::PersonalAccessToken {
    api::PersonalAccessToken {
        active: !record.revoked && !record.is_expired(),
        created_at: record.created_at.to_string(),
        expires_at: record.expires_at.clone(),
        id: record.id,
        last_used_at: record.last_used_at.map(|t| t.to_string()),
        name: record.name.clone(),
        revoked: record.revoked,
        scopes: record.scopes.clone(),
        user_id: record.user_id,
    }
}

/// A new personal access token as GitLab returns it, secret included.
pub fn created_personal_access_token(record: &PersonalAccessToken, secret: &str) -> api::CreatedPersonalAccessToken {
    api::CreatedPersonalAccessToken {
        active: true,
        created_at: record.created_at.to_string(),
        expires_at: record.expires_at.clone(),
        id: record.id,
        name: record.name.clone(),
        revoked: false,
        scopes: record.scopes.clone(),
        token: secret.to_string(),
        user_id: record.user_id,
    }
}

/// A new CI job with its job token.
pub fn created_ci_job(job: &CiJob, secret: &str) -> api::CreatedCiJob {
    api::CreatedCiJob {
        expires_at: job.expires_at.to_string(),
        job_id: job.job_id,
        pipeline_id: job.pipeline_id,
        project_id: job.project_id,
        token: secret.to_string(),
    }
}

/// An environment without its cluster link (which only callers who may
/// read the agent see; `environments::show` adds it).
pub fn environment(state: &Api, environment: &Environment, project: &Project, ns: &Namespace) -> api::Environment {
    api::Environment {
        auto_stop_at: None,
        auto_stop_setting: environment.auto_stop_setting.clone(),
        cluster_agent: None,
        created_at: environment.created_at.to_string(),
        description: environment.description.clone(),
        external_url: environment.external_url.clone(),
        flux_resource_path: None,
        id: environment.id,
        kubernetes_namespace: None,
        kubernetes_namespaces: None,
        name: environment.name.clone(),
        project: self::project(state, project, ns),
        slug: environment.slug.clone(),
        state: environment.state.name().to_string(),
        tier: environment.tier.name().to_string(),
        updated_at: environment.updated_at.to_string(),
    }
}
