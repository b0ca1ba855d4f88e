//! The life of one agent connection on kas, however it was made (the agent
//! dialed a WebSocket or the raw tunnel, or kas dialed a receptive agent):
//! HTTP/2 (kas as client) over the connection's bytes, the agent's
//! metadata, configuration pushed on every change of its file (woken by
//! the replica's upkeep, only for pushes that concern it), and closed when
//! its token is revoked or its agent deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use glagent_telemetry::metrics::kas;

use axum::body::Body;
use bytes::Bytes;
use glagent_proto::{
    AgentInfo, CONFIGURATION_PATH, ConfigurationUpdate, FLUX_PROJECTS_PATH, FLUX_RECONCILE_PATH, FluxProjects,
    FluxReconcile, FluxReconciled, INFO_PATH,
};
use glagent_services::Services;
use glagent_store::{Agent, AgentEventKind, AgentToken, Project};
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::Connections;
use crate::registry::{AgentConnection, Wake};

/// How often the agent's metadata is refreshed (the agent "re-registers").
const INFO_REFRESH: Duration = Duration::from_secs(300);
/// How long one request to the agent may take.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// kas pings an agent whose connection has been silent this long (as
/// upstream kas's server keepalive): below the 60 s idle timeout of most
/// load balancers, and rare enough that 10,000 idle agents and kas
/// exchange about 380 pings a second (with agentk's), not 1,000.
const KEEPALIVE: Duration = Duration::from_secs(50);
/// An unanswered ping ends the connection after this long.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Who is on the other end, authenticated.
pub struct AgentSession {
    pub agent: Agent,
    pub project: Project,
    pub token: AgentToken,
    pub connection_id: u64,
    /// How it was made, for metrics: `websocket`, `tunnel` (the raw
    /// tunnel of `grpc(s)://` agents) or `receptive`.
    pub transport: &'static str,
    /// The agent process rotated its token: this connection replaces its
    /// others, which get no new work.
    pub replaces: bool,
    /// Cancelled to close the connection from outside (a receptive agent
    /// whose URL configuration was deleted).
    pub close: CancellationToken,
}

pub async fn run<S>(services: Services, connections: Connections, session: AgentSession, io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let AgentSession {
        agent,
        project,
        token,
        connection_id,
        transport,
        replaces,
        close,
    } = session;
    let io = TokioIo::new(io);
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .max_concurrent_reset_streams(1024)
        .handshake::<_, Body>(io)
        .await;
    let (sender, driver) = match handshake {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(agent_id = agent.id, %error, "HTTP/2 handshake with the agent failed");
            return;
        }
    };
    let mut driver = tokio::spawn(driver);
    let (wake, mut wakes) = tokio::sync::mpsc::unbounded_channel();
    let connection = Arc::new(AgentConnection {
        key: connections.registry.next_key(),
        agent_id: agent.id,
        project_id: project.id,
        token_id: token.id,
        connection_id,
        connected_at: glagent_store::Timestamp::now(),
        info: Mutex::new(None),
        flux_projects: Mutex::new(Vec::new()),
        sent_commit: Mutex::new(None),
        sender,
        close,
        wake,
        open_streams: Default::default(),
        replaced: Default::default(),
        revoked: Default::default(),
    });
    connections.registry.insert(connection.clone());
    if replaces {
        let replaced = connections.registry.replace(&connection);
        tracing::info!(
            agent_id = agent.id,
            connection_id,
            token_id = token.id,
            replaced,
            "agent connected with a new token; its older connections finish what they carry"
        );
    }
    let _counted = kas().agent_connection(transport);
    if let Some(routing) = &connections.routing {
        routing.announce(&services.store, agent.id).await;
    }
    tracing::info!(agent_id = agent.id, connection_id, "agent connected");
    if let Err(error) = services.store.touch_agent_token(token.id).await {
        tracing::warn!(agent_id = agent.id, %error, "could not record token use");
    }

    let mut session = Session {
        services: services.clone(),
        registry: connections.registry.clone(),
        agent,
        connection: connection.clone(),
    };
    session.refresh_info().await;
    let pod = connection
        .info()
        .map(|info| format!("pod {}/{}, agentk {}", info.pod_namespace, info.pod_name, info.version))
        .unwrap_or_else(|| "the agent sent no metadata".into());
    services
        .record_activity(
            connection.agent_id,
            AgentEventKind::Connected,
            &format!("Connected with token {} ({pod})", token.name),
        )
        .await;
    session.send_config_if_changed(Instant::now()).await;
    let mut flux = Some(tokio::spawn(follow_flux_projects(connection.clone())));

    let mut info_tick = tokio::time::interval_at(tokio::time::Instant::now() + INFO_REFRESH, INFO_REFRESH);
    // Revocations, deletions, the use of the token and the safety-net poll
    // of the configuration are the replica's upkeep (`crate::upkeep`):
    // nothing here queries the store while idle.
    let reason = loop {
        tokio::select! {
            result = &mut driver => break match result {
                Ok(Ok(())) => "the agent closed the connection".to_string(),
                Ok(Err(error)) => format!("connection error: {error}"),
                Err(error) => format!("connection task failed: {error}"),
            },
            _ = connection.close.cancelled() => break "closed by kas: token revoked, agent deleted or URL configuration removed".to_string(),
            // Replaced after a token rotation: the agent's new connection does
            // the connection's own work; this one only finishes what it carries.
            _ = connection.replaced.cancelled(), if flux.is_some() => {
                if let Some(flux) = flux.take() {
                    flux.abort();
                }
            }
            woken = wakes.recv() => match woken {
                Some(_) if connection.replaced.is_cancelled() => {}
                Some(Wake::Pushed(event)) => {
                    if event.project_id == project.id {
                        // Timed from the push, on whichever replica it came.
                        let pushed = Instant::now().checked_sub(event.created_at.age()).unwrap_or_else(Instant::now);
                        session.send_config_if_changed(pushed).await;
                    }
                    session.reconcile_flux(&project, event.project_id).await;
                }
                Some(Wake::Refresh) => session.send_config_if_changed(Instant::now()).await,
                None => break "kas is shutting down".to_string(),
            },
            _ = info_tick.tick(), if !connection.replaced.is_cancelled() => session.refresh_info().await,
        }
    };
    connections.registry.remove(connection.key);
    if let Some(routing) = &connections.routing {
        routing
            .withdraw(&services.store, &connections.registry, connection.agent_id)
            .await;
    }
    driver.abort();
    if let Some(flux) = flux {
        flux.abort();
    }
    tracing::info!(agent_id = connection.agent_id, connection_id, reason = %reason, "agent disconnected");
    let pod = connection
        .info()
        .map(|info| format!("pod {}/{}: ", info.pod_namespace, info.pod_name))
        .unwrap_or_default();
    services
        .record_activity(
            connection.agent_id,
            AgentEventKind::Disconnected,
            &format!("Disconnected ({pod}{reason})"),
        )
        .await;
}

/// Follows the agent's stream of the projects its Flux GitRepository
/// objects point at, for as long as the connection lives. An agent
/// without the stream (another version) answers 404 and has none.
async fn follow_flux_projects(connection: Arc<AgentConnection>) {
    let request = http::Request::get(FLUX_PROJECTS_PATH)
        .body(Body::empty())
        .expect("static request");
    let mut sender = connection.sender.clone();
    if sender.ready().await.is_err() {
        return;
    }
    let response = match sender.send_request(request).await {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => {
            tracing::debug!(agent_id = connection.agent_id, status = %response.status(), "the agent has no Flux projects stream");
            return;
        }
        Err(error) => {
            tracing::debug!(agent_id = connection.agent_id, %error, "asking for the agent's Flux projects failed");
            return;
        }
    };
    let mut body = response.into_body();
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return };
        let Some(data) = frame.data_ref() else { continue };
        pending.extend_from_slice(data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            match serde_json::from_slice::<FluxProjects>(&line) {
                Ok(update) => {
                    tracing::info!(agent_id = connection.agent_id, projects = ?update.projects, "the agent's Flux GitRepository objects point at these projects");
                    *connection.flux_projects.lock() = update.projects;
                }
                Err(error) => {
                    tracing::warn!(agent_id = connection.agent_id, %error, "the agent sent an unreadable Flux projects line")
                }
            }
        }
        if pending.len() > 1 << 20 {
            tracing::warn!(
                agent_id = connection.agent_id,
                "the agent's Flux projects line is over 1 MiB; ignoring the stream"
            );
            return;
        }
    }
}

struct Session {
    services: Services,
    registry: Arc<crate::registry::AgentRegistry>,
    agent: Agent,
    connection: Arc<AgentConnection>,
}

impl Session {
    async fn call(&self, request: http::Request<Body>) -> Result<(http::StatusCode, Bytes), String> {
        let mut sender: SendRequest<Body> = self.connection.sender.clone();
        let exchange = async {
            sender.ready().await.map_err(|e| e.to_string())?;
            let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(AGENT_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("the agent did not answer within {AGENT_TIMEOUT:?}")))
    }

    async fn refresh_info(&mut self) {
        let request = http::Request::get(INFO_PATH)
            .body(Body::empty())
            .expect("static request");
        match self.call(request).await {
            Ok((status, body)) if status.is_success() => match serde_json::from_slice::<AgentInfo>(&body) {
                Ok(info) => {
                    tracing::info!(
                        agent_id = self.agent.id,
                        version = %info.version,
                        pod = %format!("{}/{}", info.pod_namespace, info.pod_name),
                        "agent registered"
                    );
                    *self.connection.info.lock() = Some(info);
                    self.registry.changed();
                }
                Err(error) => tracing::warn!(agent_id = self.agent.id, %error, "the agent sent unreadable metadata"),
            },
            Ok((status, _)) => {
                tracing::warn!(agent_id = self.agent.id, %status, "the agent refused to send its metadata")
            }
            Err(error) => tracing::warn!(agent_id = self.agent.id, %error, "asking the agent for its metadata failed"),
        }
    }

    /// Asks the agent to request reconciliations of its GitRepository
    /// objects that point at the pushed project, if any do and the agent
    /// may reconcile it.
    async fn reconcile_flux(&self, agent_project: &Project, pushed_project_id: i64) {
        if self.connection.flux_projects.lock().is_empty() {
            return;
        }
        let pushed = if pushed_project_id == agent_project.id {
            agent_project.clone()
        } else {
            match self.services.store.project(pushed_project_id).await {
                Ok(project) => project,
                Err(_) => return,
            }
        };
        let path = pushed.full_path.to_ascii_lowercase();
        let watched = self.connection.flux_projects.lock().contains(&path);
        if !watched {
            return;
        }
        if !glagent_core::flux::agent_may_reconcile(&agent_project.full_path, &pushed.full_path) {
            tracing::info!(agent_id = self.agent.id, project = %pushed.full_path, "not requesting Flux reconciliation: the agent's project is in another top-level group");
            return;
        }
        let body = serde_json::to_vec(&FluxReconcile {
            project_path: pushed.full_path.clone(),
        })
        .expect("serialisable");
        let request = http::Request::post(FLUX_RECONCILE_PATH)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("static request");
        match self.call(request).await {
            Ok((status, body)) if status.is_success() => {
                let annotated = serde_json::from_slice::<FluxReconciled>(&body)
                    .unwrap_or_default()
                    .annotated;
                tracing::info!(agent_id = self.agent.id, project = %pushed.full_path, ?annotated, "asked the agent to reconcile Flux sources");
            }
            Ok((status, _)) => {
                tracing::warn!(agent_id = self.agent.id, %status, "the agent refused the Flux reconciliation request")
            }
            Err(error) => {
                tracing::warn!(agent_id = self.agent.id, %error, "asking the agent for a Flux reconciliation failed")
            }
        }
    }

    /// Sends the configuration if the default branch moved since the last
    /// one sent, `since` the push that announced it (or now). A broken
    /// file is reported to the agent, which keeps its last good
    /// configuration.
    async fn send_config_if_changed(&mut self, since: Instant) {
        let project = match self.services.store.project(self.connection.project_id).await {
            Ok(project) => project,
            Err(error) => {
                tracing::warn!(agent_id = self.agent.id, %error, "reading the agent's project failed");
                return;
            }
        };
        let known = self.connection.sent_commit.lock().clone();
        let head = match self
            .services
            .configs
            .at_head_unless(&project, &self.agent, known.as_deref())
            .await
        {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(agent_id = self.agent.id, %error, "reading the agent configuration failed");
                return;
            }
        };
        let commit = head.commit_id.unwrap_or_default();
        let mut update = ConfigurationUpdate {
            agent_id: self.agent.id,
            project_id: project.id,
            project_path: project.full_path.clone(),
            commit_id: commit.clone(),
            gitlab_external_url: self.services.urls.base(),
            config: None,
            error: None,
        };
        match head.parsed {
            Ok(mut config) => {
                // The agent gets everything but user_access, which only kas uses.
                config.user_access = None;
                update.config = Some(config);
            }
            Err(error) => {
                tracing::warn!(agent_id = self.agent.id, commit = %commit, %error, "agent configuration is invalid; the agent keeps its last good configuration");
                self.services
                    .record_activity_once(
                        self.agent.id,
                        AgentEventKind::ConfigError,
                        &format!("{error} (commit {})", commit.get(..8).unwrap_or(&commit)),
                    )
                    .await;
                update.error = Some(error.to_string());
            }
        }
        let body = serde_json::to_vec(&update).expect("serialisable");
        let request = http::Request::put(CONFIGURATION_PATH)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("static request");
        match self.call(request).await {
            Ok((status, _)) if status.is_success() => {
                kas().configuration_pushed(since.elapsed());
                tracing::info!(agent_id = self.agent.id, commit = %commit, "configuration sent to the agent");
                *self.connection.sent_commit.lock() = Some(commit);
            }
            Ok((status, body)) => tracing::warn!(
                agent_id = self.agent.id,
                %status,
                body = %String::from_utf8_lossy(&body),
                "the agent refused its configuration"
            ),
            Err(error) => tracing::warn!(agent_id = self.agent.id, %error, "sending the configuration failed"),
        }
    }
}
