//! The state every request handler shares, and the access rules that need
//! the store (roles inherited down the namespace tree).

use std::sync::Arc;

use glagent_core::access::AccessLevel;
use glagent_store::{MemberSource, Namespace, NewPushEvent, Project, PushEvent, Store, User};
use tokio::sync::broadcast;
use url::Url;

use crate::git::{RefUpdate, Repos};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub repos: Repos,
    pub external_url: Url,
    /// The CA kas generated for itself, if it did: put in kubeconfigs.
    pub ca_pem: Option<String>,
    /// The agents connected to this kas.
    pub agents: crate::agents::AgentRegistry,
    /// Parsed agent configurations for the Kubernetes API proxy.
    pub config_cache: crate::agent_configs::ConfigCache,
    /// Recent Kubernetes API proxy authorisation decisions.
    pub proxy_decisions: crate::k8s_proxy::DecisionCache,
    /// Every recorded push, for parts that react to configuration changes.
    pub pushes: broadcast::Sender<PushEvent>,
    /// Routes to agents connected to other replicas, with a private API.
    pub routing: Option<crate::agents::routing::Routing>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        store: Store,
        repos: Repos,
        external_url: Url,
        ca_pem: Option<String>,
        routing: Option<crate::agents::routing::Routing>,
    ) -> AppState {
        let (pushes, _) = broadcast::channel(256);
        AppState(Arc::new(Inner {
            store,
            repos,
            external_url,
            ca_pem,
            agents: Default::default(),
            config_cache: Default::default(),
            proxy_decisions: Default::default(),
            pushes,
            routing,
        }))
    }

    /// `https://host[:port]` without a trailing slash.
    pub fn base_url(&self) -> String {
        self.external_url.as_str().trim_end_matches('/').to_string()
    }

    /// Where agents connect: `wss://<host>/-/kubernetes-agent/`.
    pub fn agent_url(&self) -> String {
        let scheme = if self.external_url.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        let rest = self.base_url();
        let rest = rest.split_once("://").map(|(_, r)| r).unwrap_or(&rest);
        format!("{scheme}://{rest}/-/kubernetes-agent/")
    }

    /// The Kubernetes API proxy for users and CI jobs.
    pub fn k8s_proxy_url(&self) -> String {
        format!("{}/-/kubernetes-agent/k8s-proxy/", self.base_url())
    }

    /// The namespace and all its ancestors, nearest first.
    pub async fn namespace_chain(&self, namespace_id: i64) -> glagent_store::Result<Vec<Namespace>> {
        let mut chain = Vec::new();
        let mut next = Some(namespace_id);
        while let Some(id) = next {
            let ns = self.store.namespace(id).await?;
            next = ns.parent_id;
            chain.push(ns);
        }
        Ok(chain)
    }

    /// The user's role in a namespace: their own membership or one inherited
    /// from an ancestor group; owners of personal namespaces are owners.
    pub async fn namespace_access(&self, user: &User, namespace_id: i64) -> glagent_store::Result<Option<AccessLevel>> {
        if user.admin() {
            return Ok(Some(AccessLevel::Owner));
        }
        let mut best: Option<AccessLevel> = None;
        for ns in self.namespace_chain(namespace_id).await? {
            if ns.owner_id == Some(user.id) {
                return Ok(Some(AccessLevel::Owner));
            }
            if let Some(member) = self.store.member(MemberSource::Namespace(ns.id), user.id).await? {
                let level = AccessLevel::try_from(member.access_level).ok();
                best = best.max(level);
            }
        }
        Ok(best)
    }

    /// The user's role in a project: direct or inherited from its groups.
    pub async fn project_access(&self, user: &User, project: &Project) -> glagent_store::Result<Option<AccessLevel>> {
        let inherited = self.namespace_access(user, project.namespace_id).await?;
        let direct = self
            .store
            .member(MemberSource::Project(project.id), user.id)
            .await?
            .and_then(|m| AccessLevel::try_from(m.access_level).ok());
        Ok(inherited.max(direct))
    }

    /// Records ref changes of a project and tells whoever listens.
    pub async fn record_pushes(&self, project_id: i64, user_id: Option<i64>, updates: &[RefUpdate]) {
        self.config_cache.invalidate_project(project_id);
        self.proxy_decisions.clear();
        for update in updates {
            let new = NewPushEvent {
                project_id,
                ref_name: update.ref_name.clone(),
                before_sha: update.before.clone(),
                after_sha: update.after.clone(),
                user_id,
            };
            match self.store.record_push(&new).await {
                Ok(event) => {
                    tracing::info!(project_id, ref_name = %event.ref_name, after = %event.after_sha, "push recorded");
                    let _ = self.pushes.send(event);
                }
                Err(error) => tracing::error!(project_id, %error, "recording a push failed"),
            }
        }
    }
}
