//! kas's Kubernetes API proxy for people and CI jobs, at
//! `<external-url>/-/kubernetes-agent/k8s-proxy/...`: one path for every
//! caller.
//!
//! 1. [`authorize`]: credentials to an authorised caller (the agent, and
//!    the identity kas imposes), decided by `glagent_core::identity`;
//! 2. the nested-impersonation rule;
//! 3. [`forward`]: to a connection of the agent here or to the replica
//!    holding one ([`private`] is that replica's side), with one splice for
//!    upgrades;
//! 4. [`record`]: metrics and the audit log, when the exchange has ended.

pub mod authorize;
pub mod error;
pub mod forward;
pub mod private;
pub mod record;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use glagent_connections::Connections;
use glagent_core::identity::client_may_impersonate;
use glagent_proto::forwarding::upgrade_protocol;
use glagent_services::Services;
use tokio_util::sync::CancellationToken;

use crate::authorize::{DecisionCache, authorize};
use crate::error::ProxyError;
use crate::forward::{Forwarded, PRIVATE_PREFIX, Target, forward};
use crate::record::Exchange;

/// Replicas a request without a body is offered to, when the ones before
/// refused the connection.
const MAX_REPLICA_TRIES: usize = 3;

/// Where the proxy serves.
pub const PREFIX: &str = "/-/kubernetes-agent/k8s-proxy";

/// The proxy's state; cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    services: Services,
    connections: Connections,
    decisions: Arc<DecisionCache>,
    /// Cancelled when kas stops: open watches end cleanly at once.
    shutdown: CancellationToken,
}

impl Proxy {
    /// A proxy whose decisions are forgotten whenever access changes, and
    /// whose watches end when `shutdown` is cancelled.
    pub fn new(services: Services, connections: Connections, shutdown: CancellationToken) -> Proxy {
        let decisions = Arc::new(DecisionCache::default());
        services.events.on_access_change({
            let decisions = decisions.clone();
            move |_| decisions.clear()
        });
        Proxy {
            services,
            connections,
            decisions,
            shutdown,
        }
    }
}

/// The proxy for users and CI jobs.
pub fn router(proxy: Proxy) -> Router {
    Router::new()
        .route(PREFIX, any(handle))
        .route(&format!("{PREFIX}/{{*rest}}"), any(handle))
        .with_state(proxy)
}

/// The private API's side: requests forwarded by other replicas.
pub fn private_router(proxy: Proxy) -> Router {
    Router::new()
        .route(PRIVATE_PREFIX, any(private::handle))
        .route(&format!("{PRIVATE_PREFIX}/{{*rest}}"), any(private::handle))
        .with_state(proxy)
}

async fn handle(State(proxy): State<Proxy>, request: Request) -> Response {
    let mut exchange = Exchange::begin(&proxy.services, &request, PREFIX);
    let end = exchange.is_watch().then_some(&proxy.shutdown);
    match proxy_request(&proxy, request, &mut exchange).await {
        Ok(forwarded) => {
            exchange.answered(forwarded.status());
            forwarded.respond(exchange, end)
        }
        Err(error) => {
            let response = error.into_response();
            exchange.answered(response.status());
            response
        }
    }
}

async fn proxy_request(proxy: &Proxy, request: Request, exchange: &mut Exchange) -> Result<Forwarded, ProxyError> {
    let authorized = authorize(&proxy.services, &proxy.decisions, request.headers()).await?;
    exchange.authorized(&authorized);
    let header_names = request.headers().keys().map(|k| k.as_str());
    if !client_may_impersonate(authorized.impersonation.as_ref(), header_names) {
        return Err(ProxyError::BadRequest(
            "nested impersonation is not supported: this agent already imposes an identity on you".into(),
        ));
    }
    // A request without a body that a dead replica refused is sent again
    // to another holder of the agent (the replica is tried last from then on).
    let again = (request.body().is_end_stream() && upgrade_protocol(request.headers()).is_none()).then(|| {
        (
            request.method().clone(),
            request.uri().clone(),
            request.version(),
            request.headers().clone(),
        )
    });
    let target = Target::find(&proxy.connections, &proxy.services.store, authorized.agent_id).await?;
    let mut forwarded = forward(target, &authorized, request, PREFIX).await;
    for _ in 0..MAX_REPLICA_TRIES - 1 {
        let (Err(ProxyError::ReplicaUnreachable(_)), Some((method, uri, version, headers))) = (&forwarded, &again)
        else {
            break;
        };
        let mut request = Request::new(Body::empty());
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        *request.version_mut() = *version;
        *request.headers_mut() = headers.clone();
        let target = Target::find(&proxy.connections, &proxy.services.store, authorized.agent_id).await?;
        forwarded = forward(target, &authorized, request, PREFIX).await;
    }
    forwarded
}
