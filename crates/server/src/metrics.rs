//! kas's Prometheus endpoint, on a listener of its own (`--metrics-listen`):
//! `GET /metrics`, plain HTTP, nothing else.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::get;
use glagent_connections::registry::AgentRegistry;
use glagent_telemetry::metrics::{CONTENT_TYPE, kas};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Listens on `address` and serves until `shutdown`.
pub async fn serve(
    address: SocketAddr,
    registry: Arc<AgentRegistry>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address} for /metrics (--metrics-listen)"))?;
    tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics are serving at /metrics");
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut agents = registry.agent_ids();
                agents.dedup();
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    kas().encode(agents.len()),
                )
            }
        }),
    );
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "the metrics listener failed");
        }
    }))
}
