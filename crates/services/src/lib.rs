//! kas's services: the state and rules that every face of kas shares (the
//! REST API, Git over HTTP, agent connections, the Kubernetes API proxy and
//! the web pages), so that each face calls the same code for the same
//! question and none of them talks to another face.
//!
//! - [`access`]: roles inherited down the namespace tree;
//! - [`auth`]: personal access tokens to callers;
//! - [`configs`]: an agent's configuration at its project's HEAD, parsed
//!   and cached;
//! - [`events`]: pushes, and the one notification that access changed;
//! - [`repository`]: the one way to change a repository (lock, then record
//!   the push);
//! - [`ci`]: which agents a CI job may use, and as whom;
//! - [`environments`]: creating, linking, stopping and deleting environments;
//! - [`agents`]: registering agents and their tokens, their activity;
//!   [`sharing`]: agents shared with a project;
//! - [`cache`]: the one TTL cache type;
//! - [`sealed`]: secrets kas must keep usable, sealed at rest;
//! - [`urls`], [`install`], [`users`].

pub mod access;
pub mod agents;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod ci;
pub mod configs;
pub mod environments;
pub mod events;
pub mod install;
pub mod passwords;
pub mod repository;
pub mod sealed;
pub mod sessions;
pub mod sharing;
pub mod urls;
pub mod users;

use std::sync::Arc;

use glagent_git::Repos;
use glagent_store::Store;

use crate::configs::AgentConfigs;
use crate::events::Events;
use crate::sealed::Sealer;
use crate::urls::Urls;

/// Everything kas's faces share; cheap to clone.
#[derive(Clone)]
pub struct Services(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub repos: Arc<Repos>,
    pub urls: Urls,
    pub events: Events,
    pub configs: AgentConfigs,
    /// Seals the secrets kas must keep usable (receptive agents' keys).
    pub sealer: Sealer,
    pub settings: Settings,
    /// Requests through the Kubernetes API proxy.
    pub audit: audit::AuditLog,
}

/// Instance settings, as GitLab's application settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// GitLab's `receptive_cluster_agents_enabled`: URL configurations may
    /// be made (the API answers 404 otherwise).
    pub receptive_agents: bool,
    /// Whether proxied requests are recorded in the audit log.
    pub audit_log: bool,
    /// How long the audit log keeps proxied requests.
    pub audit_retention: std::time::Duration,
    /// How long a token kas stored but did not finish sending (it stopped
    /// while answering) waits for its first use before it is deleted.
    pub undelivered_token_grace: std::time::Duration,
    /// How often the replica compares the branch tip of every project its
    /// agents' configurations live in with what it sent them, for changes
    /// no push announced (upstream's `agent.configuration.poll_period`).
    pub config_poll_period: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            receptive_agents: true,
            audit_log: true,
            audit_retention: std::time::Duration::from_secs(30 * 86_400),
            undelivered_token_grace: std::time::Duration::from_secs(3_600),
            config_poll_period: std::time::Duration::from_secs(300),
        }
    }
}

impl std::ops::Deref for Services {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Services {
    pub fn new(store: Store, repos: Repos, urls: Urls, sealer: Sealer, settings: Settings) -> Services {
        let repos = Arc::new(repos);
        Services(Arc::new(Inner {
            configs: AgentConfigs::new(repos.clone()),
            store,
            repos,
            urls,
            events: Events::default(),
            sealer,
            settings,
            audit: audit::AuditLog::default(),
        }))
    }
}
