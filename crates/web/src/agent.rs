//! The agent page (`/<project path>/-/cluster_agents/<name>`): its live
//! connections, its tokens (create, shown once; revoke), its configuration
//! (the parsed file, or its error with line and column), its receptive URL,
//! its activity (registered, connected, disconnected, tokens created and
//! revoked, configuration errors; newest first, by day), and deleting it
//! after typing its name.

use askama::Template;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use glagent_store::{Agent, AgentEvent, AgentEventKind, Page, Project, StoreError};
use glagent_telemetry::body::WhenSent;

use crate::project::{Created, project_for};
use crate::session::SignedIn;
use crate::{Web, ago, error_page, page};

pub struct ConnectionRow {
    pub pod: String,
    pub version: String,
    pub connected_at: String,
    pub warning: Option<String>,
}

pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub last_used: String,
    pub last_used_at: String,
}

/// One day of the activity list: "Today", "Yesterday" or the date.
pub struct ActivityDay {
    pub label: String,
    pub events: Vec<ActivityRow>,
}

pub struct ActivityRow {
    pub kind: &'static str,
    pub kind_class: &'static str,
    pub detail: String,
    pub at: String,
    pub ago: String,
}

/// How many events the page shows.
const ACTIVITY_SHOWN: i64 = 50;

fn kind_words(kind: AgentEventKind) -> (&'static str, &'static str) {
    match kind {
        AgentEventKind::Registered => ("Agent registered", "info"),
        AgentEventKind::Connected => ("Connected", "success"),
        AgentEventKind::Disconnected => ("Disconnected", "neutral"),
        AgentEventKind::TokenCreated => ("Token created", "info"),
        AgentEventKind::TokenRevoked => ("Token revoked", "warning"),
        AgentEventKind::ConfigError => ("Configuration error", "danger"),
    }
}

/// Events (newest first) grouped by their day in UTC.
fn by_day(events: Vec<AgentEvent>) -> Vec<ActivityDay> {
    let today = glagent_store::Timestamp::now().to_string()[..10].to_string();
    let yesterday =
        glagent_store::Timestamp::before_now(std::time::Duration::from_secs(86_400)).to_string()[..10].to_string();
    let mut days: Vec<ActivityDay> = Vec::new();
    for event in events {
        let at = event.created_at.to_string();
        let day = &at[..10];
        let label = if day == today {
            "Today".to_string()
        } else if day == yesterday {
            "Yesterday".to_string()
        } else {
            day.to_string()
        };
        let (kind, kind_class) = kind_words(event.kind);
        let row = ActivityRow {
            kind,
            kind_class,
            detail: event.detail,
            ago: ago(event.created_at),
            at,
        };
        match days.last_mut() {
            Some(last) if last.label == label => last.events.push(row),
            _ => days.push(ActivityDay {
                label,
                events: vec![row],
            }),
        }
    }
    days
}

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage {
    user: Option<String>,
    csrf: String,
    project_name: String,
    project_path: String,
    agent_name: String,
    agent_id: i64,
    created_at: String,
    can_admin: bool,
    connections: Vec<ConnectionRow>,
    tokens: Vec<TokenRow>,
    config_path: String,
    config_exists: bool,
    config_text: String,
    config_error: Option<String>,
    receptive: Option<String>,
    activity: Vec<ActivityDay>,
    created: Option<Created>,
    error: Option<String>,
}

/// What the agent page is asked to do.
pub enum Action {
    Show,
    CreateToken { name: String, description: String },
    Revoke(i64),
    Delete { confirm: String },
}

pub async fn handle(web: &Web, current: &SignedIn, path: &str, name: &str, action: Action) -> Response {
    let (project, level) = match project_for(web, current, path).await {
        Ok(found) => found,
        Err(not_found) => return not_found,
    };
    let user = Some(current.user.username.clone());
    let agent = match web.store.agent_by_name(project.id, name).await {
        Ok(agent) => agent,
        Err(StoreError::NotFound) => {
            return error_page(StatusCode::NOT_FOUND, "404 Agent Not Found", user, current.csrf());
        }
        Err(error) => {
            tracing::error!(%error, "reading an agent failed");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "kas could not read the agent; try again.",
                user,
                current.csrf(),
            );
        }
    };
    if !matches!(action, Action::Show) && !level.can_admin_agents() {
        return error_page(
            StatusCode::FORBIDDEN,
            "Only maintainers and owners of the project can change agents.",
            user,
            current.csrf(),
        );
    }
    let mut created = None;
    let mut sent = None;
    let mut error = None;
    match action {
        Action::Show => {}
        Action::CreateToken {
            name: token_name,
            description,
        } => {
            let description = Some(description).filter(|d| !d.trim().is_empty());
            match web
                .create_agent_token(&agent, token_name.trim(), description, &current.user)
                .await
            {
                Ok(token) => {
                    sent = Some(web.on_token_sent(token.record.id));
                    created = Some(Created {
                        agent_name: token.record.name.clone(),
                        token: token.token.expose().to_string(),
                        install_command: token.install_command,
                    })
                }
                Err(glagent_services::agents::AgentError::Invalid(message)) => {
                    error = Some(format!("The token was not created: {message}"))
                }
                Err(glagent_services::agents::AgentError::Store(StoreError::Limit(message))) => {
                    error = Some(format!("The token was not created: {message}"))
                }
                Err(failure) => {
                    tracing::error!(error = %failure, "creating an agent token failed");
                    error = Some("kas could not create the token; try again.".into());
                }
            }
        }
        Action::Revoke(token_id) => match web.revoke_agent_token(&agent, token_id, &current.user).await {
            Ok(()) => {
                return Redirect::to(&format!("/{}/-/cluster_agents/{}", project.full_path, agent.name))
                    .into_response();
            }
            Err(StoreError::NotFound) => error = Some("That token is not an active token of this agent.".into()),
            Err(failure) => {
                tracing::error!(error = %failure, "revoking an agent token failed");
                error = Some("kas could not revoke the token; try again.".into());
            }
        },
        Action::Delete { confirm } => {
            if confirm.trim() != agent.name {
                error = Some(format!(
                    "The agent was not deleted: type its name, {}, to confirm.",
                    agent.name
                ));
            } else {
                return match web.delete_agent(&project, agent.id).await {
                    Ok(()) => Redirect::to(&format!("/{}/-/clusters", project.full_path)).into_response(),
                    Err(failure) => {
                        tracing::error!(error = %failure, "deleting an agent failed");
                        error_page(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "kas could not delete the agent; try again.",
                            user,
                            current.csrf(),
                        )
                    }
                };
            }
        }
    }
    let page = render(web, current, &project, &agent, level.can_admin_agents(), created, error).await;
    match sent {
        Some(on_sent) => page.map(|page| Body::new(WhenSent::new(page, on_sent))),
        None => page,
    }
}

async fn render(
    web: &Web,
    current: &SignedIn,
    project: &Project,
    agent: &Agent,
    can_admin: bool,
    created: Option<Created>,
    error: Option<String>,
) -> Response {
    let connections = web.connections.summaries(&web.services, agent.id).await;
    let versions: Vec<&str> = connections
        .iter()
        .filter_map(|c| c.metadata.as_ref().map(|m| m.version.as_str()))
        .collect();
    let mixed = glagent_core::version::mixed_versions_warning(&versions);
    let connections = connections
        .iter()
        .map(|c| {
            let info = c.metadata.as_ref();
            ConnectionRow {
                pod: info
                    .map(|m| format!("{}/{}", m.pod_namespace, m.pod_name))
                    .unwrap_or_else(|| "registering…".into()),
                version: info.map(|m| m.version.clone()).unwrap_or_default(),
                connected_at: c.connected_at.to_string(),
                warning: info
                    .and_then(|m| glagent_core::version::version_warning(&m.version, glagent_core::VERSION))
                    .or(mixed.clone()),
            }
        })
        .collect();
    let tokens = match web
        .store
        .active_agent_tokens(agent.id, Page { page: 1, per_page: 100 })
        .await
    {
        Ok(tokens) => tokens.items,
        Err(failure) => {
            tracing::error!(error = %failure, "listing agent tokens failed");
            Vec::new()
        }
    };
    let tokens = tokens
        .into_iter()
        .map(|t| TokenRow {
            id: t.id,
            name: t.name,
            description: t.description.unwrap_or_default(),
            created_at: t.created_at.to_string(),
            last_used: t.last_used_at.map(ago).unwrap_or_else(|| "Never".into()),
            last_used_at: t.last_used_at.map(|t| t.to_string()).unwrap_or_default(),
        })
        .collect();
    let (config_path, config_exists, config_text, config_error) = match web.configs.at_head(project, agent).await {
        Ok(head) => match head.parsed {
            Ok(config) => (
                head.path,
                head.file_exists,
                serde_json::to_string_pretty(&config).unwrap_or_default(),
                None,
            ),
            Err(failure) => (head.path, head.file_exists, String::new(), Some(failure.to_string())),
        },
        Err(failure) => (
            format!(".gitlab/agents/{}/config.yaml", agent.name),
            false,
            String::new(),
            Some(format!("kas could not read the repository: {failure}")),
        ),
    };
    let receptive = web
        .store
        .url_configuration(agent.id)
        .await
        .ok()
        .flatten()
        .map(|u| u.url);
    let activity = match web.store.agent_events(agent.id, ACTIVITY_SHOWN).await {
        Ok(events) => by_day(events),
        Err(failure) => {
            tracing::error!(error = %failure, "reading the agent's activity failed");
            Vec::new()
        }
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let html = AgentPage {
        user: Some(current.user.username.clone()),
        csrf: current.csrf(),
        project_name: project.name.clone(),
        project_path: project.full_path.clone(),
        agent_name: agent.name.clone(),
        agent_id: agent.id,
        created_at: agent.created_at.to_string(),
        can_admin,
        connections,
        tokens,
        config_path,
        config_exists,
        config_text,
        config_error,
        receptive,
        activity,
        created,
        error,
    }
    .render()
    .unwrap_or_default();
    page(status, html)
}
