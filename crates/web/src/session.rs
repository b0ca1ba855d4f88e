//! Cookies and forms. A signed-in browser holds `_glagent_session`
//! (HttpOnly, SameSite=Lax, Secure when kas is served over HTTPS); a
//! signed-out one gets `_glagent_csrf` for the sign-in form. Every form
//! carries `authenticity_token`, the CSRF token derived from the cookie,
//! and every post must come from kas's own origin when the browser says
//! where it comes from.

use axum::http::{HeaderMap, HeaderValue, header};
use glagent_services::sessions;
use glagent_store::User;

use crate::Web;

pub const SESSION_COOKIE: &str = "_glagent_session";
pub const ANONYMOUS_COOKIE: &str = "_glagent_csrf";

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    sessions::cookie(
        headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()),
        name,
    )
}

/// A `Set-Cookie` value for the whole site.
pub fn set_cookie(web: &Web, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    set_cookie_at(web, name, value, "/", max_age)
}

/// A `Set-Cookie` value sent back only under `path`: HttpOnly, Secure
/// under HTTPS, SameSite=Lax for sessions (a link from elsewhere lands
/// signed in) and Strict for the rest.
pub fn set_cookie_at(web: &Web, name: &str, value: &str, path: &str, max_age: Option<u64>) -> HeaderValue {
    let secure = if web.urls.base().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let same_site = if name == SESSION_COOKIE { "Lax" } else { "Strict" };
    let age = match max_age {
        Some(seconds) => format!("; Max-Age={seconds}"),
        None => String::new(),
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}{secure}{age}"
    ))
    .expect("cookie values are alphanumeric and paths are URL paths")
}

/// A `Set-Cookie` that removes the cookie.
pub fn clear_cookie(web: &Web, name: &str) -> HeaderValue {
    set_cookie(web, name, "deleted", Some(0))
}

/// The signed-in user and their session token.
pub struct SignedIn {
    pub user: User,
    pub token: String,
}

impl SignedIn {
    pub fn csrf(&self) -> String {
        sessions::csrf_token(&self.token)
    }
}

/// The user of the browser's session cookie, if it is live.
pub async fn signed_in(web: &Web, headers: &HeaderMap) -> Option<SignedIn> {
    let token = cookie(headers, SESSION_COOKIE)?;
    match sessions::user(&web.store, &token).await {
        Ok(Some(user)) => Some(SignedIn { user, token }),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, "reading a web session failed");
            None
        }
    }
}

/// Why a form post is refused.
#[derive(Debug)]
pub enum Refused {
    CrossOrigin,
    Csrf,
}

/// A form post is kas's own: from its origin (when the browser says) and
/// with the CSRF token of the cookie it carries.
pub fn check_post(web: &Web, headers: &HeaderMap, cookie_token: Option<&str>, given: &str) -> Result<(), Refused> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .or_else(|| headers.get(header::REFERER).and_then(|v| v.to_str().ok()));
    if let Some(origin) = origin {
        let ours = url::Url::parse(&web.urls.base()).ok().map(|u| u.origin());
        let theirs = url::Url::parse(origin).ok().map(|u| u.origin());
        if ours.is_none() || ours != theirs {
            return Err(Refused::CrossOrigin);
        }
    }
    match cookie_token {
        Some(token) if sessions::csrf_matches(token, given) => Ok(()),
        _ => Err(Refused::Csrf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name_and_only_when_well_formed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; _glagent_session=abc123; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc123"));
        assert_eq!(cookie(&headers, ANONYMOUS_COOKIE), None);
        headers.insert(header::COOKIE, HeaderValue::from_static("_glagent_session=a\"b"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), None);
    }
}
