//! Project > Operate > Kubernetes clusters (`/<project path>/-/clusters`):
//! the tabs Project agents, Shared agents (other projects' agents whose
//! configuration shares them with this one) and Available configurations
//! (folders with no agent); Connect a cluster (register an agent and show
//! its token once with the install command); and the rows' live status, as
//! a JSON snapshot and as a stream of Server-Sent Events the page's script
//! follows.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use glagent_store::{Agent, Page, Project, StoreError};
use glagent_telemetry::body::WhenSent;
use serde::Serialize;

use crate::project::{Created, project_for};
use crate::session::SignedIn;
use crate::{Web, ago, error_page, page};

/// The tabs of the page, chosen by `?tab=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Project,
    Shared,
    Configurations,
}

impl Tab {
    /// The tab a query string names; the project's agents by default.
    pub fn from_query(query: Option<&str>) -> Tab {
        let named = query.and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "tab")
                .map(|(_, v)| v.into_owned())
        });
        match named.as_deref() {
            Some("shared") => Tab::Shared,
            Some("configurations") => Tab::Configurations,
            _ => Tab::Project,
        }
    }

    /// The query string that names this tab.
    pub fn query(self) -> &'static str {
        match self {
            Tab::Project => "",
            Tab::Shared => "?tab=shared",
            Tab::Configurations => "?tab=configurations",
        }
    }
}

/// How often a live page is refreshed when nothing on this replica said
/// so (connections on other replicas, last contact growing older).
const STREAM_SAFETY: Duration = Duration::from_secs(5);

/// One agent's row, as the page and its script show it.
#[derive(Clone, Serialize)]
pub struct AgentRow {
    pub id: i64,
    pub name: String,
    pub receptive: bool,
    pub status: &'static str,
    pub status_class: &'static str,
    /// "3 minutes ago", or "Never".
    pub last_contact: String,
    /// The time itself, for the tooltip.
    pub last_contact_at: String,
    pub version: String,
    pub warning: Option<String>,
    pub configuration: String,
    /// The agent's page.
    pub href: String,
    /// For a shared agent: the project it comes from.
    pub shared_from: Option<String>,
}

#[derive(Template)]
#[template(path = "clusters.html")]
struct ClustersPage {
    user: Option<String>,
    csrf: String,
    project_name: String,
    project_path: String,
    can_admin: bool,
    tab: Tab,
    project_count: usize,
    /// Known on the Shared agents tab only.
    shared_count: Option<usize>,
    agents: Vec<AgentRow>,
    available: Vec<String>,
    created: Option<Created>,
    error: Option<String>,
    name: String,
}

/// The agent configuration folders (`.gitlab/agents/<name>/`) on the
/// project's default branch.
async fn config_folders(web: &Web, project: &Project) -> Vec<String> {
    web.repos
        .list_dirs(project.id, &project.default_branch, ".gitlab/agents")
        .await
        .unwrap_or_default()
}

/// The rows of the project's agents: live connections of every replica
/// (held in memory here, one route query per agent only with replicas),
/// the last use of any of their tokens (one query for all), versions
/// against kas's, and which have a configuration file (one directory
/// listing for all).
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
        let configuration = if has_config {
            format!(".gitlab/agents/{}/config.yaml", agent.name)
        } else {
            "Default configuration".to_string()
        };
        rows.push(row(
            &agent,
            &project.full_path,
            &connections,
            last_contact.get(&agent.id).copied(),
            configuration,
            receptive.contains(&agent.id),
            None,
        ));
    }
    Ok(rows)
}

/// The rows of other projects' agents shared with this one (a handful:
/// one last-contact query each).
async fn shared_rows(web: &Web, project: &Project) -> Result<Vec<AgentRow>, StoreError> {
    let mut rows = Vec::new();
    for shared in web.agents_shared_with(project).await? {
        if shared.agent.project_id == project.id {
            continue;
        }
        let connections = web.connections.summaries(&web.services, shared.agent.id).await;
        let last_used = web.store.agent_last_contact(shared.agent.id).await?;
        let receptive = web.store.url_configuration(shared.agent.id).await?.is_some();
        let via = match (shared.sharing.ci_access, shared.sharing.user_access) {
            (true, true) => "CI/CD and user access",
            (true, false) => "CI/CD access",
            _ => "user access",
        };
        rows.push(row(
            &shared.agent,
            &shared.config_project.full_path,
            &connections,
            last_used,
            format!("External project ({via})"),
            receptive,
            Some(shared.config_project.full_path.clone()),
        ));
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

/// The rows a tab shows.
async fn tab_rows(web: &Web, project: &Project, tab: Tab) -> Result<Vec<AgentRow>, StoreError> {
    match tab {
        Tab::Shared => shared_rows(web, project).await,
        _ => rows(web, project, &config_folders(web, project).await).await,
    }
}

fn row(
    agent: &Agent,
    agent_project: &str,
    connections: &[glagent_connections::ConnectionSummary],
    last_used: Option<glagent_store::Timestamp>,
    configuration: String,
    receptive: bool,
    shared_from: Option<String>,
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
        last_contact: last_contact.map(ago).unwrap_or_else(|| "Never".into()),
        last_contact_at: last_contact.map(|t| t.to_string()).unwrap_or_default(),
        version: if unique.is_empty() {
            "-".into()
        } else {
            unique.join(", ")
        },
        warning,
        configuration,
        href: format!("/{agent_project}/-/cluster_agents/{}", agent.name),
        shared_from,
    }
}

pub(crate) async fn clusters(
    web: &Web,
    current: &SignedIn,
    path: &str,
    tab: Tab,
    created: Option<Created>,
    error: Option<String>,
    name: String,
) -> Response {
    let (project, level) = match project_for(web, current, path).await {
        Ok(found) => found,
        Err(not_found) => return not_found,
    };
    let unavailable = |error: StoreError| {
        tracing::error!(%error, "listing agents failed");
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "kas could not list the agents; try again.",
            Some(current.user.username.clone()),
            current.csrf(),
        )
    };
    let folders = config_folders(web, &project).await;
    let own = match rows(web, &project, &folders).await {
        Ok(rows) => rows,
        Err(error) => return unavailable(error),
    };
    // Which agents are shared needs every agent's configuration: read
    // only on the tab that lists them.
    let shared = if tab == Tab::Shared {
        match shared_rows(web, &project).await {
            Ok(rows) => Some(rows),
            Err(error) => return unavailable(error),
        }
    } else {
        None
    };
    let registered: Vec<&str> = own.iter().map(|a| a.name.as_str()).collect();
    // Configuration folders with no agent of that name yet.
    let available: Vec<String> = folders
        .into_iter()
        .filter(|n| !registered.contains(&n.as_str()))
        .collect();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let (project_count, shared_count) = (own.len(), shared.as_ref().map(Vec::len));
    let html = ClustersPage {
        user: Some(current.user.username.clone()),
        csrf: current.csrf(),
        project_name: project.name.clone(),
        project_path: project.full_path.clone(),
        can_admin: level.can_admin_agents(),
        tab,
        project_count,
        shared_count,
        agents: shared.unwrap_or(own),
        available,
        created,
        error,
        name,
    }
    .render()
    .unwrap_or_default();
    page(status, html)
}

/// The rows of a tab as JSON, once.
pub(crate) async fn status(web: &Web, current: &SignedIn, path: &str, tab: Tab) -> Response {
    let (project, _) = match project_for(web, current, path).await {
        Ok(found) => found,
        Err(not_found) => return not_found,
    };
    match tab_rows(web, &project, tab).await {
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

/// The rows of a tab as Server-Sent Events: now, then whenever a
/// connection on this replica changes and they with it (every
/// [`STREAM_SAFETY`] otherwise). The stream ends when the session does.
pub(crate) async fn stream(web: &Web, current: &SignedIn, path: &str, tab: Tab) -> Response {
    let (project, _) = match project_for(web, current, path).await {
        Ok(found) => found,
        Err(not_found) => return not_found,
    };
    struct Follow {
        web: Web,
        session: String,
        project: Project,
        tab: Tab,
        changes: tokio::sync::watch::Receiver<u64>,
        last: Option<String>,
    }
    let follow = Follow {
        changes: web.connections.registry.changes(),
        web: web.clone(),
        session: current.token.clone(),
        project,
        tab,
        last: None,
    };
    let events = futures_util::stream::unfold(follow, |mut follow| async move {
        loop {
            if follow.last.is_some() {
                tokio::select! {
                    _ = follow.changes.changed() => {}
                    _ = tokio::time::sleep(STREAM_SAFETY) => {}
                }
            }
            if !matches!(
                glagent_services::sessions::user(&follow.web.store, &follow.session).await,
                Ok(Some(_))
            ) {
                return None;
            }
            let json = match tab_rows(&follow.web, &follow.project, follow.tab).await {
                Ok(agents) => serde_json::json!({ "agents": agents }).to_string(),
                Err(error) => {
                    tracing::warn!(%error, "listing agents for a live page failed");
                    follow.last.get_or_insert_with(String::new);
                    continue;
                }
            };
            if follow.last.as_deref() != Some(json.as_str()) {
                let event = Event::default().data(json.clone());
                follow.last = Some(json);
                return Some((Ok::<_, Infallible>(event), follow));
            }
        }
    });
    let mut response = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    response
        .headers_mut()
        .insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response
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
                Tab::Project,
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
    let on_sent = web.on_token_sent(created.record.id);
    clusters(web, current, path, Tab::Project, Some(shown), None, String::new())
        .await
        .map(|page| Body::new(WhenSent::new(page, on_sent)))
}
