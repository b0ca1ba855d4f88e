//! How the proxy refuses: a Kubernetes `Status` (so kubectl and client
//! libraries print the message) with a status code that says whose problem
//! it is, and `Gitlab-Unauthorized: true` on kas's own 401s, which tells
//! them apart from the cluster's.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use glagent_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
    /// The replica holding the agent refused the connection: the request
    /// never reached it, so another holder may take it.
    #[error("{0}")]
    ReplicaUnreachable(String),
    /// A limit the caller can wait for (open streams of an agent).
    #[error("{0}")]
    TooManyRequests(String),
    /// kas's own trouble (its database, its repositories): logged in full,
    /// shown to the caller only as a request to try again.
    #[error("kas could not decide on this request: try again, and tell your kas administrator if it persists")]
    Internal(String),
}

impl From<StoreError> for ProxyError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            tracing::warn!(%error, "Kubernetes API proxy request failed: the database");
            return ProxyError::Unavailable("kas's database is unavailable: try again shortly".into());
        }
        ProxyError::Internal(error.to_string())
    }
}

impl ProxyError {
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ProxyError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ProxyError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
            ProxyError::Unavailable(_) | ProxyError::ReplicaUnreachable(_) | ProxyError::Internal(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
            }
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        if let ProxyError::Internal(detail) = &self {
            tracing::error!(error = %detail, "Kubernetes API proxy request failed");
        }
        let (code, reason) = self.status();
        let body = glagent_proto::kubernetes_status(code.as_u16(), reason, &self.to_string());
        let mut response = (code, axum::Json(body)).into_response();
        if code == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if code == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert("gitlab-unauthorized", HeaderValue::from_static("true"));
        }
        response
    }
}
