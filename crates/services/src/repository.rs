//! The one way to change a project's repository: hold its lock for the
//! change, then record every ref it moved as a push, which empties the
//! project's cached agent configurations, tells access listeners and wakes
//! the agent connections that listen for pushes.

use glagent_git::{RefUpdate, Repos};
use glagent_store::NewPushEvent;
use tokio::sync::OwnedMutexGuard;

use crate::Services;
use crate::events::AccessChange;

/// A change in progress; the repository is locked until [`finish`](Self::finish)
/// has recorded it.
#[must_use = "a repository change must be finished to record what it moved"]
pub struct RepositoryChange<'a> {
    services: &'a Services,
    project_id: i64,
    _lock: OwnedMutexGuard<()>,
}

impl Services {
    /// Locks the project's repository for a change.
    pub async fn change_repository(&self, project_id: i64) -> RepositoryChange<'_> {
        let lock = self.repos.lock(project_id).lock_owned().await;
        RepositoryChange {
            services: self,
            project_id,
            _lock: lock,
        }
    }
}

impl RepositoryChange<'_> {
    pub fn repos(&self) -> &Repos {
        &self.services.repos
    }

    /// Records what moved, then releases the lock (so pushes are recorded
    /// in the order they happened).
    pub async fn finish(self, user_id: Option<i64>, updates: &[RefUpdate]) {
        let RepositoryChange {
            services,
            project_id,
            _lock,
        } = self;
        if updates.is_empty() {
            return;
        }
        services.configs.invalidate_project(project_id);
        services.events.access_changed(AccessChange::Repository { project_id });
        for update in updates {
            let new = NewPushEvent {
                project_id,
                ref_name: update.ref_name.clone(),
                before_sha: update.before.clone(),
                after_sha: update.after.clone(),
                user_id,
            };
            match services.store.record_push(&new).await {
                Ok(event) => {
                    tracing::info!(project_id, ref_name = %event.ref_name, after = %event.after_sha, "push recorded");
                    services.events.pushed(event);
                }
                Err(error) => tracing::error!(project_id, %error, "recording a push failed"),
            }
        }
    }
}

/// With several replicas: pushes another replica recorded are announced
/// here too, within half a second (configuration pushes, Flux
/// reconciliation requests, and the caches that forget a moved
/// repository all follow). Runs until the process ends.
pub async fn relay_pushes_forever(services: crate::Services) {
    let mut last = match services.store.last_push_event_id().await {
        Ok(id) => id,
        Err(error) => {
            tracing::warn!(%error, "reading the last push failed; relaying from the start");
            0
        }
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        let events = match services.store.push_events_after(last, 1000).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "reading other replicas' pushes failed");
                continue;
            }
        };
        for event in events {
            last = last.max(event.id);
            if services.events.is_local_push(event.id) {
                continue;
            }
            let project_id = event.project_id;
            services.configs.invalidate_project(project_id);
            services.events.access_changed(AccessChange::Repository { project_id });
            tracing::debug!(project_id, push_id = event.id, "push recorded by another replica");
            services.events.relayed(event);
        }
    }
}
