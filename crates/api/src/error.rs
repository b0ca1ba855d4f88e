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
    /// kas's database is down or its disk full: `message` says so to the
    /// caller, `detail` goes to the log.
    #[error("503 Service Unavailable - {message}")]
    Unavailable { message: &'static str, detail: String },
}

pub type ApiResult<T> = Result<T, ApiError>;

/// What a caller is told when kas's disk is full.
const DISK_FULL: &str = "kas's disk is full and nothing was saved; tell your kas administrator";

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
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(detail) => tracing::error!(error = %detail, "request failed"),
            ApiError::Unavailable { detail, .. } => tracing::warn!(error = %detail, "request failed: kas's storage"),
            _ => {}
        }
        let mut response = (self.status(), Json(Message::new(self.to_string()))).into_response();
        if let ApiError::Unavailable { .. } = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::NotFound("Resource"),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Limit(message) => ApiError::BadRequest(message),
            StoreError::Unavailable(detail) => ApiError::Unavailable {
                message: "kas cannot reach its database; try again shortly",
                detail,
            },
            StoreError::DiskFull(detail) => ApiError::Unavailable {
                message: DISK_FULL,
                detail,
            },
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
            GitError::DiskFull(detail) => ApiError::Unavailable {
                message: DISK_FULL,
                detail,
            },
            GitError::Spawn(io) if io.kind() == std::io::ErrorKind::StorageFull => ApiError::Unavailable {
                message: DISK_FULL,
                detail: io.to_string(),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}
