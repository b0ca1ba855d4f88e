//! The agent's half of the Kubernetes API proxy: requests kas forwards under
//! `/k8s-proxy/...` are performed against the cluster's API server with the
//! agent's own credentials, impersonating the identity kas imposed, if any.
//! Responses (watches included) stream back without being buffered.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use glagent_proto::{IMPERSONATION_HEADER, Impersonation, K8S_PROXY_PATH};
use http_body_util::BodyExt;

use crate::state::AgentState;

/// Kubernetes refuses request bodies above 3 MiB; leave some room.
const MAX_REQUEST_BODY: usize = 8 << 20;

/// Headers that describe one hop, or carry kas's own credentials and
/// instructions; never forwarded to the API server.
pub(crate) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    IMPERSONATION_HEADER,
];

pub(crate) fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = glagent_proto::kubernetes_status(code.as_u16(), reason, &message);
    (code, axum::Json(body)).into_response()
}

pub async fn handle(State(state): State<Arc<AgentState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let imposed = match parts.headers.get(IMPERSONATION_HEADER).map(decode).transpose() {
        Ok(imposed) => imposed,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    if imposed.is_some() && parts.headers.keys().any(|k| k.as_str().starts_with("impersonate-")) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "nested impersonation is not supported".into(),
        );
    }
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let rest = path_and_query.strip_prefix(K8S_PROXY_PATH).unwrap_or(path_and_query);
    let rest = if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    };

    if let Some(protocol) = parts
        .headers
        .get(glagent_proto::UPGRADE_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        let protocol = protocol.to_string();
        return crate::upgrade::perform(
            state,
            &parts.method,
            &rest,
            &protocol,
            &parts.headers,
            imposed.as_ref(),
            body,
        )
        .await;
    }
    let body = match http_body_util::Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!("request body: {error}"),
            );
        }
    };
    let mut builder = http::Request::builder().method(parts.method).uri(rest);
    let headers = builder.headers_mut().expect("fresh builder");
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.append(header::VIA, HeaderValue::from_static("1.1 glagent-agentk"));
    if let Some(identity) = &imposed {
        impersonation_headers(identity, headers);
    }
    let request = match builder.body(kube::client::Body::from(body)) {
        Ok(request) => request,
        Err(error) => return status(StatusCode::BAD_REQUEST, "BadRequest", error.to_string()),
    };
    match state.api.send(request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let mut out = Response::new(Body::new(body));
            *out.status_mut() = parts.status;
            for (name, value) in &parts.headers {
                if !HOP_BY_HOP.contains(&name.as_str()) {
                    out.headers_mut().append(name.clone(), value.clone());
                }
            }
            out
        }
        Err(error) => {
            tracing::warn!(%error, "Kubernetes API request failed");
            status(
                StatusCode::BAD_GATEWAY,
                "ServiceUnavailable",
                format!("the agent could not reach the Kubernetes API: {error}"),
            )
        }
    }
}

fn decode(value: &HeaderValue) -> Result<Impersonation, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_bytes())
        .map_err(|e| format!("bad impersonation header from kas: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("bad impersonation header from kas: {e}"))
}

/// The `Impersonate-*` headers of the Kubernetes API for an identity.
pub fn impersonation_headers(identity: &Impersonation, headers: &mut HeaderMap) {
    if let Ok(user) = HeaderValue::from_str(&identity.username) {
        headers.insert("impersonate-user", user);
    }
    if let Some(uid) = identity.uid.as_deref().and_then(|u| HeaderValue::from_str(u).ok()) {
        headers.insert("impersonate-uid", uid);
    }
    for group in &identity.groups {
        if let Ok(group) = HeaderValue::from_str(group) {
            headers.append("impersonate-group", group);
        }
    }
    for (key, values) in &identity.extra {
        // Extra keys go into the header name, percent-encoded (Kubernetes
        // decodes them): `agent.gitlab.com/id` -> `agent.gitlab.com%2fid`.
        let encoded: String = key
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                other => format!("%{other:02x}"),
            })
            .collect();
        let Ok(name) = HeaderName::from_bytes(format!("impersonate-extra-{encoded}").as_bytes()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(name.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_for_an_identity() {
        let identity = Impersonation {
            username: "gitlab:user:alice".into(),
            uid: Some("42".into()),
            groups: vec!["gitlab:user".into(), "gitlab:project_role:3:developer".into()],
            extra: [("agent.gitlab.com/id".to_string(), vec!["7".to_string()])].into(),
        };
        let mut headers = HeaderMap::new();
        impersonation_headers(&identity, &mut headers);
        assert_eq!(headers["impersonate-user"], "gitlab:user:alice");
        assert_eq!(headers["impersonate-uid"], "42");
        assert_eq!(headers.get_all("impersonate-group").iter().count(), 2);
        assert_eq!(headers["impersonate-extra-agent.gitlab.com%2fid"], "7");
    }
}
