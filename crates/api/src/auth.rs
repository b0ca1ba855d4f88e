//! Who is calling: a personal access token from `PRIVATE-TOKEN` or
//! `Authorization: Bearer`, checked against its digest, expiry and scopes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use glagent_services::auth::AuthError;

use super::error::{ApiError, ApiResult};
use crate::Api;

pub use glagent_services::auth::{Caller, SCOPES};

impl FromRequestParts<Api> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Api) -> ApiResult<Caller> {
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
pub async fn authenticate(state: &Api, token: &str) -> ApiResult<Caller> {
    glagent_services::auth::authenticate(&state.store, token)
        .await
        .map_err(|e| match e {
            AuthError::Unauthorized => ApiError::Unauthorized,
            AuthError::Store(e) => e.into(),
        })
}
