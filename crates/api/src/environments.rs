//! Environments of a project, GitLab's Environments API: list (by name,
//! search or state), create, update, stop and delete; an environment may
//! be linked to a cluster through an agent that shares itself with the
//! project (`user_access`), a namespace and a Flux object.

use axum::Json;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use glagent_api_types as api;
use glagent_core::access::AccessLevel;
use glagent_core::environment::{self as rules, State as EnvironmentState, Tier};
use glagent_store::{Environment, Namespace, NewEnvironment, Project, StoreError};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::input::{PageQuery, Params, Query, present};
use super::{entities, find_project, page_of, paginated, require};
use crate::Api;

const AGENT_REFUSED: &str = "cluster agent doesn't exist or cannot be associated with this environment";

#[derive(Deserialize)]
pub struct ListParams {
    name: Option<String>,
    search: Option<String>,
    states: Option<String>,
}

pub async fn list(
    State(state): State<Api>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Query(params): Query<ListParams>,
    page: Query<PageQuery>,
) -> ApiResult<Response> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Reporter)?;
    if params.name.is_some() && params.search.is_some() {
        return Err(ApiError::BadRequest("name, search are mutually exclusive".into()));
    }
    if params.search.as_deref().is_some_and(|s| s.chars().count() < 3) {
        return Err(ApiError::BadRequest("search must be at least 3 characters".into()));
    }
    let states = match params.states.as_deref() {
        None => None,
        Some(name) => Some(EnvironmentState::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!("states {name:?} is not one of available, stopping, stopped"))
        })?),
    };
    let namespace = state.store.namespace(project.namespace_id).await?;
    let mut found = Vec::new();
    for environment in state.store.environments(project.id).await? {
        let keep = params.name.as_deref().is_none_or(|n| environment.name == n)
            && params.search.as_deref().is_none_or(|s| name_like(&environment.name, s))
            && states.is_none_or(|s| environment.state == s);
        if keep {
            found.push(show_in(&state, &caller, &project, &namespace, &environment).await?);
        }
    }
    let page = page.0.page();
    let (total, items) = page_of(found, page);
    Ok(paginated(&state, &uri, page, total, items))
}

pub async fn get(
    State(state): State<Api>,
    caller: Caller,
    Path((id, environment_id)): Path<(String, i64)>,
) -> ApiResult<Json<api::Environment>> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Reporter)?;
    let environment = find(&state, &project, environment_id).await?;
    Ok(Json(show(&state, &caller, &project, &environment).await?))
}

#[derive(Deserialize)]
pub struct CreateParams {
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    slug: Option<Value>,
    external_url: Option<String>,
    tier: Option<String>,
    description: Option<String>,
    auto_stop_setting: Option<String>,
    #[serde(default, deserialize_with = "present")]
    cluster_agent_id: Option<Value>,
    kubernetes_namespace: Option<String>,
    flux_resource_path: Option<String>,
}

pub async fn create(
    State(state): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Params(params): Params<CreateParams>,
) -> ApiResult<Response> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    if params.slug.is_some() {
        return Err(ApiError::BadRequest(
            "slug is automatically generated and cannot be changed".into(),
        ));
    }
    let name = params
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("name is missing".into()))?;
    rules::validate_name(&name).map_err(bad)?;
    let external_url = non_empty(params.external_url);
    if let Some(url) = &external_url {
        rules::validate_external_url(url).map_err(bad)?;
    }
    let tier = match non_empty(params.tier) {
        Some(tier) => Tier::parse(&tier).map_err(bad)?,
        None => Tier::guess(&name),
    };
    let auto_stop_setting = auto_stop_setting(params.auto_stop_setting)?.unwrap_or_else(|| "always".into());
    let link = Link {
        agent_id: agent_id(params.cluster_agent_id)?.flatten(),
        namespace: non_empty(params.kubernetes_namespace),
        flux_resource_path: non_empty(params.flux_resource_path),
    };
    link.check(&state, &project, true).await?;
    let environment = state
        .store
        .create_environment(&NewEnvironment {
            project_id: project.id,
            slug: rules::slug(&name),
            name,
            external_url,
            description: non_empty(params.description),
            tier,
            auto_stop_setting,
            cluster_agent_id: link.agent_id,
            kubernetes_namespace: link.namespace,
            flux_resource_path: link.flux_resource_path,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => ApiError::BadRequest(message),
            other => other.into(),
        })?;
    tracing::info!(
        project_id = project.id,
        environment_id = environment.id,
        "environment created"
    );
    let shown = show(&state, &caller, &project, &environment).await?;
    Ok((StatusCode::CREATED, Json(shown)).into_response())
}

#[derive(Deserialize)]
pub struct UpdateParams {
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    slug: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    external_url: Option<Value>,
    tier: Option<String>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Value>,
    auto_stop_setting: Option<String>,
    #[serde(default, deserialize_with = "present")]
    cluster_agent_id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    kubernetes_namespace: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    flux_resource_path: Option<Value>,
}

/// `PUT`: the fields given change; `null` (or an empty value) clears one.
pub async fn update(
    State(state): State<Api>,
    caller: Caller,
    Path((id, environment_id)): Path<(String, i64)>,
    Params(params): Params<UpdateParams>,
) -> ApiResult<Json<api::Environment>> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let mut environment = find(&state, &project, environment_id).await?;
    if params.name.as_deref().is_some_and(|n| n != environment.name) {
        return Err(ApiError::BadRequest(
            "name cannot be changed once the environment exists".into(),
        ));
    }
    if params.slug.is_some() {
        return Err(ApiError::BadRequest(
            "slug is automatically generated and cannot be changed".into(),
        ));
    }
    if let Some(url) = text(params.external_url, "external_url")? {
        if let Some(url) = &url {
            rules::validate_external_url(url).map_err(bad)?;
        }
        environment.external_url = url;
    }
    if let Some(tier) = non_empty(params.tier) {
        environment.tier = Tier::parse(&tier).map_err(bad)?;
    }
    if let Some(description) = text(params.description, "description")? {
        environment.description = description;
    }
    if let Some(setting) = auto_stop_setting(params.auto_stop_setting)? {
        environment.auto_stop_setting = setting;
    }
    let mut link = Link {
        agent_id: environment.cluster_agent_id,
        namespace: environment.kubernetes_namespace.clone(),
        flux_resource_path: environment.flux_resource_path.clone(),
    };
    let agent_given = params.cluster_agent_id.is_some();
    if let Some(agent) = agent_id(params.cluster_agent_id)? {
        link.agent_id = agent;
        if agent.is_none() {
            // No agent, no cluster: the namespace and Flux object go too.
            link.namespace = None;
            link.flux_resource_path = None;
        }
    }
    if let Some(namespace) = text(params.kubernetes_namespace, "kubernetes_namespace")? {
        link.namespace = namespace;
    }
    if let Some(path) = text(params.flux_resource_path, "flux_resource_path")? {
        link.flux_resource_path = path;
    }
    // As GitLab: whether the agent may be linked is asked only when the
    // request names one; the shapes are checked always.
    link.check(&state, &project, agent_given).await?;
    environment.cluster_agent_id = link.agent_id;
    environment.kubernetes_namespace = link.namespace;
    environment.flux_resource_path = link.flux_resource_path;
    let saved = state.store.save_environment(&environment).await?;
    Ok(Json(show(&state, &caller, &project, &saved).await?))
}

/// `POST .../stop`: the environment is stopped (glagent runs no stop jobs).
pub async fn stop(
    State(state): State<Api>,
    caller: Caller,
    Path((id, environment_id)): Path<(String, i64)>,
) -> ApiResult<Json<api::Environment>> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let mut environment = find(&state, &project, environment_id).await?;
    environment.state = EnvironmentState::Stopped;
    let saved = state.store.save_environment(&environment).await?;
    tracing::info!(project_id = project.id, environment_id, "environment stopped");
    Ok(Json(show(&state, &caller, &project, &saved).await?))
}

/// `DELETE`: only a stopped environment may be deleted, as in GitLab.
pub async fn delete(
    State(state): State<Api>,
    caller: Caller,
    Path((id, environment_id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let environment = find(&state, &project, environment_id).await?;
    if environment.state != EnvironmentState::Stopped {
        return Err(ApiError::ForbiddenBecause(
            "stop the environment before deleting it (POST .../environments/:id/stop)".into(),
        ));
    }
    state.store.delete_environment(project.id, environment_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn find(state: &Api, project: &Project, environment_id: i64) -> ApiResult<Environment> {
    match state.store.environment(project.id, environment_id).await {
        Ok(environment) => Ok(environment),
        Err(StoreError::NotFound) => Err(ApiError::NotFound("Environment")),
        Err(other) => Err(other.into()),
    }
}

/// GitLab's `search`: the name, or a part of it after a `/` (a folder's
/// environment), starts with the text, whatever the case.
fn name_like(name: &str, search: &str) -> bool {
    let name = name.to_lowercase();
    let search = search.to_lowercase();
    name.starts_with(&search) || name.split('/').skip(1).any(|part| part.starts_with(&search))
}

fn bad(error: rules::EnvironmentError) -> ApiError {
    ApiError::BadRequest(error.to_string())
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// A field that may be set, cleared (`null` or empty) or left alone.
fn text(value: Option<Value>, field: &str) -> ApiResult<Option<Option<String>>> {
    match value {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.is_empty() => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s))),
        Some(other) => Err(ApiError::BadRequest(format!("{field} must be a string, got {other}"))),
    }
}

/// `cluster_agent_id`: an agent's id, or `null` to unlink.
fn agent_id(value: Option<Value>) -> ApiResult<Option<Option<i64>>> {
    let refused = || ApiError::BadRequest("cluster_agent_id must be an agent's id (an integer) or null".into());
    match value {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.is_empty() => Ok(Some(None)),
        Some(Value::String(s)) => s.parse().map(|id| Some(Some(id))).map_err(|_| refused()),
        Some(Value::Number(n)) => n.as_i64().map(|id| Some(Some(id))).ok_or_else(refused),
        Some(_) => Err(refused()),
    }
}

fn auto_stop_setting(value: Option<String>) -> ApiResult<Option<String>> {
    match non_empty(value) {
        Some(setting) if matches!(setting.as_str(), "always" | "with_action") => Ok(Some(setting)),
        Some(setting) => Err(ApiError::BadRequest(format!(
            "auto_stop_setting {setting:?} is not one of always, with_action"
        ))),
        None => Ok(None),
    }
}

/// What links an environment to a cluster.
struct Link {
    agent_id: Option<i64>,
    namespace: Option<String>,
    flux_resource_path: Option<String>,
}

impl Link {
    /// The namespace needs an agent, the Flux object a namespace; the agent
    /// must exist and share itself with the project: it is the project's
    /// own, or its `user_access` lists the project or a group above it.
    async fn check(&self, state: &Api, project: &Project, check_agent: bool) -> ApiResult<()> {
        if let Some(namespace) = &self.namespace {
            if self.agent_id.is_none() {
                return Err(ApiError::BadRequest(
                    "kubernetes_namespace needs a cluster_agent_id".into(),
                ));
            }
            rules::validate_namespace(namespace).map_err(bad)?;
        }
        if let Some(path) = &self.flux_resource_path {
            if self.namespace.is_none() {
                return Err(ApiError::BadRequest(
                    "flux_resource_path needs a kubernetes_namespace".into(),
                ));
            }
            rules::validate_flux_resource_path(path).map_err(bad)?;
        }
        let Some(agent_id) = self.agent_id.filter(|_| check_agent) else {
            return Ok(());
        };
        let agent = match state.store.agent_by_id(agent_id).await {
            Ok(agent) => agent,
            Err(StoreError::NotFound) => return Err(ApiError::BadRequest(AGENT_REFUSED.into())),
            Err(other) => return Err(other.into()),
        };
        if agent.project_id == project.id {
            return Ok(());
        }
        let config_project = state.store.project(agent.project_id).await?;
        let shared = match state.configs.current(&config_project, &agent).await {
            Ok(config) => match &config.user_access {
                Some(access) => {
                    let groups: Vec<String> = state
                        .namespace_chain(project.namespace_id)
                        .await?
                        .into_iter()
                        .filter(|ns| ns.is_group())
                        .map(|ns| ns.full_path)
                        .collect();
                    access.projects.iter().any(|p| p.id.as_str() == project.full_path)
                        || access
                            .groups
                            .iter()
                            .any(|g| groups.iter().any(|path| path == g.id.as_str()))
                }
                None => false,
            },
            Err(_) => false,
        };
        if shared {
            Ok(())
        } else {
            Err(ApiError::BadRequest(AGENT_REFUSED.into()))
        }
    }
}

/// The entity, with the cluster link only for callers who may read the
/// linked agent (developers of its project).
async fn show(
    state: &Api,
    caller: &Caller,
    project: &Project,
    environment: &Environment,
) -> ApiResult<api::Environment> {
    let namespace = state.store.namespace(project.namespace_id).await?;
    show_in(state, caller, project, &namespace, environment).await
}

/// [`show`] with the project's namespace read already (lists read it once).
async fn show_in(
    state: &Api,
    caller: &Caller,
    project: &Project,
    namespace: &Namespace,
    environment: &Environment,
) -> ApiResult<api::Environment> {
    let mut shown = entities::environment(state, environment, project, namespace);
    if let Some(agent_id) = environment.cluster_agent_id
        && let Ok(agent) = state.store.agent_by_id(agent_id).await
    {
        let config_project = state.store.project(agent.project_id).await?;
        let readable = state
            .project_access(&caller.user, &config_project)
            .await?
            .is_some_and(|level| level >= AccessLevel::Developer);
        if readable {
            let config_namespace = state.store.namespace(config_project.namespace_id).await?;
            let receptive = state.store.url_configuration(agent.id).await?.is_some();
            shown.cluster_agent = Some(entities::agent(&agent, &config_project, &config_namespace, receptive));
            shown.kubernetes_namespace = Some(environment.kubernetes_namespace.clone());
            shown.flux_resource_path = Some(environment.flux_resource_path.clone());
        }
    }
    Ok(shown)
}
