//! Users and their personal access tokens.

use axum::Json;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use glagent_api_types as api;
use glagent_core::secret;
use glagent_store::{NewPersonalAccessToken, StoreError};
use serde::Deserialize;

use super::auth::{Caller, SCOPES};
use super::entities;
use super::error::{ApiError, ApiResult};
use super::input::{PageQuery, Params, Query, opt_bool, string_list};
use super::paginated;
use crate::Api;
use glagent_services::events::AccessChange;

pub async fn current(State(state): State<Api>, caller: Caller) -> Json<api::User> {
    Json(entities::user(&state, &caller.user, true))
}

#[derive(Deserialize)]
pub struct ListParams {
    /// GitLab's exact match on the user name (one user or none).
    username: Option<String>,
}

pub async fn list(
    State(state): State<Api>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<ListParams>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Response> {
    let page = page.page();
    let admin = caller.user.is_admin;
    if let Some(username) = params.username {
        let found = match state.store.user_by_username(&username).await {
            Ok(user) => vec![entities::user(&state, &user, admin)],
            Err(StoreError::NotFound) => Vec::new(),
            Err(other) => return Err(other.into()),
        };
        let total = found.len() as i64;
        return Ok(paginated(&state, &uri, page, total, found));
    }
    let users = state.store.list_users(page).await?;
    let items: Vec<api::User> = users.items.iter().map(|u| entities::user(&state, u, admin)).collect();
    Ok(paginated(&state, &uri, page, users.total, items))
}

pub async fn get(State(state): State<Api>, caller: Caller, Path(user_id): Path<i64>) -> ApiResult<Json<api::User>> {
    let user = state
        .store
        .user(user_id)
        .await
        .map_err(|_| ApiError::NotFound("User"))?;
    Ok(Json(entities::user(&state, &user, caller.user.is_admin)))
}

#[derive(Deserialize)]
pub struct NewUserParams {
    username: Option<String>,
    name: Option<String>,
    email: Option<String>,
    #[serde(default, deserialize_with = "opt_bool")]
    admin: Option<bool>,
    /// For signing in to the web UI.
    password: Option<String>,
}

pub async fn create(
    State(state): State<Api>,
    caller: Caller,
    Params(params): Params<NewUserParams>,
) -> ApiResult<Response> {
    if !caller.user.is_admin {
        return Err(ApiError::ForbiddenBecause(
            "only administrators can create users".into(),
        ));
    }
    let username = params
        .username
        .ok_or_else(|| ApiError::BadRequest("username is missing".into()))?;
    glagent_core::names::validate_path(&username).map_err(|e| ApiError::BadRequest(format!("username: {e}")))?;
    if let Some(password) = &params.password {
        glagent_services::passwords::validate(password).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let user = glagent_services::users::create_user(
        &state.store,
        &username,
        params.name.as_deref().unwrap_or(&username),
        params.email.as_deref().unwrap_or(""),
        params.admin.unwrap_or(false),
    )
    .await?;
    if let Some(password) = &params.password {
        glagent_services::passwords::set(&state.store, user.id, password)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    Ok((StatusCode::CREATED, Json(entities::user(&state, &user, true))).into_response())
}

#[derive(Deserialize)]
pub struct NewTokenParams {
    name: Option<String>,
    #[serde(default, deserialize_with = "string_list")]
    scopes: Vec<String>,
    expires_at: Option<String>,
}

pub async fn create_token(
    State(state): State<Api>,
    caller: Caller,
    Path(user_id): Path<i64>,
    Params(params): Params<NewTokenParams>,
) -> ApiResult<Response> {
    if !caller.user.is_admin {
        return Err(ApiError::ForbiddenBecause(
            "only administrators can create tokens for users".into(),
        ));
    }
    let user = match state.store.user(user_id).await {
        Ok(user) => user,
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("User")),
        Err(other) => return Err(other.into()),
    };
    let name = params
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("name is missing".into()))?;
    validate_scopes(&params.scopes)?;
    if let Some(date) = &params.expires_at {
        validate_date(date)?;
    }
    let token = secret::new_personal_access_token();
    let record = state
        .store
        .create_personal_access_token(&NewPersonalAccessToken {
            user_id: user.id,
            name,
            scopes: params.scopes.clone(),
            token_digest: token.digest(),
            expires_at: params.expires_at.clone(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(entities::created_personal_access_token(&record, token.expose())),
    )
        .into_response())
}

pub fn validate_scopes(scopes: &[String]) -> ApiResult<()> {
    if scopes.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "scopes is missing: give one or more of {}",
            SCOPES.join(", ")
        )));
    }
    if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "scopes: {bad:?} is not a scope; use {}",
            SCOPES.join(", ")
        )));
    }
    Ok(())
}

pub fn validate_date(date: &str) -> ApiResult<()> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(date, format)
        .map(|_| ())
        .map_err(|_| ApiError::BadRequest(format!("expires_at: {date:?} is not a date; use YYYY-MM-DD")))
}

#[derive(Deserialize)]
pub struct SelfTokenParams {
    name: Option<String>,
    #[serde(default, deserialize_with = "string_list")]
    scopes: Vec<String>,
    expires_at: Option<String>,
}

/// `POST /user/personal_access_tokens`: a user makes a token for
/// themselves; as in GitLab, only the `k8s_proxy` scope is allowed here.
pub async fn create_own_token(
    State(state): State<Api>,
    caller: Caller,
    Params(params): Params<SelfTokenParams>,
) -> ApiResult<Response> {
    let name = params
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("name is missing".into()))?;
    if params.scopes != ["k8s_proxy"] {
        return Err(ApiError::BadRequest(
            "scopes must be [\"k8s_proxy\"]: other scopes need an administrator".into(),
        ));
    }
    let expires_at = params
        .expires_at
        .ok_or_else(|| ApiError::BadRequest("expires_at is missing (YYYY-MM-DD)".into()))?;
    validate_date(&expires_at)?;
    let token = secret::new_personal_access_token();
    let record = state
        .store
        .create_personal_access_token(&NewPersonalAccessToken {
            user_id: caller.user.id,
            name,
            scopes: params.scopes.clone(),
            token_digest: token.digest(),
            expires_at: Some(expires_at),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(entities::created_personal_access_token(&record, token.expose())),
    )
        .into_response())
}

/// `GET /personal_access_tokens`: the caller's tokens (administrators may
/// pass `user_id`).
pub async fn list_tokens(
    State(state): State<Api>,
    caller: Caller,
    Query(query): Query<TokenListQuery>,
) -> ApiResult<Json<Vec<api::PersonalAccessToken>>> {
    let user_id = match query.user_id {
        Some(id) if id != caller.user.id && !caller.user.is_admin => {
            return Err(ApiError::ForbiddenBecause(
                "only administrators may list another user's tokens".into(),
            ));
        }
        Some(id) => id,
        None => caller.user.id,
    };
    let tokens = state.store.personal_access_tokens(user_id).await?;
    Ok(Json(tokens.iter().map(entities::personal_access_token).collect()))
}

#[derive(Deserialize)]
pub struct TokenListQuery {
    #[serde(default, deserialize_with = "super::input::opt_int")]
    user_id: Option<i64>,
}

/// `DELETE /personal_access_tokens/:id`: revokes one of the caller's tokens
/// (administrators: anyone's). It stops working at once.
pub async fn revoke_token(State(state): State<Api>, caller: Caller, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    let token = state
        .store
        .personal_access_token(id)
        .await
        .map_err(|_| ApiError::NotFound("Token"))?;
    if token.user_id != caller.user.id && !caller.user.is_admin {
        return Err(ApiError::NotFound("Token"));
    }
    match state.store.revoke_personal_access_token(id).await {
        Ok(()) => {
            state
                .events
                .access_changed(AccessChange::PersonalAccessTokenRevoked { token_id: id });
            tracing::info!(token_id = id, user_id = token.user_id, "personal access token revoked");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(StoreError::NotFound) => Err(ApiError::NotFound("Token")),
        Err(other) => Err(other.into()),
    }
}
