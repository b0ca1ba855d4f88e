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
//!   lives in the pushed project or whose Flux objects point at it.

use std::sync::Arc;
use std::time::Duration;

use glagent_services::Services;
use glagent_store::Store;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::Connections;
use crate::registry::{AgentRegistry, Wake};

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
