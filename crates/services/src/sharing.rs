//! Agents shared with a project: those whose configuration names the
//! project, or a group above it, under `ci_access` or `user_access`
//! (`glagent_core::sharing` decides). The Kubernetes clusters page lists
//! other projects' ones as Shared agents; the environment form offers
//! those shared through `user_access`.

use glagent_core::sharing::{Sharing, sharing};
use glagent_store::{Agent, Project};

use crate::Services;

/// An agent shared with a project, and from where.
#[derive(Clone, Debug)]
pub struct SharedAgent {
    pub agent: Agent,
    /// The project holding the agent and its configuration.
    pub config_project: Project,
    pub sharing: Sharing,
}

impl Services {
    /// Every agent, this project's own included, whose configuration
    /// shares it with `project`. Agents whose configuration cannot be read
    /// or is broken share nothing (their own page says why).
    pub async fn agents_shared_with(&self, project: &Project) -> glagent_store::Result<Vec<SharedAgent>> {
        let mut shared = Vec::new();
        let mut projects: std::collections::HashMap<i64, Project> = std::collections::HashMap::new();
        for agent in self.store.all_agents().await? {
            let config_project = match projects.get(&agent.project_id) {
                Some(found) => found.clone(),
                None => match self.store.project(agent.project_id).await {
                    Ok(found) => {
                        projects.insert(found.id, found.clone());
                        found
                    }
                    Err(_) => continue,
                },
            };
            let config = match self.configs.current(&config_project, &agent).await {
                Ok(config) => config,
                Err(error) => {
                    tracing::debug!(agent_id = agent.id, %error, "an agent whose configuration cannot be read shares nothing");
                    continue;
                }
            };
            let sharing = sharing(&config, &project.full_path);
            if sharing.any() {
                shared.push(SharedAgent {
                    agent,
                    config_project,
                    sharing,
                });
            }
        }
        Ok(shared)
    }
}
