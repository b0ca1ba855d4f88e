//! Connected agents: the WebSocket endpoint they dial, the registry of live
//! connections, and the per-connection task that keeps each agent
//! configured and checks its token.

mod connection;
mod endpoint;
mod registry;
pub mod routing;

pub use endpoint::agent_endpoint;
pub use registry::{AgentConnection, AgentRegistry, ConnectionSummary};
