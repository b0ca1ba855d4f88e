//! What kas says about itself, and the body of every error.

use serde::{Deserialize, Serialize};

/// GitLab's `GET /metadata`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Always `false`.
    pub enterprise: bool,
    pub kas: KasMetadata,
    pub revision: String,
    pub version: String,
}

/// The `kas` part of `GET /metadata`: where agents and the Kubernetes API
/// proxy are reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KasMetadata {
    pub enabled: bool,
    /// The Kubernetes API proxy, for kubeconfigs.
    pub external_k8s_proxy_url: String,
    /// The agent endpoint (`wss://`), for agentk.
    pub external_url: String,
    pub version: String,
}

/// GitLab's `GET /version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub revision: String,
    pub version: String,
}

/// GitLab's `{"message": ...}`: the body of every error (`404 Project Not
/// Found`) and of a few answers without an entity (`202 Accepted`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub message: String,
}

impl Message {
    pub fn new(message: impl Into<String>) -> Message {
        Message {
            message: message.into(),
        }
    }
}
