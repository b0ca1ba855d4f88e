//! Operate > Environments (`/<project path>/-/environments`): the list
//! (state, tier, cluster), creating and editing one with its agent (the
//! project's own, or one shared with it through `user_access`), namespace
//! and Flux resource, stopping and deleting it; and the environment's page
//! with its Kubernetes overview. The overview is drawn by
//! `static/dashboard.js` from the API server, through kas's proxy with the
//! session: this page sets the proxy's session cookie, and gives the
//! script the agent, the namespace, the Flux resource and the CSRF token,
//! never a token.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use glagent_core::access::AccessLevel;
use glagent_core::environment::Tier;
use glagent_services::environments::{ClusterLink, EnvironmentError, EnvironmentInput};
use glagent_services::sessions;
use glagent_store::{Environment, Project, StoreError};

use crate::project::project_at;
use crate::session::{SignedIn, set_cookie_at};
use crate::{Web, ago, error_page, page};

/// What an environments path asks for.
pub enum Action {
    List,
    New,
    Create(Form),
    Show(i64),
    Edit(i64),
    Update(i64, Form),
    Stop(i64),
    Delete(i64),
}

/// The environment form's fields.
#[derive(Clone, Debug, Default)]
pub struct Form {
    pub name: String,
    pub tier: String,
    pub external_url: String,
    pub agent_id: String,
    pub namespace: String,
    /// More namespaces, separated by commas.
    pub more_namespaces: String,
    pub flux_resource_path: String,
}

pub struct EnvironmentRow {
    pub id: i64,
    pub name: String,
    pub state: &'static str,
    pub tier: &'static str,
    pub cluster: String,
    pub updated: String,
    pub updated_at: String,
}

/// An agent the form offers.
pub struct AgentChoice {
    pub id: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "environments.html")]
struct ListPage {
    user: Option<String>,
    csrf: String,
    project_name: String,
    project_path: String,
    can_write: bool,
    environments: Vec<EnvironmentRow>,
}

#[derive(Template)]
#[template(path = "environment_form.html")]
struct FormPage {
    user: Option<String>,
    csrf: String,
    project_name: String,
    project_path: String,
    /// `None` for a new environment.
    editing: Option<i64>,
    form: Form,
    tiers: Vec<&'static str>,
    agents: Vec<AgentChoice>,
    proxy: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "environment.html")]
struct ShowPage {
    user: Option<String>,
    csrf: String,
    project_name: String,
    project_path: String,
    can_write: bool,
    environment: EnvironmentRow,
    external_url: Option<String>,
    cluster: Option<Cluster>,
}

/// What the Kubernetes overview shows and reads.
pub struct Cluster {
    pub agent_id: i64,
    pub agent_name: String,
    pub agent_href: String,
    pub status: &'static str,
    pub status_class: &'static str,
    pub last_contact: String,
    /// Every namespace watched, separated by commas.
    pub namespaces: String,
    pub flux_resource_path: String,
    pub proxy: String,
}

pub async fn handle(web: &Web, current: &SignedIn, path: &str, action: Action) -> Response {
    let (project, level) = match project_at(web, current, path, AccessLevel::Reporter).await {
        Ok(found) => found,
        Err(not_found) => return not_found,
    };
    let can_write = level >= AccessLevel::Developer;
    let writes = !matches!(action, Action::List | Action::Show(_));
    if writes && !can_write {
        return error_page(
            StatusCode::FORBIDDEN,
            "Only developers, maintainers and owners of the project can change environments.",
            Some(current.user.username.clone()),
            current.csrf(),
        );
    }
    let result = match action {
        Action::List => list(web, current, &project, can_write).await,
        Action::New => Ok(form_page(web, current, &project, None, Form::default(), None).await),
        Action::Create(form) => create(web, current, &project, form).await,
        Action::Show(id) => show(web, current, &project, can_write, id).await,
        Action::Edit(id) => match find(web, &project, id).await {
            Ok(Some(environment)) => {
                let form = Form {
                    name: environment.name.clone(),
                    tier: environment.tier.name().to_string(),
                    external_url: environment.external_url.clone().unwrap_or_default(),
                    agent_id: environment
                        .cluster_agent_id
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    namespace: environment.kubernetes_namespace.clone().unwrap_or_default(),
                    more_namespaces: environment.more_namespaces.join(", "),
                    flux_resource_path: environment.flux_resource_path.clone().unwrap_or_default(),
                };
                Ok(form_page(web, current, &project, Some(id), form, None).await)
            }
            Ok(None) => Ok(not_found(current)),
            Err(error) => Err(error),
        },
        Action::Update(id, form) => update(web, current, &project, id, form).await,
        Action::Stop(id) => match find(web, &project, id).await {
            Ok(Some(environment)) => web
                .stop_environment(&project, environment)
                .await
                .map(|_| Redirect::to(&format!("/{}/-/environments/{id}", project.full_path)).into_response()),
            Ok(None) => Ok(not_found(current)),
            Err(error) => Err(error),
        },
        Action::Delete(id) => match find(web, &project, id).await {
            Ok(Some(environment)) => match web.delete_environment(&project, &environment).await {
                Ok(()) => Ok(Redirect::to(&format!("/{}/-/environments", project.full_path)).into_response()),
                Err(EnvironmentError::Refused(message)) => Ok(error_page(
                    StatusCode::FORBIDDEN,
                    &message.replace(" (POST .../environments/:id/stop)", ""),
                    Some(current.user.username.clone()),
                    current.csrf(),
                )),
                Err(EnvironmentError::Store(error)) => Err(error),
                Err(EnvironmentError::Invalid(message)) => Ok(error_page(
                    StatusCode::BAD_REQUEST,
                    &message,
                    Some(current.user.username.clone()),
                    current.csrf(),
                )),
            },
            Ok(None) => Ok(not_found(current)),
            Err(error) => Err(error),
        },
    };
    result.unwrap_or_else(|error| {
        tracing::error!(%error, "an environments page failed");
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "kas could not read the environments; try again.",
            Some(current.user.username.clone()),
            current.csrf(),
        )
    })
}

fn not_found(current: &SignedIn) -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "404 Environment Not Found",
        Some(current.user.username.clone()),
        current.csrf(),
    )
}

async fn find(web: &Web, project: &Project, id: i64) -> Result<Option<Environment>, StoreError> {
    match web.store.environment(project.id, id).await {
        Ok(environment) => Ok(Some(environment)),
        Err(StoreError::NotFound) => Ok(None),
        Err(error) => Err(error),
    }
}

async fn row(web: &Web, current: &SignedIn, environment: &Environment) -> Result<EnvironmentRow, StoreError> {
    let cluster = match web.linked_agent(&current.user, environment).await? {
        Some((agent, _)) => match &environment.kubernetes_namespace {
            Some(namespace) => {
                let all: Vec<&str> = std::iter::once(namespace.as_str())
                    .chain(environment.more_namespaces.iter().map(String::as_str))
                    .collect();
                format!("{} · {}", agent.name, all.join(", "))
            }
            None => agent.name,
        },
        None => String::new(),
    };
    Ok(EnvironmentRow {
        id: environment.id,
        name: environment.name.clone(),
        state: environment.state.name(),
        tier: environment.tier.name(),
        cluster,
        updated: ago(environment.updated_at),
        updated_at: environment.updated_at.to_string(),
    })
}

async fn list(web: &Web, current: &SignedIn, project: &Project, can_write: bool) -> Result<Response, StoreError> {
    let mut environments = Vec::new();
    for environment in web.store.environments(project.id).await? {
        environments.push(row(web, current, &environment).await?);
    }
    let html = ListPage {
        user: Some(current.user.username.clone()),
        csrf: current.csrf(),
        project_name: project.name.clone(),
        project_path: project.full_path.clone(),
        can_write,
        environments,
    }
    .render()
    .unwrap_or_default();
    Ok(page(StatusCode::OK, html))
}

/// The agents an environment of this project may use: its own, and those
/// shared with it through `user_access`.
async fn agent_choices(web: &Web, project: &Project) -> Result<Vec<AgentChoice>, StoreError> {
    let mut choices: Vec<AgentChoice> = web
        .store
        .agents(
            project.id,
            glagent_store::Page {
                page: 1,
                per_page: 10_000,
            },
        )
        .await?
        .items
        .into_iter()
        .map(|agent| AgentChoice {
            id: agent.id.to_string(),
            label: format!("{} ({})", agent.name, project.full_path),
        })
        .collect();
    for shared in web.agents_shared_with(project).await? {
        if shared.sharing.user_access && shared.agent.project_id != project.id {
            choices.push(AgentChoice {
                id: shared.agent.id.to_string(),
                label: format!("{} ({})", shared.agent.name, shared.config_project.full_path),
            });
        }
    }
    Ok(choices)
}

async fn form_page(
    web: &Web,
    current: &SignedIn,
    project: &Project,
    editing: Option<i64>,
    form: Form,
    error: Option<String>,
) -> Response {
    let agents = agent_choices(web, project).await.unwrap_or_else(|error| {
        tracing::error!(%error, "listing agents for the environment form failed");
        Vec::new()
    });
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let html = FormPage {
        user: Some(current.user.username.clone()),
        csrf: current.csrf(),
        project_name: project.name.clone(),
        project_path: project.full_path.clone(),
        editing,
        form,
        tiers: Tier::ALL.iter().map(|t| t.name()).collect(),
        agents,
        proxy: web.urls.k8s_proxy_path(),
        error,
    }
    .render()
    .unwrap_or_default();
    with_proxy_cookie(web, current, page(status, html))
}

/// Lets the page's script reach the proxy with the session: the cookie
/// is sent back to the proxy's path only.
fn with_proxy_cookie(web: &Web, current: &SignedIn, mut response: Response) -> Response {
    let cookie = set_cookie_at(
        web,
        sessions::PROXY_COOKIE,
        &current.token,
        &web.urls.k8s_proxy_path(),
        Some(24 * 3600),
    );
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

fn optional(value: &str) -> Option<String> {
    Some(value.trim().to_string()).filter(|v| !v.is_empty())
}

/// The form's agent: empty for none, else an id.
fn agent_of(form: &Form) -> Result<Option<i64>, String> {
    match optional(&form.agent_id) {
        None => Ok(None),
        Some(id) => id
            .parse()
            .map(Some)
            .map_err(|_| "choose an agent from the list".to_string()),
    }
}

fn link_of(form: &Form) -> Result<ClusterLink, String> {
    Ok(ClusterLink {
        agent_id: agent_of(form)?,
        namespace: optional(&form.namespace),
        more_namespaces: form
            .more_namespaces
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
        flux_resource_path: optional(&form.flux_resource_path),
    })
}

async fn create(web: &Web, current: &SignedIn, project: &Project, form: Form) -> Result<Response, StoreError> {
    let link = match link_of(&form) {
        Ok(link) => link,
        Err(message) => return Ok(form_page(web, current, project, None, form, Some(message)).await),
    };
    let input = EnvironmentInput {
        name: form.name.trim().to_string(),
        external_url: optional(&form.external_url),
        tier: optional(&form.tier),
        description: None,
        auto_stop_setting: None,
        link,
    };
    match web.create_environment(project, input).await {
        Ok(environment) => {
            Ok(Redirect::to(&format!("/{}/-/environments/{}", project.full_path, environment.id)).into_response())
        }
        Err(EnvironmentError::Store(error)) => Err(error),
        Err(EnvironmentError::Invalid(message) | EnvironmentError::Refused(message)) => {
            let message = format!("The environment was not created: {message}");
            Ok(form_page(web, current, project, None, form, Some(message)).await)
        }
    }
}

async fn update(web: &Web, current: &SignedIn, project: &Project, id: i64, form: Form) -> Result<Response, StoreError> {
    let Some(mut environment) = find(web, project, id).await? else {
        return Ok(not_found(current));
    };
    let refused = async |message: String, form: Form| {
        let message = format!("The environment was not saved: {message}");
        form_page(web, current, project, Some(id), form, Some(message)).await
    };
    let link = match link_of(&form) {
        Ok(link) => link,
        Err(message) => return Ok(refused(message, form).await),
    };
    if let Some(tier) = optional(&form.tier) {
        match Tier::parse(&tier) {
            Ok(tier) => environment.tier = tier,
            Err(error) => return Ok(refused(error.to_string(), form).await),
        }
    }
    let agent_changed = link.agent_id != environment.cluster_agent_id;
    environment.external_url = optional(&form.external_url);
    environment.cluster_agent_id = link.agent_id;
    environment.kubernetes_namespace = link.namespace;
    environment.more_namespaces = link.more_namespaces;
    environment.flux_resource_path = link.flux_resource_path;
    match web.save_environment(project, &environment, agent_changed).await {
        Ok(_) => Ok(Redirect::to(&format!("/{}/-/environments/{id}", project.full_path)).into_response()),
        Err(EnvironmentError::Store(error)) => Err(error),
        Err(EnvironmentError::Invalid(message) | EnvironmentError::Refused(message)) => {
            Ok(refused(message, form).await)
        }
    }
}

async fn show(
    web: &Web,
    current: &SignedIn,
    project: &Project,
    can_write: bool,
    id: i64,
) -> Result<Response, StoreError> {
    let Some(environment) = find(web, project, id).await? else {
        return Ok(not_found(current));
    };
    let shown = row(web, current, &environment).await?;
    let cluster = match web.linked_agent(&current.user, &environment).await? {
        Some((agent, config_project)) => {
            let connections = web.connections.summaries(&web.services, agent.id).await;
            let last_used = web.store.agent_last_contact(agent.id).await?;
            let last = last_used.max(connections.iter().map(|c| c.connected_at).max());
            let (status, status_class) = match (connections.is_empty(), last) {
                (false, _) => ("Connected", "success"),
                (true, Some(_)) => ("Not connected", "danger"),
                (true, None) => ("Never connected", "neutral"),
            };
            Some(Cluster {
                agent_id: agent.id,
                agent_href: format!("/{}/-/cluster_agents/{}", config_project.full_path, agent.name),
                agent_name: agent.name,
                status,
                status_class,
                last_contact: last.map(ago).unwrap_or_else(|| "Never".into()),
                namespaces: environment
                    .kubernetes_namespace
                    .iter()
                    .chain(&environment.more_namespaces)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
                flux_resource_path: environment.flux_resource_path.clone().unwrap_or_default(),
                proxy: web.urls.k8s_proxy_path(),
            })
        }
        None => None,
    };
    let html = ShowPage {
        user: Some(current.user.username.clone()),
        csrf: current.csrf(),
        project_name: project.name.clone(),
        project_path: project.full_path.clone(),
        can_write,
        environment: shown,
        external_url: environment.external_url.clone(),
        cluster,
    }
    .render()
    .unwrap_or_default();
    let response = with_proxy_cookie(web, current, page(StatusCode::OK, html));
    Ok(response)
}
