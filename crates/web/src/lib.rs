//! kas's web UI: pages rendered on the server with askama (compile-time
//! checked, HTML-escaped), plain forms that work without JavaScript. The
//! pages call the same services as the REST API, never its handlers.
//!
//! - [`session`]: cookies, the signed-in user, CSRF tokens and the
//!   same-origin check every form post passes.
//! - [`sign_in`]: sign in with username and password (rate-limited), sign
//!   out (the session ends on the server).
//! - [`pages`]: the pages of a signed-in user.
//! - [`clusters`]: Operate > Kubernetes clusters and Connect a cluster.
//! - [`agent`]: an agent's page: connections, tokens, configuration,
//!   deleting it.
//! - [`paths`]: which page a path under a project names, and the check
//!   of every form; [`project`]: the project a path names.

mod agent;
mod clusters;
mod pages;
mod paths;
mod project;
mod session;
mod sign_in;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use glagent_connections::Connections;
use glagent_services::Services;

/// What every page handler gets.
#[derive(Clone)]
pub struct Web {
    pub services: Services,
    pub connections: Connections,
    limiter: Arc<sign_in::Limiter>,
}

impl std::ops::Deref for Web {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

/// The web UI's routes; pages under project paths are found by the
/// fallback (project paths have slashes).
pub fn router(services: Services, connections: Connections) -> Router {
    let web = Web {
        services,
        connections,
        limiter: Arc::default(),
    };
    Router::new()
        .route("/", get(pages::projects))
        .route("/users/sign_in", get(sign_in::form).post(sign_in::submit))
        .route("/users/sign_out", post(sign_in::sign_out))
        .route("/-/static/app.css", get(stylesheet))
        .route("/-/static/app.js", get(script))
        .fallback(paths::dispatch)
        .with_state(web)
}

async fn stylesheet() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        include_str!("../static/app.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        include_str!("../static/app.js"),
    )
        .into_response()
}

/// A rendered page with the headers every page carries: no caching, no
/// framing, scripts and forms from this origin only.
pub(crate) fn page(status: StatusCode, html: String) -> Response {
    let mut response = (status, axum::response::Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    );
    headers.insert(
        header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// An error page (the message is escaped by the template).
pub(crate) fn error_page(status: StatusCode, message: &str, user: Option<String>, csrf: String) -> Response {
    use askama::Template;
    let html = pages::ErrorPage {
        status: status.to_string(),
        message: message.to_string(),
        user,
        csrf,
    }
    .render()
    .unwrap_or_else(|_| "error".into());
    page(status, html)
}
