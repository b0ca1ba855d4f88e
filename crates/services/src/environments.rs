//! Environments and their link to a cluster: the one home of creating,
//! linking, stopping and deleting them, used by the REST API and the web
//! UI. The shapes are `glagent_core::environment`'s; an agent may be
//! linked when it is the project's own or shares itself with the project
//! through `user_access` (`glagent_core::sharing`).

use glagent_core::access::AccessLevel;
use glagent_core::environment::{self as rules, State as EnvironmentState, Tier};
use glagent_store::{Agent, Environment, NewEnvironment, Project, StoreError, User};

use crate::Services;

/// GitLab's words when an agent cannot be linked.
pub const AGENT_REFUSED: &str = "cluster agent doesn't exist or cannot be associated with this environment";

#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    /// The input breaks a rule; the message says which, as GitLab does.
    #[error("{0}")]
    Invalid(String),
    /// Refused in this state (deleting one that is not stopped).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rules::EnvironmentError> for EnvironmentError {
    fn from(error: rules::EnvironmentError) -> Self {
        EnvironmentError::Invalid(error.to_string())
    }
}

/// What links an environment to a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterLink {
    pub agent_id: Option<i64>,
    pub namespace: Option<String>,
    /// glagent's extension: more namespaces the dashboard watches.
    pub more_namespaces: Vec<String>,
    pub flux_resource_path: Option<String>,
}

/// How many namespaces an environment may watch in all.
pub const MAX_NAMESPACES: usize = 10;

/// A new environment as asked for; `tier` is guessed from the name when
/// absent.
#[derive(Clone, Debug, Default)]
pub struct EnvironmentInput {
    pub name: String,
    pub external_url: Option<String>,
    pub tier: Option<String>,
    pub description: Option<String>,
    pub auto_stop_setting: Option<String>,
    pub link: ClusterLink,
}

/// `always` or `with_action`, as GitLab takes them.
pub fn validate_auto_stop_setting(setting: &str) -> Result<(), EnvironmentError> {
    if matches!(setting, "always" | "with_action") {
        Ok(())
    } else {
        Err(EnvironmentError::Invalid(format!(
            "auto_stop_setting {setting:?} is not one of always, with_action"
        )))
    }
}

/// A CI job's `environment:kubernetes`: the agent as
/// `<config project path>:<agent name>`, a namespace, a Flux resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubernetesTarget {
    pub agent: String,
    pub namespace: Option<String>,
    pub flux_resource_path: Option<String>,
}

impl KubernetesTarget {
    /// The shapes: an agent named `path:name`, a namespace only with an
    /// agent (always here), a Flux resource only with a namespace.
    pub fn validate(&self) -> Result<(), EnvironmentError> {
        if self
            .agent
            .rsplit_once(':')
            .is_none_or(|(path, name)| path.is_empty() || name.is_empty())
        {
            return Err(EnvironmentError::Invalid(format!(
                "environment kubernetes agent {:?} must be <project path>:<agent name>",
                self.agent
            )));
        }
        if let Some(namespace) = &self.namespace {
            rules::validate_namespace(namespace)?;
        }
        if let Some(path) = &self.flux_resource_path {
            if self.namespace.is_none() {
                return Err(EnvironmentError::Invalid(
                    "environment kubernetes flux_resource_path needs a namespace".into(),
                ));
            }
            rules::validate_flux_resource_path(path)?;
        }
        Ok(())
    }
}

impl Services {
    /// The environment a CI job deploys to, created on its first
    /// deployment (with the job's tier, else guessed from the name). Its
    /// cluster link is filled from the job's `kubernetes` target while it
    /// has none, if the job's user may use that agent through its
    /// `user_access` and the agent may be linked to the project; otherwise
    /// the target is ignored (as GitLab ignores it), with a log line.
    pub async fn environment_for_job(
        &self,
        project: &Project,
        name: &str,
        tier: Option<&str>,
        user: &User,
        kubernetes: Option<&KubernetesTarget>,
    ) -> Result<Environment, EnvironmentError> {
        let existing = self
            .store
            .environments(project.id)
            .await?
            .into_iter()
            .find(|e| e.name == name);
        let mut environment = match existing {
            Some(environment) => environment,
            None => {
                let input = EnvironmentInput {
                    name: name.to_string(),
                    tier: tier.map(str::to_string),
                    ..EnvironmentInput::default()
                };
                self.create_environment(project, input).await?
            }
        };
        let Some(target) = kubernetes else {
            return Ok(environment);
        };
        target.validate()?;
        if environment.cluster_agent_id.is_some() {
            return Ok(environment);
        }
        let Some(agent) = self.job_may_use(user, target).await? else {
            tracing::info!(
                project_id = project.id,
                environment = %environment.name,
                agent = %target.agent,
                "the job's environment:kubernetes is ignored: its user may not use that agent"
            );
            return Ok(environment);
        };
        let link = ClusterLink {
            agent_id: Some(agent.id),
            namespace: target.namespace.clone(),
            more_namespaces: Vec::new(),
            flux_resource_path: target.flux_resource_path.clone(),
        };
        if let Err(refused) = self.check_cluster_link(project, &link, true).await {
            tracing::info!(
                project_id = project.id,
                environment = %environment.name,
                agent = %target.agent,
                reason = %refused,
                "the job's environment:kubernetes is ignored"
            );
            return Ok(environment);
        }
        environment.cluster_agent_id = link.agent_id;
        environment.kubernetes_namespace = link.namespace;
        environment.flux_resource_path = link.flux_resource_path;
        let saved = self.store.save_environment(&environment).await?;
        tracing::info!(
            project_id = project.id,
            environment_id = saved.id,
            agent_id = agent.id,
            "environment linked by its first deployment"
        );
        Ok(saved)
    }

    /// The agent a target names, if `user` may act through it (its
    /// `user_access` gives them an identity, as the proxy would).
    async fn job_may_use(&self, user: &User, target: &KubernetesTarget) -> Result<Option<Agent>, StoreError> {
        let Some((path, name)) = target.agent.rsplit_once(':') else {
            return Ok(None);
        };
        let config_project = match self.store.project_by_full_path(path).await {
            Ok(found) => found,
            Err(StoreError::NotFound) => return Ok(None),
            Err(other) => return Err(other),
        };
        let agent = match self.store.agent_by_name(config_project.id, name).await {
            Ok(found) => found,
            Err(StoreError::NotFound) => return Ok(None),
            Err(other) => return Err(other),
        };
        let Ok(config) = self.configs.current(&config_project, &agent).await else {
            return Ok(None);
        };
        let Some(access) = &config.user_access else {
            return Ok(None);
        };
        let roles = crate::access::user_access_roles(&self.store, user, access).await?;
        let facts = glagent_core::identity::UserFacts {
            agent_id: agent.id,
            config_project_id: config_project.id,
            username: &user.username,
            project_roles: &roles.projects,
            group_roles: &roles.groups,
            access_type: "ci_job",
        };
        Ok(glagent_core::identity::user_identity(Some(access), &facts)
            .is_ok()
            .then_some(agent))
    }

    /// Creates an environment after every rule: the name, the URL, the
    /// tier, the link's shapes, and the agent's sharing.
    pub async fn create_environment(
        &self,
        project: &Project,
        input: EnvironmentInput,
    ) -> Result<Environment, EnvironmentError> {
        if input.name.is_empty() {
            return Err(EnvironmentError::Invalid("name is missing".into()));
        }
        rules::validate_name(&input.name)?;
        if let Some(url) = &input.external_url {
            rules::validate_external_url(url)?;
        }
        let tier = match &input.tier {
            Some(tier) => Tier::parse(tier)?,
            None => Tier::guess(&input.name),
        };
        let auto_stop_setting = input.auto_stop_setting.unwrap_or_else(|| "always".into());
        validate_auto_stop_setting(&auto_stop_setting)?;
        self.check_cluster_link(project, &input.link, true).await?;
        let environment = self
            .store
            .create_environment(&NewEnvironment {
                project_id: project.id,
                slug: rules::slug(&input.name),
                name: input.name,
                external_url: input.external_url,
                description: input.description,
                tier,
                auto_stop_setting,
                cluster_agent_id: input.link.agent_id,
                kubernetes_namespace: input.link.namespace,
                more_namespaces: input.link.more_namespaces,
                flux_resource_path: input.link.flux_resource_path,
            })
            .await
            .map_err(|e| match e {
                StoreError::Conflict(message) => EnvironmentError::Invalid(message),
                other => other.into(),
            })?;
        tracing::info!(
            project_id = project.id,
            environment_id = environment.id,
            "environment created"
        );
        Ok(environment)
    }

    /// The namespace needs an agent, the Flux object a namespace; when
    /// `check_agent`, the agent must exist and be the project's own or
    /// share itself with the project through `user_access`.
    pub async fn check_cluster_link(
        &self,
        project: &Project,
        link: &ClusterLink,
        check_agent: bool,
    ) -> Result<(), EnvironmentError> {
        if let Some(namespace) = &link.namespace {
            if link.agent_id.is_none() {
                return Err(EnvironmentError::Invalid(
                    "kubernetes_namespace needs a cluster_agent_id".into(),
                ));
            }
            rules::validate_namespace(namespace)?;
        }
        if !link.more_namespaces.is_empty() {
            let Some(first) = &link.namespace else {
                return Err(EnvironmentError::Invalid(
                    "kubernetes_namespaces needs a kubernetes_namespace first".into(),
                ));
            };
            if link.more_namespaces.len() + 1 > MAX_NAMESPACES {
                return Err(EnvironmentError::Invalid(format!(
                    "kubernetes_namespaces holds at most {MAX_NAMESPACES} namespaces"
                )));
            }
            let mut seen = vec![first.as_str()];
            for namespace in &link.more_namespaces {
                rules::validate_namespace(namespace)?;
                if seen.contains(&namespace.as_str()) {
                    return Err(EnvironmentError::Invalid(format!(
                        "kubernetes_namespaces names {namespace:?} twice"
                    )));
                }
                seen.push(namespace);
            }
        }
        if let Some(path) = &link.flux_resource_path {
            if link.namespace.is_none() {
                return Err(EnvironmentError::Invalid(
                    "flux_resource_path needs a kubernetes_namespace".into(),
                ));
            }
            rules::validate_flux_resource_path(path)?;
        }
        let Some(agent_id) = link.agent_id.filter(|_| check_agent) else {
            return Ok(());
        };
        let agent = match self.store.agent_by_id(agent_id).await {
            Ok(agent) => agent,
            Err(StoreError::NotFound) => return Err(EnvironmentError::Invalid(AGENT_REFUSED.into())),
            Err(other) => return Err(other.into()),
        };
        if agent.project_id == project.id {
            return Ok(());
        }
        let config_project = self.store.project(agent.project_id).await?;
        let shared = match self.configs.current(&config_project, &agent).await {
            Ok(config) => glagent_core::sharing::sharing(&config, &project.full_path).user_access,
            Err(_) => false,
        };
        if shared {
            Ok(())
        } else {
            Err(EnvironmentError::Invalid(AGENT_REFUSED.into()))
        }
    }

    /// The environment's agent and the agent's project, when `user` may
    /// read the link: a Developer of the agent's project, as GitLab's
    /// `read_cluster_agent`.
    pub async fn linked_agent(
        &self,
        user: &User,
        environment: &Environment,
    ) -> Result<Option<(Agent, Project)>, StoreError> {
        let Some(agent_id) = environment.cluster_agent_id else {
            return Ok(None);
        };
        let agent = match self.store.agent_by_id(agent_id).await {
            Ok(agent) => agent,
            Err(StoreError::NotFound) => return Ok(None),
            Err(other) => return Err(other),
        };
        let config_project = self.store.project(agent.project_id).await?;
        let readable = self
            .project_access(user, &config_project)
            .await?
            .is_some_and(|level| level >= AccessLevel::Developer);
        Ok(readable.then_some((agent, config_project)))
    }

    /// Saves an environment's changed fields (never its name or slug)
    /// after the link's rules; the agent's sharing is asked only when
    /// `agent_given` (as GitLab: a request that names the agent).
    pub async fn save_environment(
        &self,
        project: &Project,
        environment: &Environment,
        agent_given: bool,
    ) -> Result<Environment, EnvironmentError> {
        if let Some(url) = &environment.external_url {
            rules::validate_external_url(url)?;
        }
        validate_auto_stop_setting(&environment.auto_stop_setting)?;
        let link = ClusterLink {
            agent_id: environment.cluster_agent_id,
            namespace: environment.kubernetes_namespace.clone(),
            more_namespaces: environment.more_namespaces.clone(),
            flux_resource_path: environment.flux_resource_path.clone(),
        };
        self.check_cluster_link(project, &link, agent_given).await?;
        let saved = self.store.save_environment(environment).await?;
        tracing::info!(project_id = project.id, environment_id = saved.id, "environment saved");
        Ok(saved)
    }

    /// Stops an environment (kas runs no stop jobs).
    pub async fn stop_environment(
        &self,
        project: &Project,
        mut environment: Environment,
    ) -> Result<Environment, StoreError> {
        environment.state = EnvironmentState::Stopped;
        let saved = self.store.save_environment(&environment).await?;
        tracing::info!(
            project_id = project.id,
            environment_id = saved.id,
            "environment stopped"
        );
        Ok(saved)
    }

    /// Deletes a stopped environment, as GitLab allows.
    pub async fn delete_environment(
        &self,
        project: &Project,
        environment: &Environment,
    ) -> Result<(), EnvironmentError> {
        if environment.state != EnvironmentState::Stopped {
            return Err(EnvironmentError::Refused(
                "stop the environment before deleting it (POST .../environments/:id/stop)".into(),
            ));
        }
        self.store.delete_environment(project.id, environment.id).await?;
        tracing::info!(
            project_id = project.id,
            environment_id = environment.id,
            "environment deleted"
        );
        Ok(())
    }
}
