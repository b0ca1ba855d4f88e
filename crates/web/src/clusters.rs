//! Project > Operate > Kubernetes clusters (`/<project path>/-/clusters`):
//! the project's agents with their live connection status, Connect a
//! cluster (register an agent and show its token once with the install
//! command), and the JSON the page's script polls for live status.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use glagent_store::{Agent, Page, Project, StoreError};
use serde::Serialize;

use crate::project::{Created, project_for};
use crate::session::SignedIn;
use crate::{Web, error_page, page};

/// One agent's row, as the page and its script show it.
#[derive(Clone, Serialize)]
pub struct AgentRow {
    pub id: i64,
    pub name: String,
    pub receptive: bool,
    pub status: &'static str,
    pub status_class: &'static str,
    pub last_contact: String,
    pub version: String,
    pub warning: Option<String>,
    pub configuration: String,
}

#[derive(Template)]
#[template(path = "clusters.html")]
struct ClustersPage {
    user: Option<String>,
    csrf: String,
    project_name: String,
    project_path: String,
    can_admin: bool,
    agents: Vec<AgentRow>,
    available: Vec<String>,
    created: Option<Created>,
    error: Option<String>,
    name: String,
}

/// The rows of the project's agents: live connections of every replica
/// (held in memory here, one route query per agent only with replicas),
/// the last use of any of their tokens (one query for all), versions
/// against kas's, and which have a configuration file (one directory
/// listing for all).
/// The agent configuration folders (`.gitlab/agents/<name>/`) on the
/// project's default branch.
async fn config_folders(web: &Web, project: &Project) -> Vec<String> {
    web.repos
        .list_dirs(project.id, &project.default_branch, ".gitlab/agents")
        .await
        .unwrap_or_default()
}

async fn rows(web: &Web, project: &Project, configured: &[String]) -> Result<Vec<AgentRow>, StoreError> {
    let agents = web
        .store
        .agents(
            project.id,
            Page {
                page: 1,
                per_page: 10_000,
            },
        )
        .await?
        .items;
    let receptive = web.store.receptive_agent_ids(project.id).await?;
    let last_contact: std::collections::HashMap<i64, glagent_store::Timestamp> = web
        .store
        .project_agents_last_contact(project.id)
        .await?
        .into_iter()
        .collect();
    let mut rows = Vec::with_capacity(agents.len());
    for agent in agents {
        let connections = web.connections.summaries(&web.services, agent.id).await;
        // A folder with no config.yaml counts as configured here; the
        // agent page reads the file itself.
        let has_config = configured.contains(&agent.name);
        rows.push(row(
            &agent,
            &connections,
            last_contact.get(&agent.id).copied(),
            has_config,
            receptive.contains(&agent.id),
        ));
    }
    Ok(rows)
}

fn row(
    agent: &Agent,
    connections: &[glagent_connections::ConnectionSummary],
    last_used: Option<glagent_store::Timestamp>,
    has_config: bool,
    receptive: bool,
) -> AgentRow {
    let last_connected = connections.iter().map(|c| c.connected_at).max();
    let last_contact = last_used.max(last_connected);
    let (status, status_class) = match (connections.is_empty(), last_contact) {
        (false, _) => ("Connected", "success"),
        (true, Some(_)) => ("Not connected", "danger"),
        (true, None) => ("Never connected", "neutral"),
    };
    let versions: Vec<&str> = connections
        .iter()
        .filter_map(|c| c.metadata.as_ref().map(|m| m.version.as_str()))
        .collect();
    let warning = glagent_core::version::mixed_versions_warning(&versions).or_else(|| {
        versions
            .iter()
            .find_map(|v| glagent_core::version::version_warning(v, glagent_core::VERSION))
    });
    let mut unique: Vec<&str> = versions.clone();
    unique.sort();
    unique.dedup();
    AgentRow {
        id: agent.id,
        name: agent.name.clone(),
        receptive,
        status,
        status_class,
        last_contact: last_contact.map(|t| t.to_string()).unwrap_or_else(|| "Never".into()),
        version: if unique.is_empty() {
            "-".into()
        } else {
            unique.join(", ")
        },
        warning,
        configuration: if has_config {
            format!(".gitlab/agents/{}/config.yaml", agent.name)
        } else {
            "Default configuration".to_string()
        },
    }
}

pub(crate) async fn clusters(
    web: &Web,
    current: &SignedIn,
    path: &str,
    created: Option<Created>,
    error: Option<String>,
    name: String,
) -> Response {
    let (project, level) = match project_for(web, current, path).await {
        Ok(found) => found,
        Err(not_found) => return not_found,
    };
    let folders = config_folders(web, &project).await;
    let agents = match rows(web, &project, &folders).await {
        Ok(rows) => rows,
        Err(error) => {
            tracing::error!(%error, "listing agents failed");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "kas could not list the agents; try again.",
                Some(current.user.username.clone()),
                current.csrf(),
            );
        }
    };
    let registered: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    // Configuration folders with no agent of that name yet.
    let available = folders
        .into_iter()
        .filter(|n| !registered.contains(&n.as_str()))
        .collect();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let html = ClustersPage {
        user: Some(current.user.username.clone()),
        csrf: current.csrf(),
        project_name: project.name.clone(),
        project_path: project.full_path.clone(),
        can_admin: level.can_admin_agents(),
        agents,
        available,
        created,
        error,
        name,
    }
    .render()
    .unwrap_or_default();
    page(status, html)
}

pub(crate) async fn status(web: &Web, current: &SignedIn, path: &str) -> Response {
    let (project, _) = match project_for(web, current, path).await {
        Ok(found) => found,
        Err(not_found) => return not_found,
    };
    match rows(web, &project, &config_folders(web, &project).await).await {
        Ok(agents) => {
            let mut response = axum::Json(serde_json::json!({ "agents": agents })).into_response();
            response
                .headers_mut()
                .insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => {
            tracing::error!(%error, "listing agents failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Create and register: the agent, then its first token, shown once.
pub(crate) async fn connect(web: &Web, current: &SignedIn, path: &str, name: &str) -> Response {
    let (project, level) = match project_for(web, current, path).await {
        Ok(found) => found,
        Err(not_found) => return not_found,
    };
    if !level.can_admin_agents() {
        return error_page(
            StatusCode::FORBIDDEN,
            "Only maintainers and owners of the project can register agents.",
            Some(current.user.username.clone()),
            current.csrf(),
        );
    }
    let name = name.trim().to_string();
    let agent = match web.register_agent(&project, &name, &current.user).await {
        Ok(agent) => agent,
        Err(glagent_services::agents::AgentError::Invalid(message)) => {
            return clusters(
                web,
                current,
                path,
                None,
                Some(format!("The agent was not registered: {message}")),
                name,
            )
            .await;
        }
        Err(error) => {
            tracing::error!(%error, "registering an agent failed");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "kas could not register the agent; try again.",
                Some(current.user.username.clone()),
                current.csrf(),
            );
        }
    };
    let created = match web
        .create_agent_token(
            &agent,
            "default",
            Some("Created with Connect a cluster".into()),
            &current.user,
        )
        .await
    {
        Ok(created) => created,
        Err(error) => {
            tracing::error!(%error, "creating the agent token failed");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "kas registered the agent but could not create its token; create one on the agent's page.",
                Some(current.user.username.clone()),
                current.csrf(),
            );
        }
    };
    let shown = Created {
        agent_name: agent.name.clone(),
        token: created.token.expose().to_string(),
        install_command: created.install_command,
    };
    clusters(web, current, path, Some(shown), None, String::new()).await
}
