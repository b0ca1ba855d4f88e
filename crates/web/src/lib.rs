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
//!   activity, deleting it.
//! - [`environments`]: Operate > Environments, and an environment's page
//!   with its live Kubernetes overview (`static/dashboard.js`).
//! - [`paths`]: which page a path under a project names, and the check
//!   of every form; [`project`]: the project a path names.

mod agent;
mod clusters;
mod environments;
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
        .route("/-/static/dashboard.js", get(dashboard_script))
        .fallback(paths::dispatch)
        .with_state(web)
}

/// One of the project's own static files, cached for an hour.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        body,
    )
        .into_response()
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("../static/app.css"))
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../static/app.js"))
}

async fn dashboard_script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../static/dashboard.js"))
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

/// A past time in words, as GitLab's tables say it: "just now",
/// "3 minutes ago", "2 days ago".
pub(crate) fn ago(time: glagent_store::Timestamp) -> String {
    let seconds = time.age().as_secs();
    let (count, unit) = match seconds {
        0..=59 => return "just now".into(),
        60..=3_599 => (seconds / 60, "minute"),
        3_600..=86_399 => (seconds / 3_600, "hour"),
        86_400..=2_591_999 => (seconds / 86_400, "day"),
        2_592_000..=31_535_999 => (seconds / 2_592_000, "month"),
        _ => (seconds / 31_536_000, "year"),
    };
    format!("{count} {unit}{} ago", if count == 1 { "" } else { "s" })
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use glagent_store::Timestamp;

    #[test]
    fn past_times_are_said_in_words() {
        let ago = |seconds| super::ago(Timestamp::before_now(Duration::from_secs(seconds)));
        assert_eq!(ago(5), "just now");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(3 * 60 + 5), "3 minutes ago");
        assert_eq!(ago(2 * 3_600), "2 hours ago");
        assert_eq!(ago(86_400), "1 day ago");
        assert_eq!(ago(400 * 86_400), "1 year ago");
        assert_eq!(super::ago(Timestamp::from_now(Duration::from_secs(30))), "just now");
    }
}
