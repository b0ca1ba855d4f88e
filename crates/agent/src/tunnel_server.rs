//! What the agent serves to kas over the tunnel (kas is the HTTP/2 client):
//! configuration updates and the agent's metadata.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use glagent_core::agent_config::LogLevel;
use glagent_proto::{
    AgentInfo, CONFIGURATION_PATH, ConfigurationUpdate, FLUX_PROJECTS_PATH, FLUX_RECONCILE_PATH, FluxProjects,
    FluxReconcile, FluxReconciled, INFO_PATH, K8S_PROXY_PATH, KubernetesVersion,
};

use crate::state::{AgentState, Applied};

pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route(CONFIGURATION_PATH, put(configuration))
        .route(INFO_PATH, get(info))
        .route(FLUX_PROJECTS_PATH, get(flux_projects))
        .route(FLUX_RECONCILE_PATH, post(flux_reconcile))
        .route(K8S_PROXY_PATH, any(crate::k8s_proxy::handle))
        .route(&format!("{K8S_PROXY_PATH}/{{*rest}}"), any(crate::k8s_proxy::handle))
        .with_state(state)
}

/// Applies a configuration update. The body is read here rather than by
/// axum's `Json`, so that an update this agent cannot read (kas and agentk
/// of different versions) is counted and logged before it is refused.
async fn configuration(State(state): State<Arc<AgentState>>, body: Bytes) -> impl IntoResponse {
    let update: ConfigurationUpdate = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(error) => {
            state.metrics.configuration_rejections.inc();
            tracing::warn!(%error, "kas sent a configuration this agent cannot read; keeping the last good configuration (are agentk and kas the same version?)");
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("unreadable configuration: {error}"),
            );
        }
    };
    if let Some(error) = update.error {
        state.metrics.configuration_rejections.inc();
        tracing::warn!(commit_id = %update.commit_id, %error, "kas reports the agent configuration is invalid; keeping the last good configuration");
        return (StatusCode::OK, "kept the last good configuration".to_string());
    }
    // No file at all is an empty configuration.
    let config = update.config.unwrap_or_default();
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
    *state.applied.write() = Some(Applied {
        agent_id: update.agent_id,
        commit_id: update.commit_id.clone(),
        gitlab_external_url: update.gitlab_external_url.clone(),
        config,
        log_level: level.to_string(),
    });
    state.metrics.configuration_updates.inc();
    tracing::info!(agent_id = update.agent_id, commit_id = %update.commit_id, log_level = level, "configuration applied");
    tracing::debug!("debug logging is on");
    (StatusCode::OK, "applied".to_string())
}

/// The projects the leader's GitRepository objects point at: one JSON line
/// now, and another whenever the set changes, for as long as kas listens.
async fn flux_projects(State(state): State<Arc<AgentState>>) -> axum::response::Response {
    let changes = project_lines(state.flux.projects.subscribe());
    axum::response::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(axum::body::Body::from_stream(changes))
        .expect("a static response")
}

fn project_lines(
    projects: tokio::sync::watch::Receiver<Vec<String>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures_util::stream::unfold((projects, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let mut line = serde_json::to_vec(&FluxProjects {
            projects: rx.borrow_and_update().clone(),
        })
        .expect("serialisable");
        line.push(b'\n');
        Some((Ok(Bytes::from(line)), (rx, false)))
    })
}

/// A push to a project that GitRepository objects point at.
async fn flux_reconcile(
    State(state): State<Arc<AgentState>>,
    Json(request): Json<FluxReconcile>,
) -> Json<FluxReconciled> {
    let annotated = crate::flux::reconcile(&state, &request.project_path).await;
    Json(FluxReconciled { annotated })
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use glagent_core::agent_config::parse_config;
    use http_body_util::BodyExt;

    use tower::ServiceExt;

    use super::*;

    async fn put_configuration(router: &Router, body: impl Into<Body>) -> (StatusCode, String) {
        let request = http::Request::put(CONFIGURATION_PATH)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn configurations_are_applied_and_unreadable_ones_counted_and_refused() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let state = Arc::new(AgentState::for_tests(&config));
        let router = router(state.clone());

        let (status, body) = put_configuration(&router, r#"{"agent_id": "seven"}"#).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body.starts_with("unreadable configuration: "), "{body}");
        assert_eq!(state.metrics.configuration_rejections.get(), 1);
        assert!(state.applied().is_none());

        let update = ConfigurationUpdate {
            agent_id: 7,
            commit_id: "abc123".into(),
            config: Some(parse_config("config.yaml", b"observability:\n  logging:\n    level: debug\n").unwrap()),
            ..Default::default()
        };
        let (status, body) = put_configuration(&router, serde_json::to_vec(&update).unwrap()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "applied"));
        let applied = state.applied().expect("applied");
        assert_eq!((applied.agent_id, applied.commit_id.as_str()), (7, "abc123"));
        assert_eq!(applied.log_level, "debug");
        assert_eq!(state.metrics.configuration_updates.get(), 1);

        let broken = ConfigurationUpdate {
            agent_id: 7,
            commit_id: "def456".into(),
            error: Some("config.yaml: bad indentation".into()),
            ..Default::default()
        };
        let (status, body) = put_configuration(&router, serde_json::to_vec(&broken).unwrap()).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "kept the last good configuration")
        );
        assert_eq!(state.applied().unwrap().commit_id, "abc123");
        assert_eq!(state.metrics.configuration_rejections.get(), 2);
    }
}
