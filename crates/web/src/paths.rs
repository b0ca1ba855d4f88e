//! The pages under project paths (project paths have slashes, so they are
//! found here rather than by the router): which page a path names, the
//! same-origin and CSRF check of every form, and the handler.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::agent::Action;
use crate::environments::{self, Action as Env};
use crate::pages::require;
use crate::session::{SignedIn, check_post};
use crate::{Web, clusters, error_page};

/// What a path under a project names.
enum Target<'a> {
    Clusters(&'a str),
    Status(&'a str),
    StatusStream(&'a str),
    Agents(&'a str),
    Agent(&'a str, &'a str),
    Tokens(&'a str, &'a str),
    Revoke(&'a str, &'a str, i64),
    Delete(&'a str, &'a str),
    Environments(&'a str),
    NewEnvironment(&'a str),
    Environment(&'a str, i64),
    EditEnvironment(&'a str, i64),
    StopEnvironment(&'a str, i64),
    DeleteEnvironment(&'a str, i64),
}

fn target(path: &str) -> Option<Target<'_>> {
    let path = path.strip_prefix('/')?;
    if let Some(project) = path.strip_suffix("/-/clusters") {
        return Some(Target::Clusters(project));
    }
    if let Some(project) = path.strip_suffix("/-/clusters/status.json") {
        return Some(Target::Status(project));
    }
    if let Some(project) = path.strip_suffix("/-/clusters/status") {
        return Some(Target::StatusStream(project));
    }
    if let Some(project) = path.strip_suffix("/-/cluster_agents") {
        return Some(Target::Agents(project));
    }
    if let Some(project) = path.strip_suffix("/-/environments") {
        return Some(Target::Environments(project));
    }
    if let Some(project) = path.strip_suffix("/-/environments/new") {
        return Some(Target::NewEnvironment(project));
    }
    if let Some((project, rest)) = path.split_once("/-/environments/") {
        let parts: Vec<&str> = rest.split('/').collect();
        let id = parts.first()?.parse().ok()?;
        return match parts[1..] {
            [] => Some(Target::Environment(project, id)),
            ["edit"] => Some(Target::EditEnvironment(project, id)),
            ["stop"] => Some(Target::StopEnvironment(project, id)),
            ["delete"] => Some(Target::DeleteEnvironment(project, id)),
            _ => None,
        };
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
        let tab = clusters::Tab::from_query(parts.uri.query());
        return match target {
            Target::Clusters(project) => {
                clusters::clusters(&web, &current, project, tab, None, None, String::new()).await
            }
            Target::Status(project) => clusters::status(&web, &current, project, tab).await,
            Target::StatusStream(project) => clusters::stream(&web, &current, project, tab).await,
            Target::Agent(project, name) => crate::agent::handle(&web, &current, project, name, Action::Show).await,
            Target::Environments(project) => environments::handle(&web, &current, project, Env::List).await,
            Target::NewEnvironment(project) => environments::handle(&web, &current, project, Env::New).await,
            Target::Environment(project, id) => environments::handle(&web, &current, project, Env::Show(id)).await,
            Target::EditEnvironment(project, id) => environments::handle(&web, &current, project, Env::Edit(id)).await,
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
        Target::Environments(project) | Target::Environment(project, _) => {
            let form = environments::Form {
                name: field("name"),
                tier: field("tier"),
                external_url: field("external_url"),
                agent_id: field("cluster_agent_id"),
                namespace: field("kubernetes_namespace"),
                more_namespaces: field("more_namespaces"),
                flux_resource_path: field("flux_resource_path"),
            };
            let action = match target {
                Target::Environment(_, id) => Env::Update(id, form),
                _ => Env::Create(form),
            };
            environments::handle(&web, &current, project, action).await
        }
        Target::StopEnvironment(project, id) => environments::handle(&web, &current, project, Env::Stop(id)).await,
        Target::DeleteEnvironment(project, id) => environments::handle(&web, &current, project, Env::Delete(id)).await,
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
        assert!(matches!(
            target("/g/app/-/clusters/status"),
            Some(Target::StatusStream("g/app"))
        ));
        assert!(matches!(
            target("/g/app/-/environments"),
            Some(Target::Environments("g/app"))
        ));
        assert!(matches!(
            target("/g/app/-/environments/new"),
            Some(Target::NewEnvironment("g/app"))
        ));
        assert!(matches!(
            target("/g/sub/app/-/environments/12/edit"),
            Some(Target::EditEnvironment("g/sub/app", 12))
        ));
        assert!(target("/g/app/-/environments/twelve").is_none());
        assert!(target("/g/app/-/issues").is_none());
    }
}
