//! Members of groups and projects. Roles are inherited: a member of a group
//! has that role in its subgroups and their projects.

use axum::Json;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use glagent_core::access::AccessLevel;
use glagent_store::{MemberSource, StoreError};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::input::{PageQuery, opt_int};
use super::{entities, page_of, paginated, require};
use crate::Api;
use glagent_services::events::AccessChange;

#[derive(Deserialize)]
pub struct MemberParams {
    #[serde(default, deserialize_with = "opt_int")]
    user_id: Option<i64>,
    #[serde(default, deserialize_with = "opt_int")]
    access_level: Option<i64>,
}

pub async fn list(state: &Api, uri: &Uri, source: MemberSource, page: PageQuery) -> ApiResult<Response> {
    let page = page.page();
    let mut items = Vec::new();
    for member in state.store.members(source).await? {
        let user = state.store.user(member.user_id).await?;
        items.push(entities::member(state, &user, &member));
    }
    let (total, items) = page_of(items, page);
    Ok(paginated(state, uri, page, total, items))
}

pub async fn get(state: &Api, source: MemberSource, user_id: i64) -> ApiResult<Json<glagent_api_types::Member>> {
    let member = state
        .store
        .member(source, user_id)
        .await?
        .ok_or(ApiError::NotFound("Member"))?;
    let user = state.store.user(user_id).await?;
    Ok(Json(entities::member(state, &user, &member)))
}

/// Adds a member or changes their role. Maintainers may grant roles up to
/// maintainer; only owners may grant owner.
pub async fn add(
    state: &Api,
    source: MemberSource,
    caller_level: AccessLevel,
    user_id: Option<i64>,
    params: MemberParams,
) -> ApiResult<Response> {
    require(caller_level, AccessLevel::Maintainer)?;
    let user_id = user_id
        .or(params.user_id)
        .ok_or_else(|| ApiError::BadRequest("user_id is missing".into()))?;
    let raw_level = params
        .access_level
        .ok_or_else(|| ApiError::BadRequest("access_level is missing".into()))?;
    let level = AccessLevel::try_from(raw_level).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if level > caller_level {
        return Err(ApiError::ForbiddenBecause(format!(
            "you cannot grant {}, a role above your own ({})",
            level.name(),
            caller_level.name()
        )));
    }
    let user = match state.store.user(user_id).await {
        Ok(user) => user,
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("User")),
        Err(other) => return Err(other.into()),
    };
    let member = state.store.upsert_member(source, user.id, level).await?;
    state.events.access_changed(AccessChange::Membership);
    Ok((StatusCode::CREATED, Json(entities::member(state, &user, &member))).into_response())
}

pub async fn remove(
    state: &Api,
    source: MemberSource,
    caller_level: AccessLevel,
    user_id: i64,
) -> ApiResult<StatusCode> {
    require(caller_level, AccessLevel::Maintainer)?;
    match state.store.remove_member(source, user_id).await {
        Ok(()) => {
            state.events.access_changed(AccessChange::Membership);
            Ok(StatusCode::NO_CONTENT)
        }
        Err(StoreError::NotFound) => Err(ApiError::NotFound("Member")),
        Err(other) => Err(other.into()),
    }
}
