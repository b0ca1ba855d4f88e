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
use glagent_services::environments::{ClusterLink, EnvironmentInput, validate_auto_stop_setting};
use glagent_store::{Environment, Namespace, Project, StoreError};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::input::{PageQuery, Params, Query, present};
use super::{entities, find_project, page_of, paginated, require};
use crate::Api;

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
    /// glagent's extension: every namespace, the first being
    /// `kubernetes_namespace`.
    #[serde(default, deserialize_with = "present")]
    kubernetes_namespaces: Option<Value>,
    flux_resource_path: Option<String>,
}

/// `kubernetes_namespaces`: a list, or one string separated by commas;
/// `null` or empty for none.
fn namespaces(value: Option<Value>) -> ApiResult<Option<Vec<String>>> {
    let refused = || ApiError::BadRequest("kubernetes_namespaces must be a list of namespace names".into());
    let names: Vec<String> = match value {
        None => return Ok(None),
        Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(refused))
            .collect::<ApiResult<_>>()?,
        Some(_) => return Err(refused()),
    };
    Ok(Some(
        names
            .into_iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
    ))
}

/// Puts a namespace list into a link: the first is GitLab's
/// `kubernetes_namespace`.
fn set_namespaces(link: &mut ClusterLink, mut all: Vec<String>) {
    if all.is_empty() {
        link.namespace = None;
        link.more_namespaces.clear();
    } else {
        link.namespace = Some(all.remove(0));
        link.more_namespaces = all;
    }
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
    let mut link = ClusterLink {
        agent_id: agent_id(params.cluster_agent_id)?.flatten(),
        namespace: non_empty(params.kubernetes_namespace),
        more_namespaces: Vec::new(),
        flux_resource_path: non_empty(params.flux_resource_path),
    };
    if let Some(all) = namespaces(params.kubernetes_namespaces)? {
        set_namespaces(&mut link, all);
    }
    let input = EnvironmentInput {
        name: params.name.unwrap_or_default(),
        external_url: non_empty(params.external_url),
        tier: non_empty(params.tier),
        description: non_empty(params.description),
        auto_stop_setting: non_empty(params.auto_stop_setting),
        link,
    };
    let environment = state.create_environment(&project, input).await?;
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
    kubernetes_namespaces: Option<Value>,
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
    if let Some(setting) = non_empty(params.auto_stop_setting) {
        validate_auto_stop_setting(&setting)?;
        environment.auto_stop_setting = setting;
    }
    let mut link = ClusterLink {
        agent_id: environment.cluster_agent_id,
        namespace: environment.kubernetes_namespace.clone(),
        more_namespaces: environment.more_namespaces.clone(),
        flux_resource_path: environment.flux_resource_path.clone(),
    };
    let agent_given = params.cluster_agent_id.is_some();
    if let Some(agent) = agent_id(params.cluster_agent_id)? {
        link.agent_id = agent;
        if agent.is_none() {
            // No agent, no cluster: the namespace and Flux object go too.
            link.namespace = None;
            link.more_namespaces.clear();
            link.flux_resource_path = None;
        }
    }
    if let Some(namespace) = text(params.kubernetes_namespace, "kubernetes_namespace")? {
        if namespace.is_none() {
            link.more_namespaces.clear();
        }
        link.namespace = namespace;
    }
    if let Some(all) = namespaces(params.kubernetes_namespaces)? {
        set_namespaces(&mut link, all);
    }
    if let Some(path) = text(params.flux_resource_path, "flux_resource_path")? {
        link.flux_resource_path = path;
    }
    // As GitLab: whether the agent may be linked is asked only when the
    // request names one; the shapes are checked always.
    environment.cluster_agent_id = link.agent_id;
    environment.kubernetes_namespace = link.namespace;
    environment.more_namespaces = link.more_namespaces;
    environment.flux_resource_path = link.flux_resource_path;
    let saved = state.save_environment(&project, &environment, agent_given).await?;
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
    let environment = find(&state, &project, environment_id).await?;
    let saved = state.stop_environment(&project, environment).await?;
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
    state.delete_environment(&project, &environment).await?;
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
    if let Some((agent, config_project)) = state.linked_agent(&caller.user, environment).await? {
        let config_namespace = state.store.namespace(config_project.namespace_id).await?;
        let receptive = state.store.url_configuration(agent.id).await?.is_some();
        shown.cluster_agent = Some(entities::agent(&agent, &config_project, &config_namespace, receptive));
        shown.kubernetes_namespace = Some(environment.kubernetes_namespace.clone());
        shown.kubernetes_namespaces = Some(
            environment
                .kubernetes_namespace
                .iter()
                .chain(&environment.more_namespaces)
                .cloned()
                .collect(),
        );
        shown.flux_resource_path = Some(environment.flux_resource_path.clone());
    }
    Ok(shown)
}
