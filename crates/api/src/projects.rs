//! Projects, each with a bare Git repository.

use axum::Json;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use glagent_api_types as api;
use glagent_core::access::AccessLevel;
use glagent_core::names;
use glagent_store::{MemberSource, NewProject, StoreError};
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::input::{PageQuery, Params, Query, opt_bool, opt_int};
use super::members::{self, MemberParams};
use super::{entities, find_project, page_of, paginated, require};
use crate::Api;
use glagent_git::{Author, FileChange, FileCommit};
use glagent_services::events::AccessChange;

pub async fn list(
    State(state): State<Api>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Query(page): Query<PageQuery>,
) -> ApiResult<Response> {
    let page = page.page();
    let mut visible = Vec::new();
    for (project, _) in state.visible_projects(&caller.user).await? {
        let ns = state.store.namespace(project.namespace_id).await?;
        visible.push(entities::project(&state, &project, &ns));
    }
    let (total, items) = page_of(visible, page);
    Ok(paginated(&state, &uri, page, total, items))
}

pub async fn get(State(state): State<Api>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<api::Project>> {
    let (project, _) = find_project(&state, &caller, &id).await?;
    let ns = state.store.namespace(project.namespace_id).await?;
    Ok(Json(entities::project(&state, &project, &ns)))
}

#[derive(Deserialize)]
pub struct NewProjectParams {
    name: Option<String>,
    path: Option<String>,
    #[serde(default, deserialize_with = "opt_int")]
    namespace_id: Option<i64>,
    description: Option<String>,
    default_branch: Option<String>,
    #[serde(default, deserialize_with = "opt_bool")]
    initialize_with_readme: Option<bool>,
}

pub async fn create(
    State(state): State<Api>,
    caller: Caller,
    Params(params): Params<NewProjectParams>,
) -> ApiResult<Response> {
    let name = params.name.filter(|n| !n.trim().is_empty());
    let path = params
        .path
        .filter(|p| !p.is_empty())
        .or_else(|| name.as_deref().map(names::path_from_name));
    let (Some(name), Some(path)) = (name.or_else(|| path.clone()), path) else {
        return Err(ApiError::BadRequest("name or path is missing".into()));
    };
    names::validate_path(&path).map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    let namespace = match params.namespace_id {
        Some(id) => match state.store.namespace(id).await {
            Ok(ns) => ns,
            Err(StoreError::NotFound) => return Err(ApiError::NotFound("Namespace")),
            Err(other) => return Err(other.into()),
        },
        None => state.store.user_namespace(caller.user.id).await?,
    };
    let level = state
        .namespace_access(&caller.user, namespace.id)
        .await?
        .ok_or(ApiError::NotFound("Namespace"))?;
    require(level, AccessLevel::Maintainer)?;
    let default_branch = params
        .default_branch
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "main".into());
    validate_branch(&default_branch)?;
    let full_path = format!("{}/{path}", namespace.full_path);
    if state.store.namespace_by_full_path(&full_path).await.is_ok() {
        return Err(ApiError::BadRequest(format!(
            "path {full_path:?} has already been taken"
        )));
    }
    let project = state
        .store
        .create_project(&NewProject {
            namespace_id: namespace.id,
            name,
            path,
            full_path,
            description: params.description.unwrap_or_default(),
            default_branch: default_branch.clone(),
            creator_id: caller.user.id,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::BadRequest("path has already been taken".into()),
            other => other.into(),
        })?;
    if let Err(error) = state.repos.create(project.id, &default_branch).await {
        // Nothing half-made stays: neither the record nor what git wrote.
        if let Err(undo) = state.store.delete_project(project.id).await
            && !matches!(undo, StoreError::NotFound)
        {
            tracing::error!(project_id = project.id, error = %undo, "could not remove a project whose repository failed");
        }
        if let Err(undo) = state.repos.remove(project.id).await {
            tracing::error!(project_id = project.id, error = %undo, "could not remove a failed repository");
        }
        return Err(error.into());
    }
    if params.initialize_with_readme.unwrap_or(false) {
        let change = state.change_repository(project.id).await;
        let readme = format!("# {}\n", project.name).into_bytes();
        let author = Author {
            name: caller.user.name.clone(),
            email: caller.user.email.clone(),
        };
        let update = change
            .repos()
            .commit_file(
                project.id,
                FileCommit {
                    branch: &default_branch,
                    start_branch: None,
                    path: "README.md",
                    change: FileChange::Create(readme),
                    message: "Initial commit",
                    author: &author,
                },
            )
            .await?;
        change.finish(Some(caller.user.id), &[update]).await;
    }
    Ok((
        StatusCode::CREATED,
        Json(entities::project(&state, &project, &namespace)),
    )
        .into_response())
}

pub fn validate_branch(branch: &str) -> ApiResult<()> {
    let ok = !branch.is_empty()
        && !branch.starts_with(['-', '/', '.'])
        && !branch.ends_with(['/', '.'])
        && !branch.contains("..")
        && !branch.contains("//")
        && !branch.ends_with(".lock")
        && branch
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("branch name {branch:?} is invalid")))
    }
}

pub async fn delete(State(state): State<Api>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Owner)?;
    state.store.delete_project(project.id).await?;
    state
        .events
        .access_changed(AccessChange::ProjectDeleted { project_id: project.id });
    if let Err(error) = state.repos.remove(project.id).await {
        tracing::warn!(project_id = project.id, %error, "could not remove the repository of a deleted project");
    }
    Ok((StatusCode::ACCEPTED, Json(api::Message::new("202 Accepted"))).into_response())
}

pub async fn members(
    State(state): State<Api>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Response> {
    let (project, _) = find_project(&state, &caller, &id).await?;
    members::list(&state, &uri, MemberSource::Project(project.id), page).await
}

pub async fn member(
    State(state): State<Api>,
    caller: Caller,
    Path((id, user_id)): Path<(String, i64)>,
) -> ApiResult<Json<api::Member>> {
    let (project, _) = find_project(&state, &caller, &id).await?;
    members::get(&state, MemberSource::Project(project.id), user_id).await
}

pub async fn add_member(
    State(state): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Params(params): Params<MemberParams>,
) -> ApiResult<Response> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    members::add(&state, MemberSource::Project(project.id), level, None, params).await
}

pub async fn add_member_put(
    State(state): State<Api>,
    caller: Caller,
    Path((id, user_id)): Path<(String, i64)>,
    Params(params): Params<MemberParams>,
) -> ApiResult<Response> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    members::add(&state, MemberSource::Project(project.id), level, Some(user_id), params).await
}

pub async fn remove_member(
    State(state): State<Api>,
    caller: Caller,
    Path((id, user_id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    members::remove(&state, MemberSource::Project(project.id), level, user_id).await
}
