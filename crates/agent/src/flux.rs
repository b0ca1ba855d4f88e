//! The Flux module, run by the elected leader only. When Flux's
//! GitRepository CRD (`source.toolkit.fluxcd.io/v1`) is served, it watches
//! GitRepository objects in all namespaces and keeps the set of this
//! forge's projects they point at ([`glagent_core::flux::project_path`]).
//! kas reads the set through a stream it opens (`GET /v1/flux/projects`)
//! and, when one of those projects is pushed, asks the agent
//! (`POST /v1/flux/reconcile`) to request a reconciliation of the matching
//! GitRepository objects: the merge patch of
//! `reconcile.fluxcd.io/requestedAt` that `flux reconcile` and Flux's own
//! notification-controller make.
//!
//! Without the CRD the module idles and says so once; with
//! `flux.reconcile_on_push: false` in the configuration it stays off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::state::AgentState;

/// The annotation a reconciliation request sets (any new value works).
pub const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

fn git_repositories() -> ApiResource {
    ApiResource {
        group: "source.toolkit.fluxcd.io".into(),
        version: "v1".into(),
        api_version: "source.toolkit.fluxcd.io/v1".into(),
        kind: "GitRepository".into(),
        plural: "gitrepositories".into(),
    }
}

/// What the module needs from the agent's state right now, or `None` when
/// it should be off (not the leader, no configuration yet, turned off).
fn wanted(state: &AgentState) -> Option<url::Url> {
    if !state.leader.load(Ordering::Relaxed) {
        return None;
    }
    let applied = state.applied()?;
    if !applied.config.flux.as_ref().is_none_or(|f| f.reconcile_on_push()) {
        return None;
    }
    url::Url::parse(&applied.gitlab_external_url).ok()
}

/// Runs forever.
pub async fn run(state: Arc<AgentState>) {
    let mut said_missing = false;
    let mut said_forbidden = false;
    loop {
        let Some(forge) = wanted(&state) else {
            state.flux.set(BTreeMap::new());
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        match crd_served(&state.kube).await {
            Ok(true) => said_missing = false,
            Ok(false) => {
                if !said_missing {
                    tracing::info!(
                        "Flux's GitRepository CRD (source.toolkit.fluxcd.io/v1) is not installed: the Flux module idles until it is"
                    );
                    said_missing = true;
                }
                state.flux.set(BTreeMap::new());
                tokio::time::sleep(Duration::from_secs(10)).await;
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "could not ask the API server whether Flux is installed");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        }
        tracing::info!("watching Flux GitRepository objects in all namespaces");
        match watch(&state, &forge).await {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 403 => {
                if !said_forbidden {
                    tracing::info!(
                        reason = %e.message,
                        "the agent may not list or watch GitRepository objects in all namespaces: the Flux module reconciles none (RBAC keeps it out; grant list, watch and patch on gitrepositories.source.toolkit.fluxcd.io to use it)"
                    );
                    said_forbidden = true;
                }
                state.flux.set(BTreeMap::new());
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Err(error) => {
                tracing::warn!(%error, "watching GitRepository objects failed; starting again");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn crd_served(client: &kube::Client) -> kube::Result<bool> {
    match client.list_api_group_resources("source.toolkit.fluxcd.io/v1").await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "gitrepositories")),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

fn key_and_project(object: &DynamicObject, forge: &url::Url) -> Option<((String, String), Option<String>)> {
    let namespace = object.metadata.namespace.clone()?;
    let name = object.metadata.name.clone()?;
    let url = object.data["spec"]["url"].as_str().unwrap_or_default();
    Some(((namespace, name), glagent_core::flux::project_path(url, forge)))
}

/// Lists, then follows changes until the stream ends, an error, or the
/// module should stop (leadership lost, configuration changed).
async fn watch(state: &AgentState, forge: &url::Url) -> kube::Result<()> {
    let api: Api<DynamicObject> = Api::all_with(state.kube.clone(), &git_repositories());
    let list = api.list(&ListParams::default()).await?;
    let mut objects = BTreeMap::new();
    for object in &list.items {
        if let Some((key, Some(project))) = key_and_project(object, forge) {
            objects.insert(key, project);
        }
    }
    state.flux.set(objects.clone());
    let mut version = list.metadata.resource_version.unwrap_or_default();
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        let params = WatchParams::default().timeout(290);
        let mut events = api.watch(&params, &version).await?.boxed();
        loop {
            let event = tokio::select! {
                event = events.try_next() => event?,
                _ = check.tick() => {
                    if wanted(state).as_ref() != Some(forge) {
                        return Ok(());
                    }
                    continue;
                }
            };
            let Some(event) = event else { break };
            match event {
                WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                    if let Some(v) = object.metadata.resource_version.clone() {
                        version = v;
                    }
                    if let Some((key, project)) = key_and_project(&object, forge) {
                        match project {
                            Some(project) => objects.insert(key, project),
                            None => objects.remove(&key),
                        };
                    }
                }
                WatchEvent::Deleted(object) => {
                    if let Some(v) = object.metadata.resource_version.clone() {
                        version = v;
                    }
                    if let Some((key, _)) = key_and_project(&object, forge) {
                        objects.remove(&key);
                    }
                }
                WatchEvent::Bookmark(bookmark) => version = bookmark.metadata.resource_version,
                // 410 Gone and the like: list again.
                WatchEvent::Error(error) => return Err(kube::Error::Api(error)),
            }
            state.flux.set(objects.clone());
        }
    }
}

fn now() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default()
}

/// Requests a reconciliation of every GitRepository that points at
/// `project`; returns the `namespace/name` of each one annotated.
pub async fn reconcile(state: &AgentState, project: &str) -> Vec<String> {
    if wanted(state).is_none() {
        return Vec::new();
    }
    let requested_at = now();
    let patch = json!({"metadata": {"annotations": {REQUESTED_AT: requested_at}}});
    let requests = state.flux.pointing_at(project).into_iter().map(|(namespace, name)| {
        let api: Api<DynamicObject> = Api::namespaced_with(state.kube.clone(), &namespace, &git_repositories());
        let patch = patch.clone();
        async move {
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    tracing::info!(%namespace, %name, project, "requested the GitRepository's reconciliation");
                    Some(format!("{namespace}/{name}"))
                }
                Err(error) => {
                    tracing::warn!(%namespace, %name, %error, "could not annotate the GitRepository: may the agent's service account patch gitrepositories?");
                    None
                }
            }
        }
    });
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .flatten()
        .collect()
}
