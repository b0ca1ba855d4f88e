//! What the agent knows while it runs: who it is, whether it is connected,
//! its current configuration, and counters for /metrics.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use glagent_core::agent_config::AgentConfig;

use crate::logging::LogLevel;

/// The configuration in force.
#[derive(Clone, Debug)]
pub struct Applied {
    pub agent_id: i64,
    pub commit_id: String,
    /// kas's URL, as its configuration updates say.
    pub gitlab_external_url: String,
    pub config: AgentConfig,
    pub log_level: String,
}

pub struct AgentState {
    pub connection_id: u64,
    pub pod_name: String,
    pub pod_namespace: String,
    pub kube: kube::Client,
    /// The proxy's client: pooled HTTP/2 for requests, HTTP/1.1 for streams.
    pub api: crate::api_client::ApiClient,
    pub log_level: LogLevel,
    /// Open connections with kas: the one the agent dialed and those kas
    /// dialed to a receptive agent.
    pub connections: AtomicUsize,
    /// Whether kas can dial this agent (the receptive listener is up).
    pub listening: AtomicBool,
    /// Whether this replica holds the agent's Lease.
    pub leader: AtomicBool,
    pub applied: RwLock<Option<Applied>>,
    pub metrics: glagent_telemetry::metrics::Agent,
    /// The leader's view of Flux's GitRepository objects.
    pub flux: FluxState,
}

impl AgentState {
    pub fn is_connected(&self) -> bool {
        self.connections.load(Ordering::Relaxed) > 0
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    pub fn applied(&self) -> Option<Applied> {
        self.applied.read().clone()
    }

    /// An agent process's state before its first connection.
    pub fn new(
        connection_id: u64,
        pod_name: String,
        pod_namespace: String,
        kube: kube::Client,
        api: crate::api_client::ApiClient,
        log_level: LogLevel,
    ) -> AgentState {
        AgentState {
            connection_id,
            pod_name,
            pod_namespace,
            kube,
            api,
            log_level,
            connections: Default::default(),
            listening: Default::default(),
            leader: Default::default(),
            applied: Default::default(),
            metrics: Default::default(),
            flux: Default::default(),
        }
    }

    /// A disconnected agent whose API server is the one `config` names.
    #[cfg(test)]
    pub(crate) fn for_tests(config: &kube::Config) -> AgentState {
        AgentState::new(
            1,
            "agentk-0".into(),
            "gitlab-agent".into(),
            kube::Client::try_from(config.clone()).expect("a kube client"),
            crate::api_client::ApiClient::new(config).expect("an API client"),
            LogLevel::detached(),
        )
    }
}

/// The GitRepository objects the leader sees, by the project they point at.
#[derive(Default)]
pub struct FluxState {
    /// `namespace/name` → project path.
    objects: parking_lot::Mutex<BTreeMap<(String, String), String>>,
    /// The projects pointed at, sorted; kas's streams follow it.
    pub projects: tokio::sync::watch::Sender<Vec<String>>,
}

impl FluxState {
    pub fn set(&self, objects: BTreeMap<(String, String), String>) {
        let projects: Vec<String> = objects.values().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        *self.objects.lock() = objects;
        self.projects.send_if_modified(|current| {
            let changed = *current != projects;
            if changed {
                tracing::info!(projects = ?projects, "Flux GitRepository objects point at these projects");
                *current = projects;
            }
            changed
        });
    }

    /// The GitRepository objects that point at `project`.
    pub fn pointing_at(&self, project: &str) -> Vec<(String, String)> {
        let project = project.to_ascii_lowercase();
        self.objects
            .lock()
            .iter()
            .filter(|(_, p)| **p == project)
            .map(|(key, _)| key.clone())
            .collect()
    }
}
