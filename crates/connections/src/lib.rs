//! kas's agent connections: the endpoint agents dial
//! (`/-/kubernetes-agent/`, WebSocket or raw tunnel), the dialing of
//! receptive agents ([`receptive`]), the registry of live connections, the
//! per-connection session that keeps each agent registered and configured,
//! the replica's [`upkeep`] of them all (revocations, last use, pushes; a
//! cost that does not grow with their number while they idle), and — with
//! several replicas — the routes to agents that other replicas hold, with
//! the signing of private requests.
//!
//! Connections listen for changes of access: a revoked agent token or a
//! deleted agent closes its connections at once (within a second when the
//! change was made on another replica).

pub mod endpoint;
pub mod receptive;
pub mod registry;
pub mod routing;
mod session;
pub mod upkeep;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use glagent_services::Services;

pub use registry::{AgentConnection, AgentRegistry, ConnectionSummary};
pub use routing::Routing;

/// This replica's connections and, with replicas, its routes to others'.
#[derive(Clone)]
pub struct Connections {
    pub registry: Arc<AgentRegistry>,
    pub routing: Option<Arc<Routing>>,
}

impl Connections {
    /// Connections that close when access to them ends.
    pub fn new(services: &Services, routing: Option<Routing>) -> Connections {
        let registry = Arc::new(AgentRegistry::default());
        services.events.on_access_change({
            let registry = registry.clone();
            move |change| registry.access_changed(change)
        });
        Connections {
            registry,
            routing: routing.map(Arc::new),
        }
    }

    /// The agent's connections on every replica, oldest first.
    pub async fn summaries(&self, services: &Services, agent_id: i64) -> Vec<ConnectionSummary> {
        let mut found: Vec<_> = self.registry.of_agent(agent_id).iter().map(|c| c.summary()).collect();
        if let Some(routing) = &self.routing {
            found.extend(routing.remote_connections(&services.store, agent_id).await);
        }
        found.sort_by_key(|c| c.connected_at);
        found
    }
}

/// The endpoint agents dial.
pub fn router(services: Services, connections: Connections) -> Router {
    Router::new()
        .route(glagent_proto::AGENT_PATH, get(endpoint::agent_endpoint))
        .route("/-/kubernetes-agent", get(endpoint::agent_endpoint))
        .with_state((services, connections))
}
