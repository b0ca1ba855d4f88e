//! CI/CD access: which agents a CI job may use, and as whom. The rules are
//! in `glagent_core::ci_access` and `glagent_core::identity`; this module
//! gathers their facts from the store.

use glagent_core::agent_config::CiAccessEntry;
use glagent_core::ci_access::{JobFacts, authorizing_entry};
use glagent_core::identity::{Impersonation, JobIdentityFacts, job_identity};
use glagent_store::{Agent, CiJob, Project, Store};

use crate::access::namespace_chain;
use crate::configs::AgentConfigs;

/// An agent a job may use, with the entry that allows it.
#[derive(Clone, Debug)]
pub struct AllowedAgent {
    pub agent: Agent,
    pub config_project: Project,
    pub entry: CiAccessEntry,
}

/// Every agent whose configuration lets this job in.
pub async fn allowed_agents(
    store: &Store,
    configs: &AgentConfigs,
    job: &CiJob,
) -> glagent_store::Result<Vec<AllowedAgent>> {
    let job_project = store.project(job.project_id).await?;
    let facts = JobFacts {
        project_path: &job_project.full_path,
        ref_protected: job.ref_protected,
        environment: job.environment_slug.as_deref(),
    };
    let mut allowed = Vec::new();
    for agent in store.all_agents().await? {
        let Ok(config_project) = store.project(agent.project_id).await else {
            continue;
        };
        let config = match configs.current(&config_project, &agent).await {
            Ok(config) => config,
            Err(error) => {
                tracing::debug!(agent_id = agent.id, %error, "skipping an agent whose configuration cannot be used");
                continue;
            }
        };
        if let Some(entry) = authorizing_entry(&config, &facts) {
            let entry = entry.clone();
            allowed.push(AllowedAgent {
                agent,
                config_project,
                entry,
            });
        }
    }
    Ok(allowed)
}

/// The identity a job acts as through an agent (`None`: the agent's own).
pub async fn identity(
    store: &Store,
    job: &CiJob,
    allowed: &AllowedAgent,
) -> glagent_store::Result<Option<Impersonation>> {
    let project = store.project(job.project_id).await?;
    let user = store.user(job.user_id).await?;
    let mut chain = namespace_chain(store, project.namespace_id).await?;
    chain.reverse();
    let group_ids: Vec<i64> = chain.iter().filter(|ns| ns.is_group()).map(|ns| ns.id).collect();
    let facts = JobIdentityFacts {
        agent_id: allowed.agent.id,
        config_project_id: allowed.config_project.id,
        project_id: project.id,
        group_ids: &group_ids,
        pipeline_id: job.pipeline_id,
        job_id: job.job_id,
        username: &user.username,
        environment_slug: job.environment_slug.as_deref(),
        environment_tier: job.environment_tier.as_deref(),
    };
    Ok(job_identity(allowed.entry.access_as.as_ref(), &facts))
}
