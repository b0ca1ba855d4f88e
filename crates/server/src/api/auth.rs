//! Who is calling: a personal access token from `PRIVATE-TOKEN` or
//! `Authorization: Bearer`, checked against its digest, expiry and scopes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use glagent_core::secret;
use glagent_store::{PersonalAccessToken, StoreError, User};

use super::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The authenticated user of an API request.
pub struct Caller {
    pub user: User,
    pub token: PersonalAccessToken,
}

/// Scopes a personal access token may carry.
pub const SCOPES: &[&str] = &["api", "read_api", "k8s_proxy", "read_repository", "write_repository"];

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        let token = api_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let caller = authenticate(state, &token).await?;
        let read_only = matches!(parts.method, Method::GET | Method::HEAD);
        let allowed = caller.token.has_scope("api") || (read_only && caller.token.has_scope("read_api"));
        if !allowed {
            return Err(ApiError::ForbiddenBecause(
                "insufficient_scope: this request needs a token with the api scope (or read_api for reads)".into(),
            ));
        }
        Ok(caller)
    }
}

/// The token a request carries, if any.
fn api_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get("private-token").and_then(|v| v.to_str().ok()) {
        return Some(value.trim().to_string());
    }
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

/// Resolves a personal access token to its user. Unknown, revoked and
/// expired tokens are all plain 401s, as in GitLab.
pub async fn authenticate(state: &AppState, token: &str) -> ApiResult<Caller> {
    let record = match state
        .store
        .personal_access_token_by_digest(&secret::digest(token))
        .await
    {
        Ok(record) => record,
        Err(StoreError::NotFound) => return Err(ApiError::Unauthorized),
        Err(other) => return Err(other.into()),
    };
    if record.revoked != 0 || record.expires_at.as_deref().is_some_and(expired) {
        return Err(ApiError::Unauthorized);
    }
    let user = state
        .store
        .user(record.user_id)
        .await
        .map_err(|_| ApiError::Unauthorized)?;
    // Recording every use would make each request a database write; a
    // minute's precision is what GitLab keeps too.
    let stale = record
        .last_used_at
        .as_deref()
        .is_none_or(|t| glagent_store::is_older_than(t, std::time::Duration::from_secs(60)));
    if stale && let Err(error) = state.store.touch_personal_access_token(record.id).await {
        tracing::warn!(%error, "could not record token use");
    }
    Ok(Caller { user, token: record })
}

/// PAT expiry dates are days: a token expires at the end of its day.
fn expired(expires_at: &str) -> bool {
    glagent_store::is_past(&format!("{expires_at}T23:59:59Z"))
}
