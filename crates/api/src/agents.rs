//! Cluster agents, their tokens, and the state of their configuration file.

use axum::Json;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use glagent_core::agent_config::{ConfigError, config_file_path, parse_config};
use glagent_core::names::validate_agent_name;
use glagent_core::secret;
use glagent_store::{Agent, NewAgentToken, Project, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::input::{PageQuery, Params};
use super::{entities, find_project, paginated, require};
use crate::Api;
use glagent_core::access::AccessLevel;
use glagent_services::events::AccessChange;
use glagent_services::install;

async fn find_agent(state: &Api, project: &Project, agent_id: i64) -> ApiResult<Agent> {
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
    let items: Vec<Value> = agents.items.iter().map(|a| entities::agent(a, &project, &ns)).collect();
    Ok(paginated(&state, &uri, page, agents.total, items))
}

pub async fn get(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id)): Path<(String, i64)>,
) -> ApiResult<Json<Value>> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    let ns = state.store.namespace(project.namespace_id).await?;
    Ok(Json(entities::agent(&agent, &project, &ns)))
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
    validate_agent_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let agent = state
        .store
        .create_agent(project.id, &name, caller.user.id)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => ApiError::BadRequest(message),
            other => other.into(),
        })?;
    tracing::info!(agent_id = agent.id, project_id = project.id, agent_name = %agent.name, "agent registered");
    let ns = state.store.namespace(project.namespace_id).await?;
    Ok((StatusCode::CREATED, Json(entities::agent(&agent, &project, &ns))).into_response())
}

pub async fn delete(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Maintainer)?;
    match state.store.delete_agent(project.id, agent_id).await {
        Ok(()) => {
            state.events.access_changed(AccessChange::AgentDeleted { agent_id });
            tracing::info!(agent_id, project_id = project.id, "agent deleted");
            Ok(StatusCode::NO_CONTENT)
        }
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
) -> ApiResult<Json<Value>> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    let path = config_file_path(&agent.name);
    let branch = format!("refs/heads/{}", project.default_branch);
    let commit_id = state.repos.resolve(project.id, &branch).await?;
    let file = match &commit_id {
        Some(commit) => state.repos.read_file(project.id, commit, &path).await?,
        None => None,
    };
    let exists = file.is_some();
    let content = file.map(|f| f.content).unwrap_or_default();
    let body = match parse_config(&path, &content) {
        Ok(config) => json!({
            "agent_id": agent.id,
            "path": path,
            "branch": project.default_branch,
            "commit_id": commit_id,
            "file_exists": exists,
            "valid": true,
            "error": null,
            "config": config,
        }),
        Err(error) => {
            let (line, column) = match &error {
                ConfigError::Invalid { line, column, .. } => (*line, *column),
                _ => (None, None),
            };
            json!({
                "agent_id": agent.id,
                "path": path,
                "branch": project.default_branch,
                "commit_id": commit_id,
                "file_exists": exists,
                "valid": false,
                "error": {"message": error.to_string(), "line": line, "column": column},
                "config": null,
            })
        }
    };
    Ok(Json(body))
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
    let items: Vec<Value> = tokens.items.iter().map(|t| entities::agent_token(t, false)).collect();
    Ok(paginated(&state, &uri, page, tokens.total, items))
}

pub async fn get_token(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id, token_id)): Path<(String, i64, i64)>,
) -> ApiResult<Json<Value>> {
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
    let name = params
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("name is missing".into()))?;
    if name.chars().count() > 255 {
        return Err(ApiError::BadRequest(
            "name is too long (maximum is 255 characters)".into(),
        ));
    }
    if params.description.as_deref().is_some_and(|d| d.chars().count() > 1024) {
        return Err(ApiError::BadRequest(
            "description is too long (maximum is 1024 characters)".into(),
        ));
    }
    let token = secret::new_agent_token();
    let record = state
        .store
        .create_agent_token(&NewAgentToken {
            agent_id: agent.id,
            name,
            description: params.description,
            token_digest: token.digest(),
            created_by: caller.user.id,
        })
        .await?;
    tracing::info!(agent_id = agent.id, token_id = record.id, "agent token created");
    let mut body = entities::agent_token(&record, false);
    body["token"] = json!(token.expose());
    // glagent's extension: the install command with this token, shown once.
    body["install_command"] = json!(install::command(&state.urls, &agent.name, token.expose()));
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn revoke_token(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id, token_id)): Path<(String, i64, i64)>,
) -> ApiResult<StatusCode> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Maintainer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    match state.store.revoke_agent_token(agent.id, token_id).await {
        Ok(()) => {
            state.events.access_changed(AccessChange::AgentTokenRevoked {
                agent_id: agent.id,
                token_id,
            });
            tracing::info!(agent_id = agent.id, token_id, "agent token revoked");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(StoreError::NotFound) => Err(ApiError::NotFound("Agent token")),
        Err(other) => Err(other.into()),
    }
}

/// glagent's own extension (GitLab has this in GraphQL): the agent's live
/// connections to every kas replica, with version warnings.
pub async fn connections(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id)): Path<(String, i64)>,
) -> ApiResult<Json<Value>> {
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
    let items: Vec<Value> = connections
        .iter()
        .map(|connection| {
            let mut warnings = Vec::new();
            if let Some(message) = connection
                .metadata
                .as_ref()
                .and_then(|i| glagent_core::version::version_warning(&i.version, glagent_core::VERSION))
            {
                warnings.push(json!({"version": {"message": message}}));
            }
            if let Some(message) = &mixed {
                warnings.push(json!({"mixed_versions": {"message": message}}));
            }
            json!({
                "connection_id": connection.connection_id,
                "agent_id": connection.agent_id,
                "connected_at": connection.connected_at,
                "metadata": connection.metadata,
                "warnings": warnings,
            })
        })
        .collect();
    Ok(Json(Value::Array(items)))
}

/// glagent's extension: the recommended install command for an agent, with
/// a placeholder for the token (shown only when a token is created).
pub async fn install_command(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id)): Path<(String, i64)>,
) -> ApiResult<Json<Value>> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    Ok(Json(json!({
        "agent_id": agent.id,
        "command": install::command(&state.urls, &agent.name, "<agent token>"),
        "chart_repository": state.urls.charts(),
        "kas_address": state.urls.agent(),
        "agent_version": glagent_core::VERSION,
        "ca_cert": state.urls.ca_pem(),
    })))
}
