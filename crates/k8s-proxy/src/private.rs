//! The receiving end of forwarding between replicas: a request another
//! replica authorised, signed with the replicas' shared secret, carrying
//! the agent and the identity decided there. It goes down one of this
//! replica's connections of the agent, never to a third replica.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use glagent_connections::routing::{AGENT_HEADER, IDENTITY_HEADER, SIGNATURE_HEADER, header_str};
use glagent_proto::forwarding::decode_identity;

use crate::Proxy;
use crate::authorize::Authorized;
use crate::error::ProxyError;
use crate::forward::{PRIVATE_PREFIX, Target, forward};

pub async fn handle(State(proxy): State<Proxy>, request: Request) -> Response {
    match accept(&proxy, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn accept(proxy: &Proxy, request: Request) -> Result<Response, ProxyError> {
    let Some(routing) = &proxy.connections.routing else {
        return Err(ProxyError::BadRequest("this kas serves no private API".into()));
    };
    let headers = request.headers();
    let identity = header_str(headers, IDENTITY_HEADER);
    let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let agent_id = header_str(headers, AGENT_HEADER).parse::<i64>().ok();
    let signed = agent_id.is_some_and(|agent_id| {
        routing.verify(
            header_str(headers, SIGNATURE_HEADER),
            agent_id,
            identity,
            request.method().as_str(),
            path,
        )
    });
    let Some(agent_id) = agent_id.filter(|_| signed) else {
        tracing::warn!(path, "private API request with a missing or bad signature refused");
        return Err(ProxyError::Unauthorized(
            "private API requests must be signed with the replicas' shared secret (--private-api-secret-file)".into(),
        ));
    };
    let impersonation = if identity.is_empty() {
        None
    } else {
        Some(decode_identity(identity.as_bytes()).map_err(|e| ProxyError::BadRequest(e.to_string()))?)
    };
    let authorized = Authorized {
        agent_id,
        impersonation,
        caller: None,
    };
    let target = Target::local(&proxy.connections, agent_id)?;
    let end = crate::record::is_watch(&request).then_some(&proxy.shutdown);
    Ok(forward(target, &authorized, request, PRIVATE_PREFIX)
        .await?
        .respond((), end))
}
