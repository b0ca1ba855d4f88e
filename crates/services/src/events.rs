//! What happened that others must react to: pushes (agent connections send
//! a new configuration), URL configurations created or deleted (kas dials
//! receptive agents at once) and changes of access (memberships, tokens, agents,
//! projects, CI jobs, configuration files), after which no cached
//! authorisation may be used again.
//!
//! Access listeners are called synchronously, before the change's request
//! answers, so the next request already sees the change.

use std::sync::Arc;

use glagent_store::PushEvent;
use parking_lot::RwLock;
use tokio::sync::{broadcast, watch};

/// A change of who may do what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessChange {
    /// A membership was added, changed or removed.
    Membership,
    PersonalAccessTokenRevoked {
        token_id: i64,
    },
    AgentTokenRevoked {
        agent_id: i64,
        token_id: i64,
    },
    AgentDeleted {
        agent_id: i64,
    },
    ProjectDeleted {
        project_id: i64,
    },
    GroupDeleted {
        group_id: i64,
    },
    CiJobFinished {
        job_id: i64,
    },
    /// A project's repository moved: agent configurations (`user_access`,
    /// `ci_access`) may say something else now.
    Repository {
        project_id: i64,
    },
}

type Listener = Arc<dyn Fn(&AccessChange) + Send + Sync>;

pub struct Events {
    pushes: broadcast::Sender<PushEvent>,
    /// Ids of the pushes recorded by this process (the newest 1,024), so
    /// that the replica relay does not announce them twice.
    local_pushes: parking_lot::Mutex<std::collections::VecDeque<i64>>,
    url_configurations: watch::Sender<u64>,
    listeners: RwLock<Vec<Listener>>,
}

impl Default for Events {
    fn default() -> Self {
        let (pushes, _) = broadcast::channel(256);
        Events {
            pushes,
            local_pushes: Default::default(),
            url_configurations: watch::Sender::new(0),
            listeners: RwLock::new(Vec::new()),
        }
    }
}

impl Events {
    /// Every recorded push from now on.
    pub fn pushes(&self) -> broadcast::Receiver<PushEvent> {
        self.pushes.subscribe()
    }

    pub(crate) fn pushed(&self, event: PushEvent) {
        {
            let mut local = self.local_pushes.lock();
            local.push_back(event.id);
            if local.len() > 1024 {
                local.pop_front();
            }
        }
        let _ = self.pushes.send(event);
    }

    /// Whether this process recorded push `id` itself.
    pub(crate) fn is_local_push(&self, id: i64) -> bool {
        self.local_pushes.lock().contains(&id)
    }

    /// Announces a push another replica recorded.
    pub(crate) fn relayed(&self, event: PushEvent) {
        let _ = self.pushes.send(event);
    }

    /// Changes whenever a URL configuration is created or deleted here.
    pub fn url_configuration_changes(&self) -> watch::Receiver<u64> {
        self.url_configurations.subscribe()
    }

    /// Call it after a URL configuration was stored or deleted.
    pub fn url_configurations_changed(&self) {
        self.url_configurations.send_modify(|n| *n += 1);
    }

    /// Calls `listener` on every change of access from now on.
    pub fn on_access_change(&self, listener: impl Fn(&AccessChange) + Send + Sync + 'static) {
        self.listeners.write().push(Arc::new(listener));
    }

    /// Tells every listener; call it after the change is stored.
    pub fn access_changed(&self, change: AccessChange) {
        tracing::debug!(?change, "access changed");
        let listeners = self.listeners.read().clone();
        for listener in listeners {
            listener(&change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_listener_hears_every_change_before_access_changed_returns() {
        let events = Events::default();
        let heard = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let heard = heard.clone();
            events.on_access_change(move |change| {
                if matches!(change, AccessChange::AgentDeleted { agent_id: 7 }) {
                    heard.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        events.access_changed(AccessChange::AgentDeleted { agent_id: 7 });
        assert_eq!(heard.load(Ordering::SeqCst), 2);
        events.access_changed(AccessChange::Membership);
        assert_eq!(heard.load(Ordering::SeqCst), 2);
    }
}
