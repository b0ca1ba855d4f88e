//! The one answer to "what is this agent's configuration": the file
//! `.gitlab/agents/<name>/config.yaml` at the HEAD of its project's default
//! branch, parsed strictly. Agent connections send it, the REST API shows
//! it, and the Kubernetes API proxy and CI access decide with it (through a
//! cache that a push to the project empties).

use std::sync::Arc;
use std::time::Duration;

use glagent_core::agent_config::{AgentConfig, ConfigError, config_file_path, parse_config};
use glagent_git::{GitError, Repos};
use glagent_store::{Agent, Project};

use crate::cache::TtlCache;

/// The configuration file at the default branch's HEAD.
#[derive(Debug)]
pub struct ConfigAtHead {
    /// `.gitlab/agents/<name>/config.yaml`.
    pub path: String,
    pub branch: String,
    /// `None` while the branch does not exist.
    pub commit_id: Option<String>,
    pub file_exists: bool,
    /// A missing file is the empty (default) configuration.
    pub parsed: Result<AgentConfig, ConfigError>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the agent configuration is invalid: {0}")]
    Invalid(ConfigError),
    #[error(transparent)]
    Git(#[from] GitError),
}

/// The configuration files of a project's agents at one commit, by agent.
type FilesAtCommit = Arc<std::collections::HashMap<String, Vec<u8>>>;

pub struct AgentConfigs {
    repos: Arc<Repos>,
    /// The HEAD reads in flight, by project: callers that come while one
    /// runs share its answer (a push that wakes a thousand connections of
    /// one project resolves HEAD once), later callers read again; a push
    /// forgets the read in flight, so no one gets a HEAD from before it.
    heads: parking_lot::Mutex<std::collections::HashMap<i64, Arc<tokio::sync::OnceCell<Option<String>>>>>,
    /// Every agent's file at a commit, read in one pass (commits never
    /// change, so nothing invalidates these).
    files: TtlCache<(i64, String), FilesAtCommit>,
    /// One reader per project at a time, so that concurrent sessions wait
    /// for the first one's read instead of repeating it.
    readers: parking_lot::Mutex<std::collections::HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Parsed configurations by agent id, with their project's id. Emptied
    /// for a project when it is pushed to, and after a minute, for pushes
    /// that reached another kas replica.
    parsed: TtlCache<i64, (i64, Arc<AgentConfig>)>,
}

impl AgentConfigs {
    const TTL: Duration = Duration::from_secs(60);

    pub fn new(repos: Arc<Repos>) -> AgentConfigs {
        AgentConfigs {
            repos,
            heads: Default::default(),
            files: TtlCache::new(Self::TTL),
            readers: Default::default(),
            parsed: TtlCache::new(Self::TTL),
        }
    }

    /// Reads and parses the file at HEAD now (no cache).
    pub async fn at_head(&self, project: &Project, agent: &Agent) -> Result<ConfigAtHead, GitError> {
        let commit_id = self.head(project).await?;
        self.at_commit(project, agent, commit_id).await
    }

    /// The same, only when HEAD is no longer `known` (the commit of the
    /// configuration a connection sent last, `""` for a branch without
    /// commits): one read of the branch's ref when nothing moved.
    pub async fn at_head_unless(
        &self,
        project: &Project,
        agent: &Agent,
        known: Option<&str>,
    ) -> Result<Option<ConfigAtHead>, GitError> {
        let commit_id = self.head(project).await?;
        if known == Some(commit_id.as_deref().unwrap_or_default()) {
            return Ok(None);
        }
        self.at_commit(project, agent, commit_id).await.map(Some)
    }

    fn reader(&self, project_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        self.readers.lock().entry(project_id).or_default().clone()
    }

    /// The commit at the tip of the project's default branch (`None` while
    /// the branch does not exist): what `known` is compared with.
    pub async fn head(&self, project: &Project) -> Result<Option<String>, GitError> {
        let read = self.heads.lock().entry(project.id).or_default().clone();
        let head = read
            .get_or_try_init(|| self.repos.branch_tip(project.id, &project.default_branch))
            .await
            .cloned();
        let mut heads = self.heads.lock();
        if heads
            .get(&project.id)
            .is_some_and(|current| Arc::ptr_eq(current, &read))
        {
            heads.remove(&project.id);
        }
        head
    }

    /// Every agent's configuration file of the project at `commit`.
    async fn files_at(&self, project: &Project, commit: &str) -> Result<FilesAtCommit, GitError> {
        let key = (project.id, commit.to_string());
        if let Some(files) = self.files.get(&key) {
            return Ok(files);
        }
        let reader = self.reader(project.id);
        let _turn = reader.lock().await;
        if let Some(files) = self.files.get(&key) {
            return Ok(files);
        }
        let files = Arc::new(
            self.repos
                .files_below(project.id, commit, ".gitlab/agents", "config.yaml")
                .await?,
        );
        self.files.insert(key, files.clone());
        Ok(files)
    }

    async fn at_commit(
        &self,
        project: &Project,
        agent: &Agent,
        commit_id: Option<String>,
    ) -> Result<ConfigAtHead, GitError> {
        let path = config_file_path(&agent.name);
        let file = match &commit_id {
            Some(commit) => self.files_at(project, commit).await?.get(&agent.name).cloned(),
            None => None,
        };
        let file_exists = file.is_some();
        let content = file.unwrap_or_default();
        let parsed = parse_config(&path, &content);
        Ok(ConfigAtHead {
            path,
            branch: project.default_branch.clone(),
            commit_id,
            file_exists,
            parsed,
        })
    }

    /// The valid configuration in force, cached.
    pub async fn current(&self, project: &Project, agent: &Agent) -> Result<Arc<AgentConfig>, LoadError> {
        if let Some((_, config)) = self.parsed.get(&agent.id) {
            return Ok(config);
        }
        // A push while the file is read must not leave the old file cached.
        let generation = self.parsed.generation();
        let config = Arc::new(self.at_head(project, agent).await?.parsed.map_err(LoadError::Invalid)?);
        self.parsed
            .insert_unless_changed(agent.id, (project.id, config.clone()), generation);
        Ok(config)
    }

    /// Forgets every agent of a project (its repository changed).
    pub(crate) fn invalidate_project(&self, project_id: i64) {
        self.heads.lock().remove(&project_id);
        self.parsed.retain(|_, (project, _)| *project != project_id);
    }
}
