//! kas's faces for people and their tools: the GitLab-compatible REST API
//! under `/api/v4` (same paths, field names, status codes and error shape
//! as GitLab, so existing clients work) and Git over smart HTTP at
//! `/<project path>.git`. Both call kas's services; neither knows the
//! Kubernetes proxy or the agent endpoint.

mod agents;
pub mod auth;
mod ci;
mod entities;
mod environments;
pub mod error;
mod files;
pub mod git_http;
mod groups;
pub mod input;
mod members;
mod meta;
mod projects;
mod url_configurations;
mod users;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use glagent_core::access::AccessLevel;
use glagent_store::{Namespace, Page, Project, StoreError};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use glagent_connections::Connections;
use glagent_services::Services;

use self::auth::Caller;
use self::error::{ApiError, ApiResult};

/// What the API's handlers share: kas's services, and the agent
/// connections (for the connections API).
#[derive(Clone)]
pub struct Api {
    pub services: Services,
    pub connections: Connections,
    /// Where paths that are neither the REST API nor Git go (the web UI).
    pub pages: Option<Router>,
}

impl std::ops::Deref for Api {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

/// The REST API and, for every other path, Git over HTTP (or a 404 in
/// GitLab's shape).
pub fn router(services: Services, connections: Connections) -> Router {
    router_with_pages(services, connections, None)
}

/// [`router`], with `pages` answering the paths that are neither the REST
/// API nor Git (the web UI's project pages live under project paths too).
/// The largest request body the REST API reads (the Files API's content,
/// base64-encoded, included).
pub const MAX_BODY: usize = 10 << 20;

pub fn router_with_pages(services: Services, connections: Connections, pages: Option<Router>) -> Router {
    Router::new()
        .nest("/api/v4", rest().layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)))
        .fallback(fallback)
        .with_state(Api {
            services,
            connections,
            pages,
        })
}

async fn fallback(state: State<Api>, request: Request) -> Response {
    if git_http::is_git_request(request.uri().path()) {
        return git_http::handle(state, request).await;
    }
    if let Some(pages) = state.pages.clone() {
        use tower::ServiceExt;
        return match pages.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    (
        StatusCode::NOT_FOUND,
        axum::Json(glagent_api_types::Message::new("404 Not Found")),
    )
        .into_response()
}

fn rest() -> Router<Api> {
    Router::new()
        .route("/user", get(users::current))
        .route("/user/personal_access_tokens", post(users::create_own_token))
        .route("/personal_access_tokens", get(users::list_tokens))
        .route(
            "/personal_access_tokens/{token_id}",
            axum::routing::delete(users::revoke_token),
        )
        .route("/users", get(users::list).post(users::create))
        .route("/users/{user_id}", get(users::get))
        .route("/users/{user_id}/personal_access_tokens", post(users::create_token))
        .route("/groups", get(groups::list).post(groups::create))
        .route("/groups/{id}", get(groups::get).delete(groups::delete))
        .route("/groups/{id}/projects", get(groups::projects))
        .route("/groups/{id}/members", get(groups::members).post(groups::add_member))
        .route(
            "/groups/{id}/members/{user_id}",
            get(groups::member)
                .put(groups::add_member_put)
                .delete(groups::remove_member),
        )
        .route("/projects", get(projects::list).post(projects::create))
        .route("/projects/{id}", get(projects::get).delete(projects::delete))
        .route(
            "/projects/{id}/members",
            get(projects::members).post(projects::add_member),
        )
        .route(
            "/projects/{id}/members/{user_id}",
            get(projects::member)
                .put(projects::add_member_put)
                .delete(projects::remove_member),
        )
        .route(
            "/projects/{id}/repository/files/{file_path}",
            get(files::get)
                .post(files::create)
                .put(files::update)
                .delete(files::delete),
        )
        .route("/projects/{id}/repository/files/{file_path}/raw", get(files::raw))
        .route("/projects/{id}/cluster_agents", get(agents::list).post(agents::create))
        .route(
            "/projects/{id}/cluster_agents/{agent_id}",
            get(agents::get).delete(agents::delete),
        )
        .route(
            "/projects/{id}/cluster_agents/{agent_id}/configuration",
            get(agents::configuration),
        )
        .route(
            "/projects/{id}/cluster_agents/{agent_id}/connections",
            get(agents::connections),
        )
        .route(
            "/projects/{id}/cluster_agents/{agent_id}/audit_events",
            get(agents::audit_events),
        )
        .route(
            "/projects/{id}/cluster_agents/{agent_id}/install_command",
            get(agents::install_command),
        )
        .route(
            "/projects/{id}/cluster_agents/{agent_id}/tokens",
            get(agents::list_tokens).post(agents::create_token),
        )
        .route(
            "/projects/{id}/cluster_agents/{agent_id}/tokens/{token_id}",
            get(agents::get_token).delete(agents::revoke_token),
        )
        .route(
            "/projects/{id}/cluster_agents/{agent_id}/url_configurations",
            get(url_configurations::list).post(url_configurations::create),
        )
        .route(
            "/projects/{id}/cluster_agents/{agent_id}/url_configurations/{url_configuration_id}",
            get(url_configurations::get).delete(url_configurations::delete),
        )
        .route(
            "/projects/{id}/environments",
            get(environments::list).post(environments::create),
        )
        .route(
            "/projects/{id}/environments/{environment_id}",
            get(environments::get)
                .put(environments::update)
                .delete(environments::delete),
        )
        .route(
            "/projects/{id}/environments/{environment_id}/stop",
            post(environments::stop),
        )
        .route("/ci/jobs", post(ci::create_job))
        .route("/ci/jobs/{job_id}", axum::routing::delete(ci::finish_job))
        .route("/job/allowed_agents", get(ci::allowed_agents))
        .route("/job/kubeconfig", get(ci::kubeconfig))
        .route("/metadata", get(meta::metadata))
        .route("/version", get(meta::version))
        .fallback(|| async { ApiError::NotFound("Route") })
}

/// A project addressed by numeric id or URL-encoded full path, visible to
/// the caller (invisible projects are 404, as in GitLab), with their role.
pub(crate) async fn find_project(state: &Api, caller: &Caller, id: &str) -> ApiResult<(Project, AccessLevel)> {
    let found = match id.parse::<i64>() {
        Ok(numeric) => state.store.project(numeric).await,
        Err(_) => state.store.project_by_full_path(id.trim_matches('/')).await,
    };
    let project = match found {
        Ok(project) => project,
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("Project")),
        Err(other) => return Err(other.into()),
    };
    match state.project_access(&caller.user, &project).await? {
        Some(level) => Ok((project, level)),
        None => Err(ApiError::NotFound("Project")),
    }
}

/// A group addressed by id or full path, visible to the caller.
pub(crate) async fn find_group(state: &Api, caller: &Caller, id: &str) -> ApiResult<(Namespace, AccessLevel)> {
    let found = match id.parse::<i64>() {
        Ok(numeric) => state.store.namespace(numeric).await,
        Err(_) => state.store.namespace_by_full_path(id.trim_matches('/')).await,
    };
    let group = match found {
        Ok(ns) if ns.is_group() => ns,
        Ok(_) | Err(StoreError::NotFound) => return Err(ApiError::NotFound("Group")),
        Err(other) => return Err(other.into()),
    };
    match state.namespace_access(&caller.user, group.id).await? {
        Some(level) => Ok((group, level)),
        None => Err(ApiError::NotFound("Group")),
    }
}

/// Requires at least `needed`, else 403.
pub(crate) fn require(level: AccessLevel, needed: AccessLevel) -> ApiResult<()> {
    if level >= needed {
        Ok(())
    } else {
        Err(ApiError::ForbiddenBecause(format!(
            "this needs the {} role or higher; you are {}",
            needed.name(),
            level.name()
        )))
    }
}

/// A JSON list with GitLab's pagination headers (and a Link header, which
/// python-gitlab follows).
pub(crate) fn paginated<T: serde::Serialize>(
    state: &Api,
    uri: &Uri,
    page: Page,
    total: i64,
    items: Vec<T>,
) -> Response {
    let total_pages = ((total + page.per_page - 1) / page.per_page).max(1);
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("x-total", total.to_string());
    set("x-total-pages", total_pages.to_string());
    set("x-page", page.page.to_string());
    set("x-per-page", page.per_page.to_string());
    set(
        "x-next-page",
        if page.page < total_pages {
            (page.page + 1).to_string()
        } else {
            String::new()
        },
    );
    set(
        "x-prev-page",
        if page.page > 1 {
            (page.page - 1).to_string()
        } else {
            String::new()
        },
    );
    let link = |n: i64, rel: &str| {
        let mut query: Vec<(String, String)> = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .filter(|(k, _)| k != "page" && k != "per_page")
            .collect();
        query.push(("page".into(), n.to_string()));
        query.push(("per_page".into(), page.per_page.to_string()));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        format!("<{}{}?{}>; rel=\"{}\"", state.urls.base(), uri.path(), query, rel)
    };
    let mut links = vec![link(1, "first"), link(total_pages, "last")];
    if page.page < total_pages {
        links.push(link(page.page + 1, "next"));
    }
    if page.page > 1 {
        links.push(link(page.page - 1, "prev"));
    }
    set("link", links.join(", "));
    (headers, axum::Json(items)).into_response()
}

/// Paginates a list already filtered in memory.
pub(crate) fn page_of<T>(items: Vec<T>, page: Page) -> (i64, Vec<T>) {
    let total = items.len() as i64;
    let start = ((page.page - 1) * page.per_page) as usize;
    (
        total,
        items.into_iter().skip(start).take(page.per_page as usize).collect(),
    )
}

/// The checks `POST /users/:id/personal_access_tokens` applies, for the
/// `kas admin` commands.
pub fn users_validate(scopes: &[String], expires_at: Option<&str>) -> Result<(), ApiError> {
    users::validate_scopes(scopes)?;
    if let Some(date) = expires_at {
        users::validate_date(date)?;
    }
    Ok(())
}
