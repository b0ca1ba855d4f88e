//! The live agent connections of this kas process.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use axum::body::Body;
use glagent_proto::AgentInfo;
use glagent_services::events::AccessChange;
use glagent_store::Timestamp;
use hyper::client::conn::http2::SendRequest;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// One agentk connection. kas is the HTTP/2 client on it.
pub struct AgentConnection {
    /// Unique in this kas process.
    pub key: u64,
    pub agent_id: i64,
    pub project_id: i64,
    pub token_id: i64,
    /// The id the agent process chose (random per process).
    pub connection_id: u64,
    pub connected_at: Timestamp,
    pub info: Mutex<Option<AgentInfo>>,
    /// The projects the agent's Flux GitRepository objects point at.
    pub flux_projects: Mutex<Vec<String>>,
    /// The commit of the configuration last sent to the agent (`""` for a
    /// branch without commits), `None` before the first: the upkeep's
    /// configuration poll wakes the connection when its project's branch
    /// tip is another.
    pub sent_commit: Mutex<Option<String>>,
    pub sender: SendRequest<Body>,
    /// Cancelled to close the connection (token revoked, agent deleted).
    pub close: CancellationToken,
    /// Wakes the connection's session: a push that concerns it.
    pub wake: tokio::sync::mpsc::UnboundedSender<Wake>,
    /// Proxied requests open on it (see [`MAX_STREAMS`]).
    pub open_streams: AtomicUsize,
    /// Cancelled when a connection of the same agent process with a new
    /// token replaces it (token rotation): it gets no new work, its session
    /// stops its own requests, and it finishes what it carries.
    pub replaced: CancellationToken,
    /// Its token was revoked while it drained: it gets nothing at all and
    /// is closed after [`DRAIN_GRACE`].
    pub revoked: AtomicBool,
}

/// How long a draining connection whose token was revoked may finish
/// what it carries (a watch, a followed log) before kas closes it.
pub const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Proxied requests one agent connection carries at once, as upstream
/// allows an agent 500 streams; agentk's HTTP/2 server allows a few more
/// for kas's own requests (configuration, metadata).
pub const MAX_STREAMS: usize = 500;

/// Connections one agent token may hold to one kas replica: one per agentk
/// pod, so a Deployment of up to this many pods per token.
pub const MAX_CONNECTIONS_PER_TOKEN: usize = 100;

/// One of a connection's [`MAX_STREAMS`], given back when dropped.
pub struct StreamSlot(Arc<AgentConnection>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a session is woken.
#[derive(Clone, Debug)]
pub enum Wake {
    /// A push to the agent's configuration project, or to a project its
    /// Flux objects point at.
    Pushed(glagent_store::PushEvent),
    /// Pushes may have been missed: look at the configuration again.
    Refresh,
}

impl AgentConnection {
    /// A slot for one more proxied request, or `None` while
    /// [`MAX_STREAMS`] are open.
    pub fn open_stream(self: &Arc<Self>) -> Option<StreamSlot> {
        self.open_streams
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < MAX_STREAMS).then_some(open + 1)
            })
            .ok()
            .map(|_| StreamSlot(self.clone()))
    }

    pub fn info(&self) -> Option<AgentInfo> {
        self.info.lock().clone()
    }

    pub fn summary(&self) -> ConnectionSummary {
        ConnectionSummary {
            connection_id: self.connection_id,
            agent_id: self.agent_id,
            token_id: self.token_id,
            connected_at: self.connected_at,
            metadata: self.info(),
        }
    }
}

/// What the connections API shows of one connection, on any replica.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ConnectionSummary {
    pub connection_id: u64,
    pub agent_id: i64,
    /// The agent token it was made with (0 from a replica that does not say).
    #[serde(default)]
    pub token_id: i64,
    pub connected_at: Timestamp,
    pub metadata: Option<AgentInfo>,
}

pub struct AgentRegistry {
    connections: Mutex<Held>,
    next_key: AtomicU64,
    round_robin: AtomicU64,
    /// Bumped when a connection comes, goes or tells who it is: what live
    /// pages wait on.
    changes: tokio::sync::watch::Sender<u64>,
    /// Connections each agent token holds or is being made with.
    per_token: Mutex<HashMap<i64, usize>>,
}

/// The connections held, by key and by agent: a request finds its
/// agent's connections without looking at the others.
#[derive(Default)]
struct Held {
    by_key: HashMap<u64, Arc<AgentConnection>>,
    by_agent: HashMap<i64, Vec<Arc<AgentConnection>>>,
}

impl Held {
    fn values(&self) -> impl Iterator<Item = &Arc<AgentConnection>> {
        self.by_key.values()
    }

    fn of_agent(&self, agent_id: i64) -> &[Arc<AgentConnection>] {
        self.by_agent.get(&agent_id).map(Vec::as_slice).unwrap_or_default()
    }
}

/// One of a token's [`MAX_CONNECTIONS_PER_TOKEN`], given back when dropped.
pub struct TokenSlot {
    registry: Arc<AgentRegistry>,
    token_id: i64,
}

impl Drop for TokenSlot {
    fn drop(&mut self) {
        let mut counts = self.registry.per_token.lock();
        if let Some(count) = counts.get_mut(&self.token_id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.token_id);
            }
        }
    }
}

impl Default for AgentRegistry {
    fn default() -> Self {
        AgentRegistry {
            connections: Mutex::default(),
            next_key: AtomicU64::default(),
            round_robin: AtomicU64::default(),
            changes: tokio::sync::watch::Sender::new(0),
            per_token: Mutex::default(),
        }
    }
}

impl AgentRegistry {
    /// Wakes when this replica's connections change (see [`Self::changed`]).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Says that a connection changed: came, went, or sent its metadata.
    pub fn changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    pub fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Held> {
        self.connections.lock()
    }

    pub fn insert(&self, connection: Arc<AgentConnection>) {
        {
            let mut held = self.lock();
            held.by_agent
                .entry(connection.agent_id)
                .or_default()
                .push(connection.clone());
            held.by_key.insert(connection.key, connection);
        }
        self.changed();
    }

    pub fn remove(&self, key: u64) {
        {
            let mut held = self.lock();
            if let Some(gone) = held.by_key.remove(&key)
                && let Some(of_agent) = held.by_agent.get_mut(&gone.agent_id)
            {
                of_agent.retain(|c| c.key != key);
                if of_agent.is_empty() {
                    held.by_agent.remove(&gone.agent_id);
                }
            }
        }
        self.changed();
    }

    /// Whether this replica holds a connection of the agent.
    pub fn holds(&self, agent_id: i64) -> bool {
        self.lock().of_agent(agent_id).iter().any(|c| !c.sender.is_closed())
    }

    /// Every connection here.
    pub fn all(&self) -> Vec<Arc<AgentConnection>> {
        self.lock().values().cloned().collect()
    }

    /// The tokens of the connections here, sorted, each once.
    pub fn token_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.lock().values().map(|c| c.token_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The agents with a connection here, sorted.
    pub fn agent_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.lock().by_agent.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The agent's connections, oldest first.
    pub fn of_agent(&self, agent_id: i64) -> Vec<Arc<AgentConnection>> {
        let mut found = self.lock().of_agent(agent_id).to_vec();
        found.sort_by_key(|c| c.key);
        found
    }

    /// One of the agent's connections, taking turns, for a new stream:
    /// never one whose token was revoked, and one being replaced only when
    /// there is no other.
    pub fn pick(&self, agent_id: i64) -> Option<Arc<AgentConnection>> {
        let usable: Vec<_> = self
            .of_agent(agent_id)
            .into_iter()
            .filter(|c| !c.sender.is_closed() && !c.revoked.load(Ordering::Relaxed))
            .collect();
        let current: Vec<_> = usable.iter().filter(|c| !c.replaced.is_cancelled()).cloned().collect();
        let candidates = if current.is_empty() { usable } else { current };
        if candidates.is_empty() {
            return None;
        }
        let turn = self.round_robin.fetch_add(1, Ordering::Relaxed) as usize;
        Some(candidates[turn % candidates.len()].clone())
    }

    /// Closes every connection made with this token.
    pub fn close_token(&self, token_id: i64) -> usize {
        self.close_where(|c| c.token_id == token_id, true)
    }

    /// Closes every connection of this agent.
    pub fn close_agent(&self, agent_id: i64) -> usize {
        self.close_where(|c| c.agent_id == agent_id, false)
    }

    /// Closes the connections a change of access ends: those of a revoked
    /// token or a deleted agent.
    pub fn access_changed(&self, change: &AccessChange) {
        let (closed, what) = match *change {
            AccessChange::AgentTokenRevoked { token_id, .. } => (self.close_token(token_id), "token revoked"),
            AccessChange::AgentDeleted { agent_id } => (self.close_agent(agent_id), "agent deleted"),
            _ => return,
        };
        if closed > 0 {
            tracing::info!(
                ?change,
                closed_connections = closed,
                "closing agent connections: {what}"
            );
        }
    }

    /// A slot for one more connection with the token, held for the
    /// connection's life; `None` while the token has
    /// [`MAX_CONNECTIONS_PER_TOKEN`] (counted when the connection is
    /// accepted, so simultaneous attempts cannot pass the limit together).
    pub fn reserve_token(self: &Arc<Self>, token_id: i64) -> Option<TokenSlot> {
        let mut counts = self.per_token.lock();
        let count = counts.entry(token_id).or_default();
        if *count >= MAX_CONNECTIONS_PER_TOKEN {
            return None;
        }
        *count += 1;
        Some(TokenSlot {
            registry: self.clone(),
            token_id,
        })
    }

    /// Marks the agent process's other connections as replaced by `by`
    /// (its token was rotated); returns how many.
    pub fn replace(&self, by: &AgentConnection) -> usize {
        let replaced: Vec<_> = self
            .lock()
            .values()
            .filter(|c| c.agent_id == by.agent_id && c.connection_id == by.connection_id && c.key != by.key)
            .cloned()
            .collect();
        for connection in &replaced {
            connection.replaced.cancel();
        }
        replaced.len()
    }

    /// Closes the matching connections: at once, or, with `grace`, one
    /// being replaced once it has finished what it carries (at most
    /// [`DRAIN_GRACE`]), taking no new work meanwhile.
    fn close_where(&self, matches: impl Fn(&AgentConnection) -> bool, grace: bool) -> usize {
        let doomed: Vec<_> = self.lock().values().filter(|c| matches(c)).cloned().collect();
        for connection in &doomed {
            if grace && connection.replaced.is_cancelled() {
                if !connection.revoked.swap(true, Ordering::Relaxed) {
                    let close = connection.close.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(DRAIN_GRACE).await;
                        close.cancel();
                    });
                }
            } else {
                connection.close.cancel();
            }
        }
        doomed.len()
    }
}

/// Connections for the crate's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    /// A connection of `agent_id` (configuration in `project_id`) in the
    /// registry, whose far side is a real HTTP/2 server on a pipe, with the
    /// receiver of its wakes; the returned task is that server, abort it to
    /// make the agent go away.
    pub(crate) async fn connection(
        registry: &AgentRegistry,
        agent_id: i64,
        project_id: i64,
        token_id: i64,
    ) -> (
        Arc<AgentConnection>,
        tokio::sync::mpsc::UnboundedReceiver<Wake>,
        tokio::task::JoinHandle<()>,
    ) {
        let (client_io, server_io) = tokio::io::duplex(16 * 1024);
        let server = tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server_io), service)
                .await;
        });
        let (sender, driver) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Body>(TokioIo::new(client_io))
            .await
            .unwrap();
        tokio::spawn(driver);
        let (wake, wakes) = tokio::sync::mpsc::unbounded_channel();
        let connection = Arc::new(AgentConnection {
            key: registry.next_key(),
            agent_id,
            project_id,
            token_id,
            connection_id: 0,
            connected_at: Timestamp::now(),
            info: Mutex::new(None),
            flux_projects: Mutex::new(Vec::new()),
            sent_commit: Mutex::new(None),
            sender,
            close: CancellationToken::new(),
            wake,
            open_streams: Default::default(),
            replaced: Default::default(),
            revoked: Default::default(),
        });
        registry.insert(connection.clone());
        (connection, wakes, server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose far side is a real HTTP/2 server on a pipe; the
    /// returned task is that server, abort it to make the agent go away.
    async fn connection(
        registry: &AgentRegistry,
        agent_id: i64,
    ) -> (Arc<AgentConnection>, tokio::task::JoinHandle<()>) {
        connection_with_token(registry, agent_id, 1).await
    }

    async fn connection_with_token(
        registry: &AgentRegistry,
        agent_id: i64,
        token_id: i64,
    ) -> (Arc<AgentConnection>, tokio::task::JoinHandle<()>) {
        let (connection, _wakes, server) = testing::connection(registry, agent_id, 1, token_id).await;
        (connection, server)
    }

    #[tokio::test]
    async fn a_replaced_connection_gets_no_new_work_and_finishes_what_it_carries_after_revocation() {
        let registry = AgentRegistry::default();
        let (old, _old_server) = connection_with_token(&registry, 5, 10).await;
        let (new, _new_server) = connection_with_token(&registry, 5, 11).await;
        assert_eq!(registry.replace(&new), 1, "the same process's other connection");
        assert!(old.replaced.is_cancelled() && !new.replaced.is_cancelled());
        for _ in 0..4 {
            assert_eq!(
                registry.pick(5).unwrap().key,
                new.key,
                "new work goes to the new connection"
            );
        }
        // Revoking the old token does not cut what the old one carries...
        assert_eq!(registry.close_token(10), 1);
        assert!(!old.close.is_cancelled());
        assert!(old.revoked.load(Ordering::Relaxed));
        // ...and it never gets work again, even alone.
        registry.remove(new.key);
        assert!(registry.pick(5).is_none());
        // A connection not replaced closes at once.
        let (other, _other_server) = connection_with_token(&registry, 6, 12).await;
        assert_eq!(registry.close_token(12), 1);
        assert!(other.close.is_cancelled());
    }

    #[test]
    fn a_token_holds_at_most_its_connections_counted_at_once() {
        let registry = Arc::new(AgentRegistry::default());
        let slots: Vec<TokenSlot> = (0..MAX_CONNECTIONS_PER_TOKEN)
            .map_while(|_| registry.reserve_token(3))
            .collect();
        assert_eq!(slots.len(), MAX_CONNECTIONS_PER_TOKEN);
        assert!(registry.reserve_token(3).is_none());
        assert!(registry.reserve_token(4).is_some(), "other tokens are not affected");
        drop(slots);
        assert!(registry.reserve_token(3).is_some());
    }

    #[tokio::test]
    async fn a_connection_carries_at_most_its_streams_and_gets_them_back() {
        let registry = AgentRegistry::default();
        let (connection, _server) = connection(&registry, 9).await;
        let slots: Vec<StreamSlot> = (0..MAX_STREAMS).map_while(|_| connection.open_stream()).collect();
        assert_eq!(slots.len(), MAX_STREAMS);
        assert!(connection.open_stream().is_none(), "the 501st is refused");
        drop(slots);
        assert_eq!(connection.open_streams.load(Ordering::Relaxed), 0);
        assert!(connection.open_stream().is_some());
    }

    #[tokio::test]
    async fn streams_are_spread_over_replicas_and_survive_one_going_away() {
        let registry = AgentRegistry::default();
        let (first, first_server) = connection(&registry, 7).await;
        let (second, _second_server) = connection(&registry, 7).await;
        let (_other, _other_server) = connection(&registry, 8).await;
        let picks: Vec<u64> = (0..4).map(|_| registry.pick(7).unwrap().key).collect();
        assert_eq!(picks.iter().filter(|k| **k == first.key).count(), 2, "{picks:?}");
        assert_eq!(picks.iter().filter(|k| **k == second.key).count(), 2, "{picks:?}");

        first_server.abort();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !first.sender.is_closed() {
            assert!(std::time::Instant::now() < deadline, "the dead replica was not noticed");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        for _ in 0..4 {
            assert_eq!(registry.pick(7).unwrap().key, second.key);
        }

        assert_eq!(registry.close_agent(7), 2);
        assert!(first.close.is_cancelled() && second.close.is_cancelled());
        registry.remove(first.key);
        registry.remove(second.key);
        assert!(registry.pick(7).is_none());
        assert!(registry.pick(8).is_some());
    }
}
