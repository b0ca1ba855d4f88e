//! The CI integration: jobs registered by an external CI system, and what a
//! job may use.

use glagent_core::agent_config::CiAccessAs;
use serde::{Deserialize, Serialize};

/// A CI job just registered (`POST /ci/jobs`, glagent's extension for CI
/// systems other than GitLab's): the only time its job token is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedCiJob {
    /// When the job token stops working (RFC 3339).
    pub expires_at: String,
    pub job_id: i64,
    pub pipeline_id: i64,
    pub project_id: i64,
    /// The job token (`CI_JOB_TOKEN`).
    pub token: String,
}

/// GitLab's `GET /job/allowed_agents`: the agents a CI job may use, and
/// the job's context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllowedAgents {
    pub allowed_agents: Vec<AllowedAgent>,
    /// Only for a job that deploys to an environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<JobEnvironment>,
    pub job: Id,
    pub pipeline: Id,
    pub project: JobProject,
    pub user: JobUser,
}

/// An entity named by its id alone, as GitLab nests them in
/// `/job/allowed_agents`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Id {
    pub id: i64,
}

/// One agent a job may use, with the `ci_access` entry that allows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllowedAgent {
    pub config_project: Id,
    pub configuration: AllowedAgentConfiguration,
    pub id: i64,
}

/// The parts of a `ci_access` entry a job sees; absent keys are defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AllowedAgentConfiguration {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::sorted_keys"
    )]
    pub access_as: Option<CiAccessAs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_namespace: Option<String>,
}

/// The environment a job deploys to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEnvironment {
    pub slug: String,
    /// production, staging, testing, development or other.
    pub tier: Option<String>,
}

/// The job's project and the groups above it, nearest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProject {
    pub groups: Vec<Id>,
    pub id: i64,
}

/// The user the job runs as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUser {
    pub id: i64,
    pub username: String,
}
