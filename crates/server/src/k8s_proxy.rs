//! The Kubernetes API proxy for people and CI jobs:
//! `<external-url>/-/kubernetes-agent/k8s-proxy/...`.
//!
//! kas authenticates the caller (`Authorization: Bearer pat:<agent id>:<token>`),
//! checks the agent's `user_access`, decides the identity to impose, and
//! forwards the request as a new HTTP/2 stream on one of the agent's
//! connections. Bodies stream in both directions; dropping the client's
//! request resets the stream, which cancels the request at the agent.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use glagent_core::access::AccessLevel;
use glagent_core::agent_config::UserAccessAs;
use glagent_proto::{IMPERSONATION_HEADER, Impersonation, K8S_PROXY_PATH};
use glagent_store::StoreError;
use std::collections::BTreeMap;

use crate::api::auth::authenticate;
use crate::state::AppState;

pub const PREFIX: &str = "/-/kubernetes-agent/k8s-proxy";

/// Headers that describe one hop and must not be forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Credentials and GitLab-specific headers kas consumes.
const CONSUMED: &[&str] = &[
    "authorization",
    "cookie",
    "gitlab-agent-id",
    "x-csrf-token",
    IMPERSONATION_HEADER,
];

#[derive(Debug)]
pub enum ProxyError {
    Unauthorized(String),
    Forbidden(String),
    BadRequest(String),
    Unavailable(String),
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let (code, reason, message) = match &self {
            ProxyError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "Unauthorized", m),
            ProxyError::Forbidden(m) => (StatusCode::FORBIDDEN, "Forbidden", m),
            ProxyError::BadRequest(m) => (StatusCode::BAD_REQUEST, "BadRequest", m),
            ProxyError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", m),
        };
        // A Kubernetes Status, so kubectl prints the message.
        let body = glagent_proto::kubernetes_status(code.as_u16(), reason, message);
        let mut response = (code, axum::Json(body)).into_response();
        if code == StatusCode::UNAUTHORIZED {
            // Tells a kas refusal apart from a 401 of the cluster.
            response
                .headers_mut()
                .insert("gitlab-unauthorized", HeaderValue::from_static("true"));
        }
        response
    }
}

/// Who may do what, once authenticated.
#[derive(Clone)]
pub struct Authorized {
    pub agent_id: i64,
    /// The identity imposed on the request, if any.
    pub impersonation: Option<Impersonation>,
}

/// An identity as carried in a header: base64 of its JSON.
pub fn encode_identity(identity: &Impersonation) -> String {
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(identity).expect("serialisable"))
}

pub fn decode_identity(value: &str) -> Result<Impersonation, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| format!("bad identity header: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("bad identity header: {e}"))
}

pub async fn handle(State(state): State<AppState>, request: Request) -> Response {
    match proxy(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// The protocol of an HTTP/1.1 upgrade request (exec, attach, port-forward).
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<String> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn proxy(state: &AppState, request: Request) -> Result<Response, ProxyError> {
    let authorized = authorize(state, request.headers()).await?;
    let imposed = authorized.impersonation.is_some();
    if imposed && request.headers().keys().any(|k| k.as_str().starts_with("impersonate-")) {
        return Err(ProxyError::BadRequest(
            "nested impersonation is not supported: this agent already imposes an identity on you".into(),
        ));
    }
    if !state.agents.holds(authorized.agent_id)
        && let Some(replica) = crate::agents::routing::find(state, authorized.agent_id).await?
    {
        return crate::agents::routing::forward(state, &replica, &authorized, request).await;
    }
    forward_local(state, &authorized, request, PREFIX).await
}

/// Sends an authorised request down one of this replica's connections of
/// the agent; `prefix` is the part of the path before the API server's.
pub async fn forward_local(
    state: &AppState,
    authorized: &Authorized,
    mut request: Request,
    prefix: &str,
) -> Result<Response, ProxyError> {
    let upgrade = upgrade_protocol(request.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    let connection = state.agents.pick(authorized.agent_id).ok_or_else(|| {
        ProxyError::Unavailable(format!(
            "agent {} is not connected to kas: check that agentk runs in the cluster",
            authorized.agent_id
        ))
    })?;

    let (parts, body) = request.into_parts();
    let rest = parts.uri.path().strip_prefix(prefix).unwrap_or("/");
    let rest = if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    };
    let target = match parts.uri.query() {
        Some(query) => format!("{K8S_PROXY_PATH}{rest}?{query}"),
        None => format!("{K8S_PROXY_PATH}{rest}"),
    };
    let mut forwarded = http::Request::builder().method(parts.method.clone()).uri(target);
    let headers = forwarded.headers_mut().expect("fresh builder");
    copy_end_to_end(&parts.headers, headers);
    headers.append(header::VIA, HeaderValue::from_static("1.1 glagent-kas"));
    if let Some(identity) = &authorized.impersonation {
        let encoded = encode_identity(identity);
        headers.insert(
            IMPERSONATION_HEADER,
            HeaderValue::from_str(&encoded).expect("base64 is a valid header"),
        );
    }
    // For an upgrade, the request body is the client's side of the
    // switched connection, fed once the client has been upgraded.
    let (body, client_bytes) = match &upgrade {
        Some(protocol) => {
            headers.insert(
                glagent_proto::UPGRADE_HEADER,
                HeaderValue::from_str(protocol).map_err(|_| ProxyError::BadRequest("bad Upgrade header".into()))?,
            );
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>(16);
            let stream = tokio_stream_from(rx);
            (Body::new(http_body_util::StreamBody::new(stream)), Some(tx))
        }
        None => (body, None),
    };
    let forwarded = forwarded
        .body(body)
        .map_err(|e| ProxyError::BadRequest(format!("cannot forward this request: {e}")))?;

    let mut sender = connection.sender.clone();
    sender
        .ready()
        .await
        .map_err(|e| ProxyError::Unavailable(format!("the agent connection closed: {e}")))?;
    let response = sender
        .send_request(forwarded)
        .await
        .map_err(|e| ProxyError::Unavailable(format!("the agent did not answer: {e}")))?;
    let (parts, body) = response.into_parts();
    let switched = parts
        .headers
        .get(glagent_proto::UPGRADE_STATUS_HEADER)
        .is_some_and(|v| v == "101");
    if let (true, Some(protocol), Some(client_upgrade), Some(client_bytes)) =
        (switched, upgrade, client_upgrade, client_bytes)
    {
        let mut out = Response::new(Body::empty());
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        copy_end_to_end(&parts.headers, out.headers_mut());
        out.headers_mut().remove(glagent_proto::UPGRADE_STATUS_HEADER);
        out.headers_mut().remove(header::CONTENT_LENGTH);
        out.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        out.headers_mut().insert(
            header::UPGRADE,
            HeaderValue::from_str(&protocol).expect("checked above"),
        );
        tokio::spawn(splice(client_upgrade, client_bytes, Body::new(body)));
        return Ok(out);
    }
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = parts.status;
    copy_end_to_end(&parts.headers, out.headers_mut());
    out.headers_mut().remove(glagent_proto::UPGRADE_STATUS_HEADER);
    out.headers_mut()
        .append(header::VIA, HeaderValue::from_static("1.1 glagent-kas"));
    Ok(out)
}

/// A receiver as a stream of body frames.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Carries bytes both ways between the upgraded client connection and the
/// agent's stream until either side closes.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    to_agent: tokio::sync::mpsc::Sender<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>,
    from_agent: Body,
) {
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upgraded = match client.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "client upgrade failed");
            return;
        }
    };
    let (mut client_read, mut client_write) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
    let upstream = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = hyper::body::Frame::data(bytes::Bytes::copy_from_slice(&buf[..n]));
                    if to_agent.send(Ok(frame)).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let downstream = async move {
        let mut stream = from_agent.into_data_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            if client_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// Copies the headers that belong to the request or response itself: not
/// hop-by-hop ones, not credentials, and none of glagent's own
/// (`x-glagent-*`), which only kas and agentk set between themselves.
pub fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let name_str = name.as_str();
        if HOP_BY_HOP.contains(&name_str) || CONSUMED.contains(&name_str) || name_str.starts_with(OWN_PREFIX) {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// The prefix of the headers kas, agentk and kas replicas use among
/// themselves.
const OWN_PREFIX: &str = "x-glagent-";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_cannot_send_glagents_own_headers_or_credentials_through() {
        let mut from = HeaderMap::new();
        for (name, value) in [
            ("accept", "application/json"),
            ("authorization", "Bearer pat:1:glpat-x"),
            ("x-glagent-upgrade", "SPDY/3.1"),
            ("x-glagent-impersonation", "e30="),
            ("x-glagent-route-identity", "e30="),
            ("connection", "keep-alive"),
            ("impersonate-user", "someone"),
        ] {
            from.append(name, HeaderValue::from_static(value));
        }
        let mut to = HeaderMap::new();
        copy_end_to_end(&from, &mut to);
        let kept: Vec<&str> = to.keys().map(|k| k.as_str()).collect();
        assert_eq!(kept, ["accept", "impersonate-user"]);
    }
}

/// Authorisation decisions are kept for a few seconds, so that a burst of
/// requests (kubectl sends several per command) costs one decision.
#[derive(Default)]
pub struct DecisionCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Authorized)>>,
}

impl DecisionCache {
    const TTL: std::time::Duration = std::time::Duration::from_secs(5);

    fn get(&self, key: &str) -> Option<Authorized> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (at, _)| at.elapsed() < Self::TTL);
        entries.get(key).map(|(_, authorized)| authorized.clone())
    }

    fn put(&self, key: String, authorized: Authorized) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(key, (std::time::Instant::now(), authorized));
    }

    /// Forgets every decision (a configuration or a credential changed).
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

async fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Authorized, ProxyError> {
    let key = headers
        .get(header::AUTHORIZATION)
        .map(|v| glagent_core::secret::digest_bytes(v.as_bytes()));
    if let Some(key) = &key
        && headers.get_all(header::AUTHORIZATION).iter().count() == 1
        && let Some(authorized) = state.proxy_decisions.get(key)
    {
        return Ok(authorized);
    }
    let authorized = decide(state, headers).await?;
    if let Some(key) = key {
        state.proxy_decisions.put(key, authorized.clone());
    }
    Ok(authorized)
}

async fn decide(state: &AppState, headers: &HeaderMap) -> Result<Authorized, ProxyError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ProxyError::Unauthorized(
            "send exactly one Authorization header: Bearer pat:<agent id>:<personal access token>".into(),
        ));
    };
    let value = value.to_str().unwrap_or_default();
    let credential = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, c)| c.trim())
        .ok_or_else(|| {
            ProxyError::Unauthorized("the Authorization header must be Bearer <type>:<agent id>:<secret>".into())
        })?;
    let mut fields = credential.splitn(3, ':');
    let (kind, agent_id, secret) = (fields.next(), fields.next(), fields.next());
    let (Some(kind), Some(agent_id), Some(secret)) = (kind, agent_id, secret) else {
        return Err(ProxyError::Unauthorized(
            "the bearer token must look like pat:<agent id>:<personal access token> or ci:<agent id>:<job token>"
                .into(),
        ));
    };
    let agent_id: i64 = agent_id
        .parse()
        .map_err(|_| ProxyError::Unauthorized(format!("{agent_id:?} is not an agent id")))?;
    match kind {
        "pat" => authorize_user(state, agent_id, secret).await,
        "ci" => authorize_job(state, agent_id, secret).await,
        other => Err(ProxyError::Unauthorized(format!(
            "unknown token type {other:?}: use pat or ci"
        ))),
    }
}

async fn authorize_job(state: &AppState, agent_id: i64, secret: &str) -> Result<Authorized, ProxyError> {
    let job = match state
        .store
        .ci_job_by_token_digest(&glagent_core::secret::digest(secret))
        .await
    {
        Ok(job) => job,
        Err(StoreError::NotFound) => return Err(ProxyError::Unauthorized("the CI job token is unknown".into())),
        Err(error) => return Err(ProxyError::Unavailable(error.to_string())),
    };
    if !job.is_active() {
        return Err(ProxyError::Unauthorized(
            "the CI job token has expired or its job has ended".into(),
        ));
    }
    let allowed = crate::ci::allowed_agents(state, &job)
        .await
        .map_err(|e| ProxyError::Unavailable(e.to_string()))?;
    let Some(allowed) = allowed.into_iter().find(|a| a.agent.id == agent_id) else {
        return Err(ProxyError::Forbidden(format!(
            "agent {agent_id} is not allowed for this job: its ci_access must list the job's project or a group above it, \
             and match the job's environment and branch protection"
        )));
    };
    let impersonation = crate::ci::job_identity(state, &job, &allowed)
        .await
        .map_err(|e| ProxyError::Unavailable(e.to_string()))?;
    Ok(Authorized {
        agent_id,
        impersonation,
    })
}

async fn authorize_user(state: &AppState, agent_id: i64, secret: &str) -> Result<Authorized, ProxyError> {
    let caller = authenticate(state, secret)
        .await
        .map_err(|_| ProxyError::Unauthorized("the personal access token is unknown, revoked or expired".into()))?;
    if !caller.token.has_scope("k8s_proxy") {
        return Err(ProxyError::Forbidden(
            "the personal access token needs the k8s_proxy scope".into(),
        ));
    }
    let denied = || ProxyError::Forbidden(format!("agent {agent_id} does not exist or does not grant you access"));
    let agent = match state.store.agent_by_id(agent_id).await {
        Ok(agent) => agent,
        Err(StoreError::NotFound) => return Err(denied()),
        Err(error) => return Err(ProxyError::Unavailable(error.to_string())),
    };
    let project = state.store.project(agent.project_id).await.map_err(|_| denied())?;
    let config = crate::agent_configs::load(state, &project, &agent)
        .await
        .map_err(|e| match e {
            crate::agent_configs::LoadError::Invalid(e) => {
                ProxyError::Forbidden(format!("the agent configuration is invalid: {e}"))
            }
            crate::agent_configs::LoadError::Git(e) => ProxyError::Unavailable(e.to_string()),
        })?;
    let Some(user_access) = config.user_access.as_ref() else {
        return Err(ProxyError::Forbidden(format!(
            "agent {agent_id} does not allow user access: list projects or groups under user_access in its configuration file"
        )));
    };
    let user = &caller.user;
    let mut project_roles = Vec::new();
    for entry in &user_access.projects {
        if let Ok(listed) = state.store.project_by_full_path(entry.id.as_str()).await
            && let Ok(Some(level)) = state.project_access(user, &listed).await
            && level >= AccessLevel::Developer
        {
            project_roles.push((listed.id, level));
        }
    }
    let mut group_roles = Vec::new();
    for entry in &user_access.groups {
        if let Ok(group) = state.store.namespace_by_full_path(entry.id.as_str()).await
            && group.is_group()
            && let Ok(Some(level)) = state.namespace_access(user, group.id).await
            && level >= AccessLevel::Developer
        {
            group_roles.push((group.id, level));
        }
    }
    if project_roles.is_empty() && group_roles.is_empty() {
        return Err(ProxyError::Forbidden(format!(
            "you need the developer role or higher in a project or group listed in agent {agent_id}'s user_access"
        )));
    }
    let impersonation = match user_access.access_as {
        Some(UserAccessAs::User(_)) => {
            let mut groups = vec!["gitlab:user".to_string()];
            let roles_up_to = |level: AccessLevel| AccessLevel::ALL.into_iter().filter(move |l| *l <= level);
            for (id, level) in &project_roles {
                groups.extend(roles_up_to(*level).map(|r| format!("gitlab:project_role:{id}:{}", r.name())));
            }
            for (id, level) in &group_roles {
                groups.extend(roles_up_to(*level).map(|r| format!("gitlab:group_role:{id}:{}", r.name())));
            }
            let extra = BTreeMap::from([
                ("agent.gitlab.com/id".to_string(), vec![agent.id.to_string()]),
                ("agent.gitlab.com/username".to_string(), vec![user.username.clone()]),
                (
                    "agent.gitlab.com/access_type".to_string(),
                    vec!["personal_access_token".to_string()],
                ),
                (
                    "agent.gitlab.com/config_project_id".to_string(),
                    vec![project.id.to_string()],
                ),
            ]);
            Some(Impersonation {
                username: format!("gitlab:user:{}", user.username),
                uid: None,
                groups,
                extra,
            })
        }
        Some(UserAccessAs::Agent(_)) | None => None,
    };
    Ok(Authorized {
        agent_id: agent.id,
        impersonation,
    })
}
