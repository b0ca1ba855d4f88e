//! Environments, as GitLab's Environments API shows them.

use serde::{Deserialize, Serialize};

use crate::{Agent, Project};

/// An environment of a project (`GET /projects/:id/environments/:id`).
/// `cluster_agent`, `kubernetes_namespace` and `flux_resource_path` are
/// sent only when an agent is linked and the caller may read that agent,
/// as GitLab does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// Always `null`: glagent stops environments only when asked.
    pub auto_stop_at: Option<String>,
    /// `always` or `with_action`.
    pub auto_stop_setting: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_agent: Option<Agent>,
    pub created_at: String,
    pub description: Option<String>,
    pub external_url: Option<String>,
    /// The Flux Kustomization or HelmRelease, as the path after `/apis/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flux_resource_path: Option<Option<String>>,
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_namespace: Option<Option<String>>,
    /// glagent's extension: every namespace the environment watches, the
    /// first being `kubernetes_namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_namespaces: Option<Vec<String>>,
    pub name: String,
    pub project: Project,
    pub slug: String,
    /// `available`, `stopping` or `stopped`.
    pub state: String,
    /// `production`, `staging`, `testing`, `development` or `other`.
    pub tier: String,
    pub updated_at: String,
}
