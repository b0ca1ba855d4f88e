//! `/liveness`, `/readiness` (connected to kas and configured) and
//! `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

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
    let m = &state.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    };
    counter(
        "agentk_connection_attempts_total",
        "Attempts to connect to kas.",
        m.connection_attempts.load(Ordering::Relaxed),
    );
    counter(
        "agentk_connection_failures_total",
        "Attempts that failed.",
        m.connection_failures.load(Ordering::Relaxed),
    );
    counter(
        "agentk_connections_total",
        "Connections established.",
        m.connections_established.load(Ordering::Relaxed),
    );
    counter(
        "agentk_configuration_updates_total",
        "Configurations applied.",
        m.configuration_updates.load(Ordering::Relaxed),
    );
    counter(
        "agentk_configuration_rejections_total",
        "Configurations refused; the last good one was kept.",
        m.configuration_rejections.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP agentk_connected Whether the agent is connected to kas.\n# TYPE agentk_connected gauge\nagentk_connected {}",
        u8::from(state.is_connected())
    );
    let _ = writeln!(
        out,
        "# HELP agentk_leader Whether this replica holds the agent's Lease.\n# TYPE agentk_leader gauge\nagentk_leader {}",
        u8::from(state.leader.load(Ordering::Relaxed))
    );
    let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let _ = writeln!(
        out,
        "# HELP agentk_tokio_alive_tasks Tasks alive in the runtime.\n# TYPE agentk_tokio_alive_tasks gauge\nagentk_tokio_alive_tasks {tasks}"
    );
    let _ = writeln!(
        out,
        "# HELP agentk_build_info The agent's version.\n# TYPE agentk_build_info gauge\nagentk_build_info{{version=\"{}\"}} 1",
        glagent_core::VERSION
    );
    if let Some(applied) = state.applied() {
        let _ = writeln!(
            out,
            "# HELP agentk_configuration_info The configuration in force.\n# TYPE agentk_configuration_info gauge\nagentk_configuration_info{{agent_id=\"{}\",commit_id=\"{}\",log_level=\"{}\"}} 1",
            applied.agent_id, applied.commit_id, applied.log_level
        );
    }
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
