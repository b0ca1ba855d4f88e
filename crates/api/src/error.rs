//! The one error type of the HTTP API, rendered as GitLab does:
//! a status code and `{"message": ...}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use glagent_api_types::Message;
use glagent_store::StoreError;

use glagent_git::GitError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("400 Bad request - {0}")]
    BadRequest(String),
    #[error("401 Unauthorized")]
    Unauthorized,
    #[error("403 Forbidden")]
    Forbidden,
    #[error("403 Forbidden - {0}")]
    ForbiddenBecause(String),
    #[error("404 {0} Not Found")]
    NotFound(&'static str),
    #[error("409 Conflict - {0}")]
    Conflict(String),
    #[error("413 Request Entity Too Large - {0}")]
    TooLarge(String),
    #[error("500 Internal Server Error")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::ForbiddenBecause(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        (self.status(), Json(Message::new(self.to_string()))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::NotFound("Resource"),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Limit(message) => ApiError::BadRequest(message),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<glagent_services::agents::AgentError> for ApiError {
    fn from(error: glagent_services::agents::AgentError) -> Self {
        match error {
            glagent_services::agents::AgentError::Invalid(message) => ApiError::BadRequest(message),
            glagent_services::agents::AgentError::Store(error) => error.into(),
        }
    }
}

impl From<glagent_services::environments::EnvironmentError> for ApiError {
    fn from(error: glagent_services::environments::EnvironmentError) -> Self {
        use glagent_services::environments::EnvironmentError;
        match error {
            EnvironmentError::Invalid(message) => ApiError::BadRequest(message),
            EnvironmentError::Refused(message) => ApiError::ForbiddenBecause(message),
            EnvironmentError::Store(error) => error.into(),
        }
    }
}

impl From<GitError> for ApiError {
    fn from(error: GitError) -> Self {
        match error {
            GitError::FileExists | GitError::FileMissing | GitError::NoBranch(_) => {
                ApiError::BadRequest(error.to_string())
            }
            GitError::Race => ApiError::Conflict(error.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
