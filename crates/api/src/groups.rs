//! Groups, nested to any depth.

use axum::Json;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use glagent_api_types as api;
use glagent_core::access::AccessLevel;
use glagent_core::names;
use glagent_store::{MemberSource, NamespaceKind, NewNamespace};
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::input::{PageQuery, Params, Query, opt_int};
use super::members::{self, MemberParams};
use super::{entities, find_group, page_of, paginated, require};
use crate::Api;
use glagent_services::events::AccessChange;

pub async fn list(
    State(state): State<Api>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Query(page): Query<PageQuery>,
) -> ApiResult<Response> {
    let page = page.page();
    let mut visible = Vec::new();
    for group in state.store.groups().await? {
        if state.namespace_access(&caller.user, group.id).await?.is_some() {
            visible.push(entities::group(&state, &group));
        }
    }
    let (total, items) = page_of(visible, page);
    Ok(paginated(&state, &uri, page, total, items))
}

pub async fn get(State(state): State<Api>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<api::Group>> {
    let (group, _) = find_group(&state, &caller, &id).await?;
    Ok(Json(entities::group(&state, &group)))
}

#[derive(Deserialize)]
pub struct NewGroupParams {
    name: Option<String>,
    path: Option<String>,
    #[serde(default, deserialize_with = "opt_int")]
    parent_id: Option<i64>,
    description: Option<String>,
}

pub async fn create(
    State(state): State<Api>,
    caller: Caller,
    Params(params): Params<NewGroupParams>,
) -> ApiResult<Response> {
    let name = params.name.filter(|n| !n.trim().is_empty());
    let path = params
        .path
        .filter(|p| !p.is_empty())
        .or_else(|| name.as_deref().map(names::path_from_name));
    let (Some(name), Some(path)) = (name.or_else(|| path.clone()), path) else {
        return Err(ApiError::BadRequest("name is missing".into()));
    };
    names::validate_path(&path).map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    let (parent, full_path) = match params.parent_id {
        Some(parent_id) => {
            let (parent, level) = find_group(&state, &caller, &parent_id.to_string()).await?;
            require(level, AccessLevel::Maintainer)?;
            let full_path = format!("{}/{path}", parent.full_path);
            (Some(parent.id), full_path)
        }
        None => (None, path.clone()),
    };
    if state.store.project_by_full_path(&full_path).await.is_ok()
        || state.store.namespace_by_full_path(&full_path).await.is_ok()
    {
        return Err(ApiError::BadRequest(format!(
            "path {full_path:?} has already been taken"
        )));
    }
    let group = state
        .store
        .create_namespace(&NewNamespace {
            kind: NamespaceKind::Group,
            name,
            path,
            full_path,
            parent_id: parent,
            owner_id: None,
            description: params.description.unwrap_or_default(),
        })
        .await?;
    state
        .store
        .upsert_member(MemberSource::Namespace(group.id), caller.user.id, AccessLevel::Owner)
        .await?;
    Ok((StatusCode::CREATED, Json(entities::group(&state, &group))).into_response())
}

pub async fn delete(State(state): State<Api>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let (group, level) = find_group(&state, &caller, &id).await?;
    require(level, AccessLevel::Owner)?;
    let mut doomed = Vec::new();
    let mut queue = vec![group.id];
    while let Some(ns) = queue.pop() {
        doomed.extend(state.store.projects_in_namespace(ns).await?.into_iter().map(|p| p.id));
        for child in state
            .store
            .groups()
            .await?
            .into_iter()
            .filter(|g| g.parent_id == Some(ns))
        {
            queue.push(child.id);
        }
    }
    state.store.delete_namespace(group.id).await?;
    state
        .events
        .access_changed(AccessChange::GroupDeleted { group_id: group.id });
    for project_id in doomed {
        if let Err(error) = state.repos.remove(project_id).await {
            tracing::warn!(project_id, %error, "could not remove the repository of a deleted project");
        }
    }
    Ok((StatusCode::ACCEPTED, Json(api::Message::new("202 Accepted"))).into_response())
}

pub async fn projects(
    State(state): State<Api>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Response> {
    let (group, _) = find_group(&state, &caller, &id).await?;
    let page = page.page();
    let items: Vec<api::Project> = state
        .store
        .projects_in_namespace(group.id)
        .await?
        .iter()
        .map(|p| entities::project(&state, p, &group))
        .collect();
    let (total, items) = page_of(items, page);
    Ok(paginated(&state, &uri, page, total, items))
}

pub async fn members(
    State(state): State<Api>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Response> {
    let (group, _) = find_group(&state, &caller, &id).await?;
    members::list(&state, &uri, MemberSource::Namespace(group.id), page).await
}

pub async fn member(
    State(state): State<Api>,
    caller: Caller,
    Path((id, user_id)): Path<(String, i64)>,
) -> ApiResult<Json<api::Member>> {
    let (group, _) = find_group(&state, &caller, &id).await?;
    members::get(&state, MemberSource::Namespace(group.id), user_id).await
}

pub async fn add_member(
    State(state): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Params(params): Params<MemberParams>,
) -> ApiResult<Response> {
    let (group, level) = find_group(&state, &caller, &id).await?;
    members::add(&state, MemberSource::Namespace(group.id), level, None, params).await
}

pub async fn add_member_put(
    State(state): State<Api>,
    caller: Caller,
    Path((id, user_id)): Path<(String, i64)>,
    Params(params): Params<MemberParams>,
) -> ApiResult<Response> {
    let (group, level) = find_group(&state, &caller, &id).await?;
    members::add(&state, MemberSource::Namespace(group.id), level, Some(user_id), params).await
}

pub async fn remove_member(
    State(state): State<Api>,
    caller: Caller,
    Path((id, user_id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    let (group, level) = find_group(&state, &caller, &id).await?;
    members::remove(&state, MemberSource::Namespace(group.id), level, user_id).await
}
