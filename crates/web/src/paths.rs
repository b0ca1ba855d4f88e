//! The pages under project paths (project paths have slashes, so they are
//! found here rather than by the router): which page a path names, the
//! same-origin and CSRF check of every form, and the handler.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::agent::Action;
use crate::pages::require;
use crate::session::{SignedIn, check_post};
use crate::{Web, clusters, error_page};

/// What a path under a project names.
enum Target<'a> {
    Clusters(&'a str),
    Status(&'a str),
    Agents(&'a str),
    Agent(&'a str, &'a str),
    Tokens(&'a str, &'a str),
    Revoke(&'a str, &'a str, i64),
    Delete(&'a str, &'a str),
}

fn target(path: &str) -> Option<Target<'_>> {
    let path = path.strip_prefix('/')?;
    if let Some(project) = path.strip_suffix("/-/clusters") {
        return Some(Target::Clusters(project));
    }
    if let Some(project) = path.strip_suffix("/-/clusters/status.json") {
        return Some(Target::Status(project));
    }
    if let Some(project) = path.strip_suffix("/-/cluster_agents") {
        return Some(Target::Agents(project));
    }
    let (project, rest) = path.split_once("/-/cluster_agents/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [name] => Some(Target::Agent(project, name)),
        [name, "tokens"] => Some(Target::Tokens(project, name)),
        [name, "tokens", id, "revoke"] => id.parse().ok().map(|id| Target::Revoke(project, name, id)),
        [name, "delete"] => Some(Target::Delete(project, name)),
        _ => None,
    }
}

/// The pages under project paths; anything else is GitLab's 404.
pub async fn dispatch(State(web): State<Web>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let Some(target) = target(&path) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"message": "404 Not Found"})),
        )
            .into_response();
    };
    let current = match require(&web, &parts.headers, &parts.uri).await {
        Ok(current) => current,
        Err(redirect) => return redirect,
    };
    if parts.method == http::Method::GET {
        return match target {
            Target::Clusters(project) => clusters::clusters(&web, &current, project, None, None, String::new()).await,
            Target::Status(project) => clusters::status(&web, &current, project).await,
            Target::Agent(project, name) => crate::agent::handle(&web, &current, project, name, Action::Show).await,
            _ => not_allowed(&current),
        };
    }
    if parts.method != http::Method::POST {
        return not_allowed(&current);
    }
    // Every form: kas's origin and the session's CSRF token.
    let bytes = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => bytes,
        Err(_) => return error_page(StatusCode::BAD_REQUEST, "The form is too large.", None, String::new()),
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&bytes).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if let Err(refused) = check_post(&web, &parts.headers, Some(&current.token), &field("authenticity_token")) {
        tracing::info!(?refused, path = %path, "refused a form");
        return error_page(
            StatusCode::FORBIDDEN,
            "The form expired or did not come from this site. Reload the page and try again.",
            Some(current.user.username.clone()),
            current.csrf(),
        );
    }
    match target {
        Target::Agents(project) => clusters::connect(&web, &current, project, &field("name")).await,
        Target::Tokens(project, name) => {
            let action = Action::CreateToken {
                name: field("name"),
                description: field("description"),
            };
            crate::agent::handle(&web, &current, project, name, action).await
        }
        Target::Revoke(project, name, id) => {
            crate::agent::handle(&web, &current, project, name, Action::Revoke(id)).await
        }
        Target::Delete(project, name) => {
            let action = Action::Delete {
                confirm: field("confirm_name"),
            };
            crate::agent::handle(&web, &current, project, name, action).await
        }
        _ => not_allowed(&current),
    }
}

fn not_allowed(current: &SignedIn) -> Response {
    error_page(
        StatusCode::METHOD_NOT_ALLOWED,
        "This page does not take that request.",
        Some(current.user.username.clone()),
        current.csrf(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_with_groups_are_found() {
        assert!(matches!(
            target("/g/sub/app/-/clusters"),
            Some(Target::Clusters("g/sub/app"))
        ));
        assert!(matches!(
            target("/g/app/-/clusters/status.json"),
            Some(Target::Status("g/app"))
        ));
        assert!(matches!(
            target("/g/app/-/cluster_agents"),
            Some(Target::Agents("g/app"))
        ));
        assert!(target("/g/app/-/issues").is_none());
    }
}
