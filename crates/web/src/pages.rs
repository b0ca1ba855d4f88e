//! The pages of a signed-in user. A signed-out browser is sent to the
//! sign-in page, which brings it back.

use askama::Template;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::session::{SignedIn, signed_in};
use crate::{Web, error_page, page};

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub status: String,
    pub message: String,
    pub user: Option<String>,
    pub csrf: String,
}

/// One row of the projects page.
pub struct ProjectRow {
    pub name: String,
    pub path: String,
    pub role: &'static str,
}

#[derive(Template)]
#[template(path = "projects.html")]
struct ProjectsPage {
    user: Option<String>,
    csrf: String,
    projects: Vec<ProjectRow>,
}

/// The signed-in user, or a redirect to the sign-in page that comes back.
pub async fn require(web: &Web, headers: &HeaderMap, uri: &axum::http::Uri) -> Result<SignedIn, Response> {
    match signed_in(web, headers).await {
        Some(current) => Ok(current),
        None => {
            let back = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let target = format!(
                "/users/sign_in?return_to={}",
                url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
            );
            Err(Redirect::to(&target).into_response())
        }
    }
}

pub async fn projects(State(web): State<Web>, headers: HeaderMap, OriginalUri(uri): OriginalUri) -> Response {
    let current = match require(&web, &headers, &uri).await {
        Ok(current) => current,
        Err(redirect) => return redirect,
    };
    let visible = match web.visible_projects(&current.user).await {
        Ok(visible) => visible,
        Err(error) => {
            tracing::error!(%error, "listing projects failed");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "kas could not list your projects; try again.",
                Some(current.user.username.clone()),
                current.csrf(),
            );
        }
    };
    let mut rows: Vec<ProjectRow> = visible
        .into_iter()
        .map(|(project, level)| ProjectRow {
            name: project.name,
            path: project.full_path,
            role: level.name(),
        })
        .collect();
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    let html = ProjectsPage {
        user: Some(current.user.username.clone()),
        csrf: current.csrf(),
        projects: rows,
    }
    .render()
    .unwrap_or_default();
    page(StatusCode::OK, html)
}
