//! Registering and deleting agents and creating and revoking their
//! tokens: the one home of these changes, used by the REST API and the web
//! UI alike (checks, records, the access notification, the log line).

use glagent_core::names::validate_agent_name;
use glagent_core::secret::{self, Secret};
use std::time::Duration;

use glagent_store::{Agent, AgentEventKind, AgentToken, NewAgentToken, Project, StoreError, Timestamp, User};

use crate::Services;
use crate::events::AccessChange;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The input breaks a rule; the message says which, as GitLab does.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token as created: shown once, with the install command that uses it.
pub struct CreatedToken {
    pub record: AgentToken,
    pub token: Secret,
    pub install_command: String,
}

/// The rules for an agent token's name and description.
pub fn validate_token(name: &str, description: Option<&str>) -> Result<(), AgentError> {
    if name.trim().is_empty() {
        return Err(AgentError::Invalid("name is missing".into()));
    }
    if name.chars().count() > 255 {
        return Err(AgentError::Invalid(
            "name is too long (maximum is 255 characters)".into(),
        ));
    }
    if description.is_some_and(|d| d.chars().count() > 1024) {
        return Err(AgentError::Invalid(
            "description is too long (maximum is 1024 characters)".into(),
        ));
    }
    Ok(())
}

impl Services {
    /// Registers an agent in `project`.
    pub async fn register_agent(&self, project: &Project, name: &str, by: &User) -> Result<Agent, AgentError> {
        validate_agent_name(name).map_err(|e| AgentError::Invalid(e.to_string()))?;
        let agent = self
            .store
            .create_agent(project.id, name, by.id)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(message) => AgentError::Invalid(message),
                other => other.into(),
            })?;
        tracing::info!(agent_id = agent.id, project_id = project.id, agent_name = %agent.name, "agent registered");
        self.record_activity(
            agent.id,
            AgentEventKind::Registered,
            &format!("Registered by @{}", by.username),
        )
        .await;
        Ok(agent)
    }

    /// Deletes an agent; its connections close at once.
    pub async fn delete_agent(&self, project: &Project, agent_id: i64) -> Result<(), StoreError> {
        self.store.delete_agent(project.id, agent_id).await?;
        self.events.access_changed(AccessChange::AgentDeleted { agent_id });
        tracing::info!(agent_id, project_id = project.id, "agent deleted");
        Ok(())
    }

    /// Creates an agent token.
    pub async fn create_agent_token(
        &self,
        agent: &Agent,
        name: &str,
        description: Option<String>,
        by: &User,
    ) -> Result<CreatedToken, AgentError> {
        validate_token(name, description.as_deref())?;
        let token = secret::new_agent_token();
        let record = self
            .store
            .create_agent_token(&NewAgentToken {
                agent_id: agent.id,
                name: name.to_string(),
                description,
                token_digest: token.digest(),
                created_by: by.id,
            })
            .await?;
        tracing::info!(agent_id = agent.id, token_id = record.id, "agent token created");
        self.record_activity(
            agent.id,
            AgentEventKind::TokenCreated,
            &format!("Token {} created by @{}", record.name, by.username),
        )
        .await;
        let install_command = crate::install::command(&self.urls, &agent.name, token.expose());
        Ok(CreatedToken {
            record,
            token,
            install_command,
        })
    }

    /// What to call once the answer carrying a created token was sent to
    /// its end (`glagent_telemetry::body::WhenSent`): it records, without
    /// waiting, that the token reached whoever asked for it. Until then,
    /// and if kas stops before, the token is undelivered: its first use
    /// proves it arrived, and [`Services::forget_undelivered_tokens`]
    /// deletes it if nobody uses it within the grace.
    pub fn on_token_sent(&self, token_id: i64) -> impl FnOnce() + Send + Unpin + 'static {
        let store = self.store.clone();
        move || {
            tokio::spawn(async move {
                if let Err(error) = store.agent_token_delivered(token_id).await {
                    // Its first use will record it.
                    tracing::warn!(token_id, %error, "could not record that an agent token was delivered");
                }
            });
        }
    }

    /// Deletes the tokens kas stored but never finished sending (it
    /// stopped while answering) that nobody used within the grace: no
    /// one holds them, yet they count towards the agent's two. At start
    /// and then every quarter of the grace (at most every 5 minutes).
    pub async fn forget_undelivered_tokens(&self) {
        let grace = self.settings.undelivered_token_grace;
        let every = (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(300));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let cutoff = Timestamp::before_now(grace);
            let forgotten = match self.store.forget_undelivered_agent_tokens(cutoff).await {
                Ok(forgotten) => forgotten,
                Err(error) => {
                    tracing::warn!(%error, "could not look for undelivered agent tokens; trying again");
                    continue;
                }
            };
            for token in forgotten {
                tracing::warn!(
                    agent_id = token.agent_id,
                    token_id = token.id,
                    "agent token deleted: kas stopped before it finished sending it, and nobody used it"
                );
                self.record_activity(
                    token.agent_id,
                    AgentEventKind::TokenRevoked,
                    &format!(
                        "Token {} removed: kas stopped before it finished sending it, and it was never used",
                        token.name
                    ),
                )
                .await;
            }
        }
    }

    /// Revokes an agent token; connections using it close at once.
    pub async fn revoke_agent_token(&self, agent: &Agent, token_id: i64, by: &User) -> Result<(), StoreError> {
        let token = self.store.active_agent_token(agent.id, token_id).await?;
        self.store.revoke_agent_token(agent.id, token_id).await?;
        self.events.access_changed(AccessChange::AgentTokenRevoked {
            agent_id: agent.id,
            token_id,
        });
        tracing::info!(agent_id = agent.id, token_id, "agent token revoked");
        self.record_activity(
            agent.id,
            AgentEventKind::TokenRevoked,
            &format!("Token {} revoked by @{}", token.name, by.username),
        )
        .await;
        Ok(())
    }
}

impl Services {
    /// Adds to the agent's activity list. A failure to record is logged
    /// and never fails what happened.
    pub async fn record_activity(&self, agent_id: i64, kind: AgentEventKind, detail: &str) {
        if let Err(error) = self.store.record_agent_event(agent_id, kind, detail).await {
            tracing::warn!(agent_id, kind = kind.as_str(), %error, "could not record the agent's activity");
        }
    }

    /// As [`Self::record_activity`], unless the newest event of that kind
    /// already says the same.
    pub async fn record_activity_once(&self, agent_id: i64, kind: AgentEventKind, detail: &str) {
        if let Err(error) = self.store.record_agent_event_once(agent_id, kind, detail).await {
            tracing::warn!(agent_id, kind = kind.as_str(), %error, "could not record the agent's activity");
        }
    }
}
