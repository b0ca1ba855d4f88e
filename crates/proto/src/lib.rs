//! The protocol between kas and agentk, written down in `docs/protocol.md`.
//!
//! agentk dials kas and upgrades to a WebSocket with the subprotocol
//! [`WS_SUBPROTOCOL`] (`wss://`), or upgrades the HTTP/1.1 connection itself
//! to [`RAW_TUNNEL_PROTOCOL`] (`grpc(s)://`); kas dials a receptive agent
//! and makes the same raw upgrade to it. Either way the bytes that follow
//! carry one HTTP/2 connection in which **kas is the client and agentk the
//! server**, so that kas can open any number of streams to the agent:
//! configuration updates, metadata queries and proxied Kubernetes API
//! requests. This crate holds the names and message bodies both sides agree
//! on; it does no I/O.

pub mod forwarding;
pub mod jwt;
pub mod signing;

use glagent_core::agent_config::AgentConfig;
use serde::{Deserialize, Serialize};

/// The WebSocket subprotocol of the tunnel.
pub const WS_SUBPROTOCOL: &str = "glagent-tunnel.v1";
/// Where agents connect on kas (same port as the API).
pub const AGENT_PATH: &str = "/-/kubernetes-agent/";
/// agentk: `PUT` a [`ConfigurationUpdate`].
pub const CONFIGURATION_PATH: &str = "/v1/configuration";
/// agentk: `GET` an [`AgentInfo`].
pub const INFO_PATH: &str = "/v1/info";
/// agentk: `GET` a stream of [`FluxProjects`] lines (newline-delimited
/// JSON), one now and one on every change.
pub const FLUX_PROJECTS_PATH: &str = "/v1/flux/projects";
/// agentk: `POST` a [`FluxReconcile`]; answers [`FluxReconciled`].
pub const FLUX_RECONCILE_PATH: &str = "/v1/flux/reconcile";
/// Header on the upgrade request: the agent process's connection id (on
/// the `101` answer when kas dials a receptive agent).
pub const CONNECTION_ID_HEADER: &str = "x-glagent-connection-id";
/// Header on the upgrade request of an agent whose token file changed:
/// the new connection replaces the process's connections made with the
/// old token, which kas then gives no new work (they finish what they
/// carry and close).
pub const REPLACES_HEADER: &str = "x-glagent-replaces-connections";
/// The `Upgrade` token of the tunnel without WebSocket framing: after
/// `101 Switching Protocols` the connection's bytes are the tunnel's HTTP/2.
/// Agents on `grpc://`/`grpcs://` ask kas for it; kas asks receptive agents.
pub const RAW_TUNNEL_PROTOCOL: &str = "glagent-tunnel";
/// On a receptive agent's `101` answer: its agent token, which kas checks
/// belongs to the agent it meant to dial.
pub const AGENT_TOKEN_HEADER: &str = "x-glagent-agent-token";

/// The projects of this forge that the agent's Flux GitRepository objects
/// point at (the leader's; others send an empty list).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FluxProjects {
    pub projects: Vec<String>,
}

/// kas to the agent: `project_path` was pushed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FluxReconcile {
    pub project_path: String,
}

/// The GitRepository objects (`namespace/name`) whose reconciliation the
/// agent requested.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FluxReconciled {
    pub annotated: Vec<String>,
}

/// What an agent process reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Random per agentk process; several replicas have several ids.
    pub connection_id: u64,
    pub version: String,
    pub commit: String,
    pub pod_namespace: String,
    pub pod_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<KubernetesVersion>,
}

/// The cluster's version as its API server reports it at `/version`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KubernetesVersion {
    pub major: String,
    pub minor: String,
    pub git_version: String,
    pub platform: String,
}

/// A configuration update from kas. Either `config` (a valid file, already
/// checked by kas, without `user_access`, which only kas uses) or `error` (the file at `commit_id` is broken and the
/// agent must keep its last good configuration).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationUpdate {
    pub agent_id: i64,
    pub project_id: i64,
    pub project_path: String,
    pub commit_id: String,
    pub gitlab_external_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<AgentConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// agentk: Kubernetes API requests from kas arrive under this prefix.
pub const K8S_PROXY_PATH: &str = "/k8s-proxy";
/// Header kas adds to a proxied request: base64 of an [`Impersonation`]
/// as JSON, when kas imposes an identity.
pub const IMPERSONATION_HEADER: &str = "x-glagent-impersonation";

pub use glagent_core::identity::Impersonation;

/// Header on a proxied request that asks agentk for an HTTP upgrade (its
/// value is the `Upgrade` protocol, e.g. `SPDY/3.1` or `websocket`). The
/// request body then carries the client's bytes and the response body the
/// API server's, on one full-duplex HTTP/2 stream.
pub const UPGRADE_HEADER: &str = "x-glagent-upgrade";
/// Response header from agentk: the API server switched protocols.
pub const UPGRADE_STATUS_HEADER: &str = "x-glagent-upgrade-status";

/// A Kubernetes `Status` failure, the error body kubectl and client
/// libraries print; both kas and agentk answer errors this way.
pub fn kubernetes_status(code: u16, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("GitLab agent: {message}"),
        "reason": reason,
        "code": code,
    })
}
