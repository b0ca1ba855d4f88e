//! `GET /-/kubernetes-agent/`: the upgrade an agent makes, with its agent
//! token as `Authorization: Bearer`: to a WebSocket (`wss://` agents), or
//! to the raw tunnel (`Upgrade: glagent-tunnel`, `grpcs://` agents), whose
//! bytes after the `101` are the tunnel's HTTP/2 without framing.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use glagent_core::secret;
use glagent_proto::{CONNECTION_ID_HEADER, RAW_TUNNEL_PROTOCOL, REPLACES_HEADER, WS_SUBPROTOCOL};
use glagent_services::Services;
use glagent_store::StoreError;
use glagent_tunnel::WsIo;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::registry::MAX_CONNECTIONS_PER_TOKEN;
use crate::{Connections, session};

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "message": message }))).into_response()
}

pub async fn agent_endpoint(
    State((services, connections)): State<(Services, Connections)>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // `None`: the raw tunnel; `Some(key)`: a WebSocket.
    let websocket_key = if upgrade.eq_ignore_ascii_case(RAW_TUNNEL_PROTOCOL) {
        None
    } else {
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .filter(|_| upgrade.eq_ignore_ascii_case("websocket"));
        let Some(key) = key else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "400 Bad request - this is the agent endpoint: agentk connects here with a WebSocket upgrade (wss://) or Upgrade: glagent-tunnel (grpcs://)",
            );
        };
        Some(key)
    };
    let offers_protocol = websocket_key.is_none()
        || headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == WS_SUBPROTOCOL);
    if !offers_protocol {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "400 Bad request - the agent must offer the WebSocket subprotocol {WS_SUBPROTOCOL}: is agentk the same version as kas?"
            ),
        );
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    let Some(token) = token else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized - no agent token: send Authorization: Bearer <agent token>",
        );
    };
    let (token, agent) = match services.store.agent_by_token_digest(&secret::digest(&token)).await {
        Ok(found) => found,
        Err(StoreError::NotFound) => {
            tracing::info!("agent connection refused: unknown or revoked token");
            return refuse(
                StatusCode::UNAUTHORIZED,
                "401 Unauthorized - the agent token is unknown or revoked",
            );
        }
        Err(error) => {
            tracing::error!(%error, "agent authentication failed");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable - try again");
        }
    };
    let project = match services.store.project(agent.project_id).await {
        Ok(project) => project,
        Err(_) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "401 Unauthorized - the agent's project is gone",
            );
        }
    };
    let Some(slot) = connections.registry.reserve_token(token.id) else {
        tracing::warn!(
            agent_id = agent.id,
            token_id = token.id,
            "agent connection refused: too many with one token"
        );
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "429 Too Many Requests - token {} already holds {MAX_CONNECTIONS_PER_TOKEN} connections to this kas: \
                 give each group of agentk pods its own token, or run fewer replicas",
                token.name
            ),
        );
    };
    let connection_id = headers
        .get(CONNECTION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand_id);

    let replaces = headers.get(REPLACES_HEADER).is_some_and(|v| v == "true");
    let on_upgrade = hyper::upgrade::on(&mut request);
    let websocket = websocket_key.is_some();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(error) => {
                tracing::warn!(agent_id = agent.id, %error, "agent connection upgrade failed");
                return;
            }
        };
        let agent_session = session::AgentSession {
            agent,
            project,
            token,
            connection_id,
            transport: if websocket { "websocket" } else { "tunnel" },
            replaces,
            close: tokio_util::sync::CancellationToken::new(),
        };
        if websocket {
            let config = glagent_tunnel::tunnel_config();
            let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, Some(config)).await;
            session::run(services, connections, agent_session, WsIo::new(ws)).await;
        } else {
            session::run(services, connections, agent_session, upgraded).await;
        }
        // The token's connection is gone (or never came).
        drop(slot);
    });

    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match websocket_key {
        Some(key) => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(WS_SUBPROTOCOL));
            if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            }
        }
        None => {
            headers.insert(header::UPGRADE, HeaderValue::from_static(RAW_TUNNEL_PROTOCOL));
        }
    }
    response
}

fn rand_id() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}
