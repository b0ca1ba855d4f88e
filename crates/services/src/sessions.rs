//! Browser sessions of the web UI. The cookie holds a random token; the
//! store keeps its SHA-256 digest only, so a database dump signs no one in.
//! A session lasts a week unless its user signs out, which ends it on the
//! server. The CSRF token of a session is derived from its token (HMAC),
//! so it needs no storage and cannot be computed without the cookie.

use std::time::Duration;

use glagent_core::secret;
use glagent_store::{Store, StoreError, Timestamp, User};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The cookie that carries the session to the Kubernetes API proxy for
/// the dashboards' requests (scoped to the proxy's path, set by the pages
/// that show a dashboard).
pub const PROXY_COOKIE: &str = "_glagent_kas";

/// How long a session lasts.
pub const LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A new session's cookie value.
pub struct NewSession {
    pub token: String,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn random_token() -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Conflict("the system's random number generator failed".into()))?;
    Ok(hex::encode(bytes))
}

/// Signs `user` in.
pub async fn start(store: &Store, user: &User) -> Result<NewSession, StoreError> {
    let token = random_token()?;
    let expires_at = Timestamp::from_now(LIFETIME);
    store
        .create_web_session(&secret::digest(&token), user.id, expires_at)
        .await?;
    Ok(NewSession { token, expires_at })
}

/// The signed-in user of a session cookie, if the session is live.
pub async fn user(store: &Store, token: &str) -> Result<Option<User>, StoreError> {
    match store.web_session_user(&secret::digest(token)).await {
        Ok(user) => Ok(Some(user)),
        Err(StoreError::NotFound) => Ok(None),
        Err(other) => Err(other),
    }
}

/// Signs out: the session ends on the server.
pub async fn end(store: &Store, token: &str) -> Result<(), StoreError> {
    store.delete_web_session(&secret::digest(token)).await
}

/// The CSRF token of a session (or of a signed-out browser's cookie).
pub fn csrf_token(token: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    hex::encode(hmac::sign(&key, b"glagent csrf").as_ref())
}

/// Whether `given` is the CSRF token of `token`, in constant time.
pub fn csrf_matches(token: &str, given: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    match hex::decode(given) {
        Ok(tag) => hmac::verify(&key, b"glagent csrf", &tag).is_ok(),
        Err(_) => false,
    }
}

/// A random value for a signed-out browser's CSRF cookie.
pub fn anonymous_token() -> Result<String, StoreError> {
    random_token()
}

/// The value of cookie `name` among `Cookie` header values; only a
/// well-formed (alphanumeric) value counts.
pub fn cookie<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<String> {
    headers
        .into_iter()
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let a = csrf_token("session-a");
        assert!(csrf_matches("session-a", &a));
        assert!(!csrf_matches("session-b", &a));
        assert!(!csrf_matches("session-a", "not hex"));
        assert!(!csrf_matches("session-a", ""));
    }
}
