//! CI/CD access: which agents a CI job may use, and as whom.

use std::collections::BTreeMap;

use glagent_core::agent_config::{CiAccessAs, CiAccessEntry};
use glagent_core::ci_access::{JobFacts, authorizing_entry};
use glagent_proto::Impersonation;
use glagent_store::{Agent, CiJob, Project};

use crate::agent_configs;
use crate::state::AppState;

/// An agent a job may use, with the entry that allows it.
pub struct AllowedAgent {
    pub agent: Agent,
    pub config_project: Project,
    pub entry: CiAccessEntry,
}

/// Every agent whose configuration lets this job in.
pub async fn allowed_agents(state: &AppState, job: &CiJob) -> glagent_store::Result<Vec<AllowedAgent>> {
    let job_project = state.store.project(job.project_id).await?;
    let facts = JobFacts {
        project_path: &job_project.full_path,
        ref_protected: job.ref_protected != 0,
        environment: job.environment_slug.as_deref(),
    };
    let mut allowed = Vec::new();
    for agent in state.store.all_agents().await? {
        let Ok(config_project) = state.store.project(agent.project_id).await else {
            continue;
        };
        let config = match agent_configs::load(state, &config_project, &agent).await {
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
pub async fn job_identity(
    state: &AppState,
    job: &CiJob,
    allowed: &AllowedAgent,
) -> glagent_store::Result<Option<Impersonation>> {
    match &allowed.entry.access_as {
        None | Some(CiAccessAs::Agent(_)) => Ok(None),
        Some(CiAccessAs::Impersonate(identity)) => Ok(Some(Impersonation {
            username: identity.username.as_str().to_string(),
            uid: identity.uid.clone(),
            groups: identity.groups.clone(),
            extra: identity
                .extra
                .iter()
                .map(|e| (e.key.as_str().to_string(), e.val.clone()))
                .collect(),
        })),
        Some(CiAccessAs::CiJob(_)) => {
            let project = state.store.project(job.project_id).await?;
            let user = state.store.user(job.user_id).await?;
            let mut chain = state.namespace_chain(project.namespace_id).await?;
            chain.reverse();
            let tier = job.environment_tier.as_deref();
            let mut groups = vec!["gitlab:ci_job".to_string()];
            for group in chain.iter().filter(|ns| ns.is_group()) {
                groups.push(format!("gitlab:group:{}", group.id));
                if let Some(tier) = tier {
                    groups.push(format!("gitlab:group_env_tier:{}:{tier}", group.id));
                }
            }
            groups.push(format!("gitlab:project:{}", project.id));
            if let Some(slug) = &job.environment_slug {
                groups.push(format!("gitlab:project_env:{}:{slug}", project.id));
                if let Some(tier) = tier {
                    groups.push(format!("gitlab:project_env_tier:{}:{tier}", project.id));
                }
            }
            let mut extra = BTreeMap::from([
                ("agent.gitlab.com/id".to_string(), vec![allowed.agent.id.to_string()]),
                (
                    "agent.gitlab.com/config_project_id".to_string(),
                    vec![allowed.config_project.id.to_string()],
                ),
                ("agent.gitlab.com/project_id".to_string(), vec![project.id.to_string()]),
                (
                    "agent.gitlab.com/ci_pipeline_id".to_string(),
                    vec![job.pipeline_id.to_string()],
                ),
                ("agent.gitlab.com/ci_job_id".to_string(), vec![job.job_id.to_string()]),
                ("agent.gitlab.com/username".to_string(), vec![user.username.clone()]),
            ]);
            if let Some(slug) = &job.environment_slug {
                extra.insert("agent.gitlab.com/environment_slug".to_string(), vec![slug.clone()]);
            }
            if let Some(tier) = tier {
                extra.insert("agent.gitlab.com/environment_tier".to_string(), vec![tier.to_string()]);
            }
            Ok(Some(Impersonation {
                username: format!("gitlab:ci_job:{}", job.job_id),
                uid: None,
                groups,
                extra,
            }))
        }
    }
}
