//! Agents' parsed configuration files as kas itself uses them (user access,
//! CI access), cached until the next push to the agent's project.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glagent_core::agent_config::{AgentConfig, ConfigError, config_file_path, parse_config};
use glagent_store::{Agent, Project};

use crate::git::GitError;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Invalid(ConfigError),
    #[error("{0}")]
    Git(#[from] GitError),
}

/// The agent's configuration from its project's default branch.
pub async fn load(state: &AppState, project: &Project, agent: &Agent) -> Result<Arc<AgentConfig>, LoadError> {
    if let Some(config) = state.config_cache.get(agent.id) {
        return Ok(config);
    }
    let path = config_file_path(&agent.name);
    let branch = format!("refs/heads/{}", project.default_branch);
    let content = state
        .repos
        .read_file(project.id, &branch, &path)
        .await?
        .map(|f| f.content)
        .unwrap_or_default();
    let config = Arc::new(parse_config(&path, &content).map_err(LoadError::Invalid)?);
    state.config_cache.put(project.id, agent.id, config.clone());
    Ok(config)
}

/// Parsed configurations, dropped when their project is pushed to (and
/// after a minute, for pushes that reached another kas replica).
#[derive(Default)]
pub struct ConfigCache {
    entries: Mutex<HashMap<i64, CacheEntry>>,
}

struct CacheEntry {
    project_id: i64,
    at: Instant,
    config: Arc<AgentConfig>,
}

impl ConfigCache {
    const TTL: Duration = Duration::from_secs(60);

    fn get(&self, agent_id: i64) -> Option<Arc<AgentConfig>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&agent_id)
            .filter(|entry| entry.at.elapsed() < Self::TTL)
            .map(|entry| entry.config.clone())
    }

    fn put(&self, project_id: i64, agent_id: i64, config: Arc<AgentConfig>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(
            agent_id,
            CacheEntry {
                project_id,
                at: Instant::now(),
                config,
            },
        );
    }

    /// Forgets every agent of a project (its repository changed).
    pub fn invalidate_project(&self, project_id: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, entry| entry.project_id != project_id);
    }
}
