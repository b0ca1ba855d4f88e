//! `/liveness`, `/readiness` (connected to kas and configured) and
//! `/metrics` (Prometheus text format).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use glagent_telemetry::metrics::{AgentNow, CONTENT_TYPE, ConfigurationLabels};

use crate::state::AgentState;

pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/liveness", get(|| async { "ok" }))
        .route("/readiness", get(readiness))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// A receptive agent is ready once it listens: its Service must send kas's
/// connections to it before any exist.
async fn readiness(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    match (state.is_connected(), state.applied().is_some()) {
        (true, true) => (StatusCode::OK, "ready".to_string()),
        (false, _) if state.is_listening() => (
            StatusCode::OK,
            "listening for kas (receptive agent), not connected yet".to_string(),
        ),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not connected to kas".to_string()),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "connected, waiting for the configuration".to_string(),
        ),
    }
}

async fn metrics(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    let now = AgentNow {
        connected: state.is_connected(),
        leader: state.leader.load(Ordering::Relaxed),
        tasks: tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        configuration: state.applied().map(|applied| ConfigurationLabels {
            agent_id: applied.agent_id.to_string(),
            commit_id: applied.commit_id,
            log_level: applied.log_level,
        }),
    };
    ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics.encode(now))
}
