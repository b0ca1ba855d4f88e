//! What every project page needs: the project a path names, if the
//! signed-in user may see its agents, and a token just created.

use axum::http::StatusCode;
use axum::response::Response;
use glagent_core::access::AccessLevel;
use glagent_store::{Project, StoreError};

use crate::session::SignedIn;
use crate::{Web, error_page};

/// A token just created, shown once.
pub struct Created {
    pub agent_name: String,
    pub token: String,
    pub install_command: String,
}

/// The project and the user's role in it, if it lets them read agents;
/// else the same 404 the API gives.
pub async fn project_for(web: &Web, current: &SignedIn, path: &str) -> Result<(Project, AccessLevel), Response> {
    project_at(web, current, path, AccessLevel::Developer).await
}

/// The project and the user's role in it, if at least `least`; else the
/// same 404 the API gives.
pub async fn project_at(
    web: &Web,
    current: &SignedIn,
    path: &str,
    least: AccessLevel,
) -> Result<(Project, AccessLevel), Response> {
    let not_found = || {
        error_page(
            StatusCode::NOT_FOUND,
            "404 Project Not Found",
            Some(current.user.username.clone()),
            current.csrf(),
        )
    };
    let project = match web.store.project_by_full_path(path).await {
        Ok(project) => project,
        Err(StoreError::NotFound) => return Err(not_found()),
        Err(error) => {
            tracing::error!(%error, "reading a project failed");
            return Err(not_found());
        }
    };
    match web.project_access(&current.user, &project).await {
        Ok(Some(level)) if level >= least => Ok((project, level)),
        _ => Err(not_found()),
    }
}
