//! Cluster agents, their tokens, and the state of their configuration file.

use axum::Json;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use glagent_api_types as api;
use glagent_core::agent_config::ConfigError;
use glagent_store::{Agent, Project, StoreError};
use glagent_telemetry::body::WhenSent;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::input::{PageQuery, Params, Query};
use super::{entities, find_project, paginated, require};
use crate::Api;
use glagent_core::access::AccessLevel;
use glagent_services::install;

pub(crate) async fn find_agent(state: &Api, project: &Project, agent_id: i64) -> ApiResult<Agent> {
    match state.store.agent(project.id, agent_id).await {
        Ok(agent) => Ok(agent),
        Err(StoreError::NotFound) => Err(ApiError::NotFound("Agent")),
        Err(other) => Err(other.into()),
    }
}

pub async fn list(
    State(state): State<Api>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Response> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let ns = state.store.namespace(project.namespace_id).await?;
    let page = page.page();
    let agents = state.store.agents(project.id, page).await?;
    let receptive = state.store.receptive_agent_ids(project.id).await?;
    let items: Vec<api::Agent> = agents
        .items
        .iter()
        .map(|a| entities::agent(a, &project, &ns, receptive.contains(&a.id)))
        .collect();
    Ok(paginated(&state, &uri, page, agents.total, items))
}

pub async fn get(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id)): Path<(String, i64)>,
) -> ApiResult<Json<api::Agent>> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    let ns = state.store.namespace(project.namespace_id).await?;
    let receptive = state.store.url_configuration(agent.id).await?.is_some();
    Ok(Json(entities::agent(&agent, &project, &ns, receptive)))
}

#[derive(Deserialize)]
pub struct NewAgentParams {
    name: Option<String>,
}

pub async fn create(
    State(state): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Params(params): Params<NewAgentParams>,
) -> ApiResult<Response> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Maintainer)?;
    let name = params
        .name
        .ok_or_else(|| ApiError::BadRequest("name is missing".into()))?;
    let agent = state.register_agent(&project, &name, &caller.user).await?;
    let ns = state.store.namespace(project.namespace_id).await?;
    Ok((StatusCode::CREATED, Json(entities::agent(&agent, &project, &ns, false))).into_response())
}

pub async fn delete(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Maintainer)?;
    match state.delete_agent(&project, agent_id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::NotFound("Agent")),
        Err(other) => Err(other.into()),
    }
}

/// glagent's own extension: the agent's configuration file as parsed from
/// the default branch, or the error that keeps it from being used.
pub async fn configuration(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id)): Path<(String, i64)>,
) -> ApiResult<Json<api::AgentConfiguration>> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    let head = state.configs.at_head(&project, &agent).await?;
    let (config, error) = match head.parsed {
        Ok(config) => (Some(config), None),
        Err(error) => {
            let (line, column) = match &error {
                ConfigError::Invalid { line, column, .. } => (*line, *column),
                _ => (None, None),
            };
            let message = error.to_string();
            (None, Some(api::ConfigurationError { column, line, message }))
        }
    };
    Ok(Json(api::AgentConfiguration {
        agent_id: agent.id,
        branch: head.branch,
        commit_id: head.commit_id,
        valid: config.is_some(),
        config,
        error,
        file_exists: head.file_exists,
        path: head.path,
    }))
}

pub async fn list_tokens(
    State(state): State<Api>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path((id, agent_id)): Path<(String, i64)>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Response> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    let page = page.page();
    let tokens = state.store.active_agent_tokens(agent.id, page).await?;
    let items: Vec<api::AgentToken> = tokens.items.iter().map(|t| entities::agent_token(t, false)).collect();
    Ok(paginated(&state, &uri, page, tokens.total, items))
}

pub async fn get_token(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id, token_id)): Path<(String, i64, i64)>,
) -> ApiResult<Json<api::AgentToken>> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    let token = state
        .store
        .active_agent_token(agent.id, token_id)
        .await
        .map_err(|_| ApiError::NotFound("Agent token"))?;
    Ok(Json(entities::agent_token(&token, true)))
}

#[derive(Deserialize)]
pub struct NewTokenParams {
    name: Option<String>,
    description: Option<String>,
}

pub async fn create_token(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id)): Path<(String, i64)>,
    Params(params): Params<NewTokenParams>,
) -> ApiResult<Response> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Maintainer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    let name = params.name.unwrap_or_default();
    let created = state
        .create_agent_token(&agent, &name, params.description, &caller.user)
        .await?;
    // glagent's extension: the install command with this token, shown once.
    let body = entities::created_agent_token(&created.record, created.token.expose(), created.install_command);
    let on_sent = state.on_token_sent(created.record.id);
    Ok((StatusCode::CREATED, Json(body))
        .into_response()
        .map(|body| Body::new(WhenSent::new(body, on_sent))))
}

pub async fn revoke_token(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id, token_id)): Path<(String, i64, i64)>,
) -> ApiResult<StatusCode> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Maintainer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    match state.revoke_agent_token(&agent, token_id, &caller.user).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::NotFound("Agent token")),
        Err(other) => Err(other.into()),
    }
}

/// glagent's extension: the audit log of requests through the Kubernetes
/// API proxy to this agent, newest first; maintainers only (it names
/// every user who used the agent).
pub async fn audit_events(
    State(state): State<Api>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path((id, agent_id)): Path<(String, i64)>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Response> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Maintainer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    let page = page.page();
    let events = state.store.audit_events(agent.id, page).await?;
    let items: Vec<api::AuditEvent> = events.items.iter().map(entities::audit_event).collect();
    Ok(paginated(&state, &uri, page, events.total, items))
}

/// glagent's own extension (GitLab has this in GraphQL): the agent's live
/// connections to every kas replica, with version warnings.
pub async fn connections(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id)): Path<(String, i64)>,
) -> ApiResult<Json<Vec<api::Connection>>> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    let connections = state.connections.summaries(&state.services, agent.id).await;
    let versions: Vec<&str> = connections
        .iter()
        .filter_map(|c| c.metadata.as_ref())
        .map(|i| i.version.as_str())
        .collect();
    let mixed = glagent_core::version::mixed_versions_warning(&versions);
    Ok(Json(
        connections
            .iter()
            .map(|connection| entities::connection(connection, mixed.as_deref()))
            .collect(),
    ))
}

/// glagent's extension: the recommended install command for an agent, with
/// a placeholder for the token (shown only when a token is created).
pub async fn install_command(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id)): Path<(String, i64)>,
) -> ApiResult<Json<api::InstallCommand>> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    Ok(Json(api::InstallCommand {
        agent_id: agent.id,
        agent_version: glagent_core::VERSION.to_string(),
        ca_cert: state.urls.ca_pem().map(str::to_string),
        chart_repository: state.urls.charts(),
        command: install::command(&state.urls, &agent.name, "<agent token>"),
        kas_address: state.urls.agent(),
    }))
}
