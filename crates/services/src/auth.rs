//! Who is calling: a personal access token, checked against its digest,
//! revocation and expiry. Every face that takes a PAT (REST, Git over HTTP,
//! the Kubernetes API proxy) resolves it here.

use std::time::Duration;

use glagent_core::secret;
use glagent_store::{PersonalAccessToken, Store, StoreError, User};

/// Scopes a personal access token may carry.
pub const SCOPES: &[&str] = &["api", "read_api", "k8s_proxy", "read_repository", "write_repository"];

/// An authenticated user and the token they used.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: User,
    pub token: PersonalAccessToken,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown, revoked and expired tokens look the same, as in GitLab.
    #[error("the personal access token is unknown, revoked or expired")]
    Unauthorized,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Resolves a personal access token to its user, and records its use (at
/// most once a minute: recording every use would make each request a
/// database write; a minute's precision is what GitLab keeps too).
pub async fn authenticate(store: &Store, token: &str) -> Result<Caller, AuthError> {
    let record = match store.personal_access_token_by_digest(&secret::digest(token)).await {
        Ok(record) => record,
        Err(StoreError::NotFound) => return Err(AuthError::Unauthorized),
        Err(other) => return Err(other.into()),
    };
    if record.revoked || record.is_expired() {
        return Err(AuthError::Unauthorized);
    }
    let user = match store.user(record.user_id).await {
        Ok(user) => user,
        Err(StoreError::NotFound) => return Err(AuthError::Unauthorized),
        Err(other) => return Err(other.into()),
    };
    let stale = record
        .last_used_at
        .is_none_or(|t| t.is_older_than(Duration::from_secs(60)));
    if stale && let Err(error) = store.touch_personal_access_token(record.id).await {
        tracing::warn!(%error, "could not record token use");
    }
    Ok(Caller { user, token: record })
}
