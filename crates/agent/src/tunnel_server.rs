//! What the agent serves to kas over the tunnel (kas is the HTTP/2 client):
//! configuration updates and the agent's metadata.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get, put};
use axum::{Json, Router};
use glagent_core::agent_config::{AgentConfig, LogLevel};
use glagent_proto::{AgentInfo, CONFIGURATION_PATH, ConfigurationUpdate, INFO_PATH, K8S_PROXY_PATH, KubernetesVersion};

use crate::state::{AgentState, Applied, Metrics};

pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route(CONFIGURATION_PATH, put(configuration))
        .route(INFO_PATH, get(info))
        .route(K8S_PROXY_PATH, any(crate::k8s_proxy::handle))
        .route(&format!("{K8S_PROXY_PATH}/{{*rest}}"), any(crate::k8s_proxy::handle))
        .with_state(state)
}

async fn configuration(
    State(state): State<Arc<AgentState>>,
    Json(update): Json<ConfigurationUpdate>,
) -> impl IntoResponse {
    if let Some(error) = update.error {
        Metrics::inc(&state.metrics.configuration_rejections);
        tracing::warn!(commit_id = %update.commit_id, %error, "kas reports the agent configuration is invalid; keeping the last good configuration");
        return (StatusCode::OK, "kept the last good configuration".to_string());
    }
    let value = update.config.unwrap_or_default();
    let config: AgentConfig = match serde_json::from_value(value) {
        Ok(config) => config,
        Err(error) => {
            Metrics::inc(&state.metrics.configuration_rejections);
            tracing::warn!(commit_id = %update.commit_id, %error, "kas sent a configuration this agent cannot read; keeping the last good configuration (are agentk and kas the same version?)");
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("unreadable configuration: {error}"),
            );
        }
    };
    let level = config
        .observability
        .as_ref()
        .and_then(|o| o.logging.as_ref())
        .and_then(|l| l.level)
        .unwrap_or(LogLevel::Info);
    let level = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    let previous_level = state.applied().map(|a| a.log_level);
    if previous_level.as_deref() != Some(level) {
        state.log_level.set(level);
    }
    *state.applied.write().unwrap_or_else(|e| e.into_inner()) = Some(Applied {
        agent_id: update.agent_id,
        commit_id: update.commit_id.clone(),
        config,
        log_level: level.to_string(),
    });
    Metrics::inc(&state.metrics.configuration_updates);
    tracing::info!(agent_id = update.agent_id, commit_id = %update.commit_id, log_level = level, "configuration applied");
    tracing::debug!("debug logging is on");
    (StatusCode::OK, "applied".to_string())
}

async fn info(State(state): State<Arc<AgentState>>) -> Json<AgentInfo> {
    let kubernetes_version = match tokio::time::timeout(Duration::from_secs(5), state.kube.apiserver_version()).await {
        Ok(Ok(v)) => Some(KubernetesVersion {
            major: v.major,
            minor: v.minor,
            git_version: v.git_version,
            platform: v.platform,
        }),
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not read the Kubernetes version");
            None
        }
        Err(_) => {
            tracing::warn!("the Kubernetes API did not answer /version within 5 s");
            None
        }
    };
    Json(AgentInfo {
        connection_id: state.connection_id,
        version: glagent_core::VERSION.to_string(),
        commit: option_env!("GLAGENT_REVISION").unwrap_or("unknown").to_string(),
        pod_namespace: state.pod_namespace.clone(),
        pod_name: state.pod_name.clone(),
        kubernetes_version,
    })
}
