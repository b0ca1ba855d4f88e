//! The replica's upkeep of the agent connections it holds, at a cost that
//! does not grow with their number while they idle:
//!
//! - revocations: one query a second reads the tokens revoked and agents
//!   deleted since the last one seen, on any replica, and closes their
//!   connections (this replica's own changes close them at once through
//!   `Services::events`); every [`SAFETY_CHECK`], the tokens of every
//!   connection are checked in batches, for anything the cursor missed;
//! - the use of the tokens (an agent's last contact): written for every
//!   connection in batches every [`TOUCH_EVERY`];
//! - pushes: each wakes only the connections whose agent's configuration
//!   lives in the pushed project or whose Flux objects point at it;
//! - the safety net for commits no push announced: every
//!   `Settings::config_poll_period`, the projects of all connections are
//!   read in batches and each project's branch tip once, and only the
//!   connections whose last configuration came from another commit are
//!   woken.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use glagent_services::Services;
use glagent_store::Store;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::Connections;
use crate::registry::{AgentConnection, AgentRegistry, Wake};

/// How often other replicas' revocations are read.
pub const REVOCATIONS_EVERY: Duration = Duration::from_secs(1);
/// How often every held token is checked, whatever the cursor said.
pub const SAFETY_CHECK: Duration = Duration::from_secs(30);
/// How often the held tokens' last use is written.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// How long revocations are kept for replicas to read.
const KEEP_REVOCATIONS: Duration = Duration::from_secs(600);

/// Runs the upkeep until `shutdown`.
pub async fn run(services: Services, connections: Connections, shutdown: CancellationToken) {
    let registry = connections.registry.clone();
    tokio::select! {
        _ = follow_revocations(&services.store, &registry) => {}
        _ = touch_tokens(&services.store, &registry) => {}
        _ = dispatch_pushes(&services, &registry) => {}
        _ = poll_configurations(&services, &registry) => {}
        _ = shutdown.cancelled() => {}
    }
}

async fn follow_revocations(store: &Store, registry: &Arc<AgentRegistry>) {
    let mut cursor = loop {
        match store.latest_revocation().await {
            Ok(latest) => break latest,
            Err(error) => {
                tracing::warn!(%error, "reading the revocations failed; retrying");
                tokio::time::sleep(REVOCATIONS_EVERY).await;
            }
        }
    };
    let mut tick = tokio::time::interval(REVOCATIONS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut safety = tokio::time::Instant::now();
    let mut pruned = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        match store.revocations_after(cursor).await {
            Ok(revocations) => {
                for revocation in revocations {
                    cursor = revocation.id;
                    let closed = revocation.token_id.map(|t| registry.close_token(t)).unwrap_or(0)
                        + revocation.agent_id.map(|a| registry.close_agent(a)).unwrap_or(0);
                    if closed > 0 {
                        tracing::info!(
                            token_id = revocation.token_id,
                            agent_id = revocation.agent_id,
                            closed_connections = closed,
                            "closing agent connections: revoked or deleted on another replica"
                        );
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "reading the revocations failed"),
        }
        if safety.elapsed() >= SAFETY_CHECK {
            safety = tokio::time::Instant::now();
            let held = registry.token_ids();
            match store.active_agent_token_ids(&held).await {
                Ok(active) => {
                    for token_id in held.iter().filter(|t| active.binary_search(t).is_err()) {
                        let closed = registry.close_token(*token_id);
                        tracing::info!(
                            token_id,
                            closed_connections = closed,
                            "closing agent connections: the token is no longer active"
                        );
                    }
                }
                Err(error) => tracing::warn!(%error, "checking the held tokens failed"),
            }
        }
        if pruned.elapsed() >= Duration::from_secs(60) {
            pruned = tokio::time::Instant::now();
            if let Err(error) = store.forget_revocations_older_than(KEEP_REVOCATIONS).await {
                tracing::warn!(%error, "forgetting old revocations failed");
            }
        }
    }
}

async fn touch_tokens(store: &Store, registry: &Arc<AgentRegistry>) {
    let mut tick = tokio::time::interval(TOUCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let held = registry.token_ids();
        if held.is_empty() {
            continue;
        }
        if let Err(error) = store.touch_agent_tokens(&held).await {
            tracing::warn!(%error, tokens = held.len(), "recording the agent tokens' use failed");
        }
    }
}

async fn dispatch_pushes(services: &Services, registry: &Arc<AgentRegistry>) {
    let mut pushes = services.events.pushes();
    loop {
        match pushes.recv().await {
            Ok(push) => {
                // The pushed project's path, for the Flux objects that name it.
                let path = match services.store.project(push.project_id).await {
                    Ok(project) => Some(project.full_path.to_ascii_lowercase()),
                    Err(_) => None,
                };
                for connection in registry.all() {
                    let concerned = connection.project_id == push.project_id
                        || path
                            .as_ref()
                            .is_some_and(|p| connection.flux_projects.lock().contains(p));
                    if concerned {
                        let _ = connection.wake.send(Wake::Pushed(push.clone()));
                    }
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "pushes came faster than they were dispatched; every connection looks again"
                );
                for connection in registry.all() {
                    let _ = connection.wake.send(Wake::Refresh);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn poll_configurations(services: &Services, registry: &Arc<AgentRegistry>) {
    let period = services.settings.config_poll_period;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let stale = behind_their_branch(services, registry).await;
        if !stale.is_empty() {
            tracing::info!(
                connections = stale.len(),
                "configuration commits no push announced; sending them"
            );
        }
        for connection in stale {
            let _ = connection.wake.send(Wake::Refresh);
        }
    }
}

/// The connections (not replaced) whose last configuration came from
/// another commit than their project's branch tip now: one batched read of
/// the projects and one ref read per project, however many connections.
async fn behind_their_branch(services: &Services, registry: &AgentRegistry) -> Vec<Arc<AgentConnection>> {
    let held: Vec<Arc<AgentConnection>> = registry
        .all()
        .into_iter()
        .filter(|c| !c.replaced.is_cancelled())
        .collect();
    let mut ids: Vec<i64> = held.iter().map(|c| c.project_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let projects = match services.store.projects_by_ids(&ids).await {
        Ok(projects) => projects,
        Err(error) => {
            tracing::warn!(%error, projects = ids.len(), "reading the agents' projects for the configuration poll failed");
            return Vec::new();
        }
    };
    let mut heads = HashMap::with_capacity(projects.len());
    for project in &projects {
        match services.configs.head(project).await {
            Ok(head) => {
                heads.insert(project.id, head.unwrap_or_default());
            }
            Err(error) => {
                tracing::warn!(project_id = project.id, %error, "reading the branch tip for the configuration poll failed")
            }
        }
    }
    held.into_iter()
        .filter(|c| {
            heads
                .get(&c.project_id)
                .is_some_and(|head| c.sent_commit.lock().as_deref() != Some(head.as_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use glagent_git::{Author, FileChange, FileCommit, Repos};
    use glagent_services::Settings;
    use glagent_store::{NewProject, Store};

    use super::*;
    use crate::registry::testing;

    async fn services(dir: &std::path::Path, settings: Settings) -> Services {
        let url = format!("sqlite://{}?mode=rwc", dir.join("kas.sqlite3").display());
        let store = Store::connect(&url).await.unwrap();
        let repos = Repos::new(dir.join("repositories")).unwrap();
        let sealer = glagent_services::sealed::Sealer::open_dir(&dir.join("secrets")).unwrap();
        let urls = glagent_services::urls::Urls::new(url::Url::parse("https://kas.test").unwrap(), None);
        Services::new(store, repos, urls, sealer, settings)
    }

    /// A project and its repository, and a commit written to it straight
    /// through git (no push event, as a change that bypassed kas).
    async fn project_with_commit(services: &Services, path: &str) -> (i64, String) {
        let owner = glagent_services::users::create_user(&services.store, path, path, "", true)
            .await
            .unwrap();
        let namespace = services.store.user_namespace(owner.id).await.unwrap();
        let project = services
            .store
            .create_project(&NewProject {
                namespace_id: namespace.id,
                name: path.into(),
                path: path.into(),
                full_path: format!("{}/{path}", namespace.full_path),
                description: String::new(),
                default_branch: "main".into(),
                creator_id: owner.id,
            })
            .await
            .unwrap();
        services.repos.create(project.id, "main").await.unwrap();
        let update = services
            .repos
            .commit_file(
                project.id,
                FileCommit {
                    branch: "main",
                    start_branch: None,
                    path: ".gitlab/agents/edge/config.yaml",
                    change: FileChange::Create(b"observability: {logging: {level: debug}}\n".to_vec()),
                    message: &format!("configuration of {path}"),
                    author: &Author {
                        name: "Root".into(),
                        email: "root@test".into(),
                    },
                },
            )
            .await
            .unwrap();
        (project.id, update.after)
    }

    #[tokio::test]
    async fn the_configuration_poll_wakes_only_connections_behind_their_projects_branch() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            config_poll_period: Duration::from_millis(200),
            ..Default::default()
        };
        let services = services(dir.path(), settings).await;
        let (first, first_head) = project_with_commit(&services, "first").await;
        let (second, second_head) = project_with_commit(&services, "second").await;
        let registry = Arc::new(AgentRegistry::default());
        let (current, mut current_wakes, _s1) = testing::connection(&registry, 1, first, 1).await;
        *current.sent_commit.lock() = Some(first_head.clone());
        let (behind, mut behind_wakes, _s2) = testing::connection(&registry, 2, first, 2).await;
        *behind.sent_commit.lock() = Some("0".repeat(40));
        let (never_sent, mut never_sent_wakes, _s3) = testing::connection(&registry, 3, second, 3).await;
        let (replaced, mut replaced_wakes, _s4) = testing::connection(&registry, 4, second, 4).await;
        replaced.replaced.cancel();
        let (_gone, mut gone_wakes, _s5) = testing::connection(&registry, 5, 999, 5).await;

        let mut stale: Vec<i64> = behind_their_branch(&services, &registry)
            .await
            .iter()
            .map(|c| c.agent_id)
            .collect();
        stale.sort_unstable();
        assert_eq!(
            stale,
            [behind.agent_id, never_sent.agent_id],
            "behind its branch or never sent; not current, replaced or of a deleted project"
        );
        assert_ne!(first_head, second_head);

        let poll = tokio::spawn({
            let (services, registry) = (services.clone(), registry.clone());
            async move { poll_configurations(&services, &registry).await }
        });
        for wakes in [&mut behind_wakes, &mut never_sent_wakes] {
            let woken = tokio::time::timeout(Duration::from_secs(5), wakes.recv()).await;
            assert!(matches!(woken, Ok(Some(Wake::Refresh))), "a stale connection is woken");
        }
        *behind.sent_commit.lock() = Some(first_head);
        *never_sent.sent_commit.lock() = Some(second_head);
        // Two more polls: nobody is behind any longer.
        tokio::time::sleep(Duration::from_millis(500)).await;
        poll.abort();
        for wakes in [
            &mut current_wakes,
            &mut replaced_wakes,
            &mut gone_wakes,
            &mut behind_wakes,
        ] {
            assert!(wakes.try_recv().is_err(), "woken without being behind");
        }
    }
}
