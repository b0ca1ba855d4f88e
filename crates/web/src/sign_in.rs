//! `/users/sign_in` and `/users/sign_out`, at GitLab's paths. Failed
//! sign-ins are limited per user name: after five within five minutes,
//! the form says when to try again, whatever the password.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use glagent_services::{passwords, sessions};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::session::{
    ANONYMOUS_COOKIE, Refused, SESSION_COOKIE, check_post, clear_cookie, cookie, set_cookie, signed_in,
};
use crate::{Web, error_page, page};

const FAILURES: usize = 5;
const WINDOW: Duration = Duration::from_secs(300);

/// Failed sign-ins by user name (lower case).
#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl Limiter {
    /// How long `username` must wait, if it must.
    fn wait(&self, username: &str) -> Option<Duration> {
        let mut failures = self.failures.lock();
        let list = failures.entry(username.to_ascii_lowercase()).or_default();
        list.retain(|t| t.elapsed() < WINDOW);
        (list.len() >= FAILURES).then(|| WINDOW.saturating_sub(list[0].elapsed()))
    }

    fn failed(&self, username: &str) {
        let mut failures = self.failures.lock();
        if failures.len() > 10_000 {
            failures.retain(|_, list| list.iter().any(|t| t.elapsed() < WINDOW));
        }
        failures
            .entry(username.to_ascii_lowercase())
            .or_default()
            .push(Instant::now());
    }

    fn succeeded(&self, username: &str) {
        self.failures.lock().remove(&username.to_ascii_lowercase());
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    user: Option<String>,
    csrf: String,
    error: Option<String>,
    username: String,
    return_to: String,
}

#[derive(Deserialize)]
pub struct ReturnTo {
    return_to: Option<String>,
}

/// Only paths of this site: no `//host` or `/\host`, no scheme.
fn safe_return(to: Option<&str>) -> String {
    match to {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/\\") => path.to_string(),
        _ => "/".to_string(),
    }
}

fn render(
    web: &Web,
    token: &str,
    new_cookie: bool,
    error: Option<String>,
    username: &str,
    return_to: &str,
    status: StatusCode,
) -> Response {
    let html = SignInPage {
        user: None,
        csrf: sessions::csrf_token(token),
        error,
        username: username.to_string(),
        return_to: return_to.to_string(),
    }
    .render()
    .unwrap_or_default();
    let mut response = page(status, html);
    if new_cookie {
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(web, ANONYMOUS_COOKIE, token, None));
    }
    response
}

/// The browser's anonymous token, or a new one to set.
fn anonymous(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, ANONYMOUS_COOKIE) {
        Some(token) => (token, false),
        None => (sessions::anonymous_token().unwrap_or_default(), true),
    }
}

pub async fn form(State(web): State<Web>, headers: HeaderMap, Query(query): Query<ReturnTo>) -> Response {
    let return_to = safe_return(query.return_to.as_deref());
    if signed_in(&web, &headers).await.is_some() {
        return Redirect::to(&return_to).into_response();
    }
    let (token, new_cookie) = anonymous(&headers);
    render(&web, &token, new_cookie, None, "", &return_to, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct Credentials {
    #[serde(default)]
    authenticity_token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    return_to: Option<String>,
}

fn refusal(refused: Refused) -> Response {
    let message = match refused {
        Refused::CrossOrigin => "This form was sent from another site, so it was refused. Sign in from kas's own page.",
        Refused::Csrf => "The form expired or did not come from this site. Reload the page and try again.",
    };
    error_page(StatusCode::FORBIDDEN, message, None, String::new())
}

pub async fn submit(State(web): State<Web>, headers: HeaderMap, Form(form): Form<Credentials>) -> Response {
    let return_to = safe_return(form.return_to.as_deref());
    let anonymous_token = cookie(&headers, ANONYMOUS_COOKIE);
    if let Err(refused) = check_post(&web, &headers, anonymous_token.as_deref(), &form.authenticity_token) {
        tracing::info!(?refused, "refused a sign-in form");
        return refusal(refused);
    }
    let token = anonymous_token.unwrap_or_default();
    let username = form.username.trim().to_string();
    if let Some(wait) = web.limiter.wait(&username) {
        tracing::warn!(username = %username, "sign-in refused: too many failed attempts");
        let message = format!(
            "Too many failed sign-in attempts for this user. Try again in {} seconds.",
            wait.as_secs().max(1)
        );
        return render(
            &web,
            &token,
            false,
            Some(message),
            &username,
            &return_to,
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let user = match passwords::check(&web.store, &username, &form.password).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            web.limiter.failed(&username);
            tracing::info!(username = %username, "sign-in failed: wrong user name or password");
            return render(
                &web,
                &token,
                false,
                Some("Invalid username or password.".into()),
                &username,
                &return_to,
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(error) => {
            tracing::error!(%error, "sign-in failed");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "kas could not check the password; try again.",
                None,
                String::new(),
            );
        }
    };
    web.limiter.succeeded(&username);
    let session = match sessions::start(&web.store, &user).await {
        Ok(session) => session,
        Err(error) => {
            tracing::error!(%error, "starting a web session failed");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "kas could not sign you in; try again.",
                None,
                String::new(),
            );
        }
    };
    tracing::info!(user_id = user.id, username = %user.username, "signed in to the web UI");
    let mut response = Redirect::to(&return_to).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(&web, SESSION_COOKIE, &session.token, Some(sessions::LIFETIME.as_secs())),
    );
    headers.append(header::SET_COOKIE, clear_cookie(&web, ANONYMOUS_COOKIE));
    response
}

#[derive(Deserialize)]
pub struct Token {
    #[serde(default)]
    authenticity_token: String,
}

pub async fn sign_out(State(web): State<Web>, headers: HeaderMap, Form(form): Form<Token>) -> Response {
    let Some(current) = signed_in(&web, &headers).await else {
        return Redirect::to("/users/sign_in").into_response();
    };
    if let Err(refused) = check_post(&web, &headers, Some(&current.token), &form.authenticity_token) {
        tracing::info!(?refused, "refused a sign-out form");
        return refusal(refused);
    }
    if let Err(error) = sessions::end(&web.store, &current.token).await {
        tracing::error!(%error, "ending a web session failed");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "kas could not sign you out; try again.",
            None,
            String::new(),
        );
    }
    tracing::info!(user_id = current.user.id, "signed out of the web UI");
    let mut response = Redirect::to("/users/sign_in").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, clear_cookie(&web, SESSION_COOKIE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_on_this_site() {
        assert_eq!(safe_return(Some("/root/app/-/clusters")), "/root/app/-/clusters");
        for bad in ["//evil.example", "/\\evil.example", "https://evil.example", "evil"] {
            assert_eq!(safe_return(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_return(None), "/");
    }

    #[test]
    fn five_failures_lock_the_name_for_the_window() {
        let limiter = Limiter::default();
        for _ in 0..4 {
            limiter.failed("Alice");
        }
        assert!(limiter.wait("alice").is_none());
        limiter.failed("alice");
        assert!(limiter.wait("ALICE").is_some_and(|w| w <= WINDOW));
        limiter.succeeded("alice");
        assert!(limiter.wait("alice").is_none());
    }
}
