//! Prometheus metrics, in the OpenMetrics text format. Label values come
//! from small fixed sets (transports, Kubernetes verbs, status codes,
//! outcomes): never paths, names or ids of users.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Kas::encode`] and [`Agent::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// `websocket`, `tunnel` (the raw tunnel of `grpc(s)://`), `receptive`.
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `personal_access_token`, `ci_job`, `session_cookie`, or `none`
    /// when the request was refused before its caller was known.
    pub credential: &'static str,
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, ...).
    pub verb: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub credential: &'static str,
    pub verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    /// `watch` (and followed logs) or `upgrade` (exec, attach, port-forward).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatementLabels {
    /// The statement's first keyword: `select`, `insert`, `update`, ...
    pub statement: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbCodeLabels {
    pub verb: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigurationLabels {
    pub agent_id: String,
    pub commit_id: String,
    pub log_level: String,
}

/// Request latencies: 1 ms to about 33 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Statement latencies: 50 µs to about 1.6 s.
fn statement_latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// A gauge that counts what is open while a guard lives.
pub struct Open(Gauge);

impl Open {
    pub fn enter(&self) -> OpenGuard {
        self.0.inc();
        OpenGuard(self.0.clone())
    }
}

/// Decrements its gauge when dropped.
#[derive(Debug)]
pub struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Everything kas serves on `/metrics`.
pub struct Kas {
    registry: Registry,
    agent_connections: Family<TransportLabels, Gauge>,
    agents_connected: Gauge,
    proxy_requests: Family<RequestLabels, Counter>,
    proxy_latency: Family<LatencyLabels, Histogram>,
    proxy_streams: Family<StreamLabels, Gauge>,
    configuration_pushes: Counter,
    configuration_push_latency: Histogram,
    receptive_dials: Family<OutcomeLabels, Counter>,
    database_statements: Family<StatementLabels, Histogram>,
    replica_forwards: Family<OutcomeLabels, Counter>,
}

impl std::fmt::Debug for Kas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kas metrics")
    }
}

/// The process's kas metrics.
pub fn kas() -> &'static Kas {
    static KAS: LazyLock<Kas> = LazyLock::new(Kas::new);
    &KAS
}

impl Kas {
    fn new() -> Kas {
        let mut registry = Registry::default();
        let agent_connections = Family::<TransportLabels, Gauge>::default();
        registry.register(
            "kas_agent_connections",
            "Agent connections this replica holds, by transport",
            agent_connections.clone(),
        );
        let agents_connected = Gauge::default();
        registry.register(
            "kas_agents_connected",
            "Agents with at least one connection to this replica",
            agents_connected.clone(),
        );
        let proxy_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kas_proxy_requests",
            "Requests to the Kubernetes API proxy, by credential, verb and status code",
            proxy_requests.clone(),
        );
        let proxy_latency = Family::<LatencyLabels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "kas_proxy_request_duration_seconds",
            "Time from a proxied request's arrival to the end of its response (watches and upgrades: until they close)",
            proxy_latency.clone(),
        );
        let proxy_streams = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "kas_proxy_open_streams",
            "Watches and upgraded connections open through the proxy",
            proxy_streams.clone(),
        );
        let configuration_pushes = Counter::default();
        registry.register(
            "kas_configuration_pushes",
            "Configurations sent to agents",
            configuration_pushes.clone(),
        );
        let configuration_push_latency = latency();
        registry.register(
            "kas_configuration_push_duration_seconds",
            "Time from a push (or a connection's start) to its agent having the configuration",
            configuration_push_latency.clone(),
        );
        let receptive_dials = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "kas_receptive_dials",
            "Connections kas dialed to receptive agents, by outcome (connected, failed)",
            receptive_dials.clone(),
        );
        let database_statements =
            Family::<StatementLabels, Histogram>::new_with_constructor(statement_latency as fn() -> Histogram);
        registry.register(
            "kas_database_statement_duration_seconds",
            "Database statements and their duration, by kind",
            database_statements.clone(),
        );
        let replica_forwards = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "kas_replica_forwards",
            "Proxied requests sent to the replica holding the agent, by outcome (answered, failed)",
            replica_forwards.clone(),
        );
        registry.register(
            "kas_build",
            "The kas version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Kas {
            registry,
            agent_connections,
            agents_connected,
            proxy_requests,
            proxy_latency,
            proxy_streams,
            configuration_pushes,
            configuration_push_latency,
            receptive_dials,
            database_statements,
            replica_forwards,
        }
    }

    /// Counts a connection while the guard lives.
    pub fn agent_connection(&self, transport: &'static str) -> OpenGuard {
        Open(
            self.agent_connections
                .get_or_create(&TransportLabels { transport })
                .clone(),
        )
        .enter()
    }

    /// A proxied request that ended.
    pub fn proxy_request(&self, credential: &'static str, verb: &'static str, code: u16, took: Duration) {
        self.proxy_requests
            .get_or_create(&RequestLabels { credential, verb, code })
            .inc();
        self.proxy_latency
            .get_or_create(&LatencyLabels { credential, verb })
            .observe(took.as_secs_f64());
    }

    /// Counts an open watch or upgrade while the guard lives.
    pub fn proxy_stream(&self, kind: &'static str) -> OpenGuard {
        Open(self.proxy_streams.get_or_create(&StreamLabels { kind }).clone()).enter()
    }

    pub fn configuration_pushed(&self, took: Duration) {
        self.configuration_pushes.inc();
        self.configuration_push_latency.observe(took.as_secs_f64());
    }

    pub fn receptive_dial(&self, outcome: &'static str) {
        self.receptive_dials.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn database_statement(&self, statement: &'static str, seconds: f64) {
        self.database_statements
            .get_or_create(&StatementLabels { statement })
            .observe(seconds);
    }

    pub fn replica_forward(&self, outcome: &'static str) {
        self.replica_forwards.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The text to serve, with the number of agents connected now.
    pub fn encode(&self, agents_connected: usize) -> String {
        self.agents_connected
            .set(i64::try_from(agents_connected).unwrap_or(i64::MAX));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Everything agentk serves on `/metrics`; one per agent process.
pub struct Agent {
    registry: Registry,
    pub connection_attempts: Counter,
    pub connection_failures: Counter,
    pub connections: Counter,
    pub configuration_updates: Counter,
    pub configuration_rejections: Counter,
    connected: Gauge,
    leader: Gauge,
    tasks: Gauge,
    configuration: Family<ConfigurationLabels, Gauge>,
    kubernetes_requests: Family<VerbCodeLabels, Counter>,
    kubernetes_latency: Family<VerbLabels, Histogram>,
    kubernetes_streams: Family<StreamLabels, Gauge>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Agent metrics")
    }
}

impl Default for Agent {
    fn default() -> Agent {
        let mut registry = Registry::default();
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::<u64, AtomicU64>::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let connection_attempts = counter(
            &mut registry,
            "agentk_connection_attempts",
            "Attempts to connect to kas",
        );
        let connection_failures = counter(&mut registry, "agentk_connection_failures", "Attempts that failed");
        let connections = counter(&mut registry, "agentk_connections", "Connections established");
        let configuration_updates = counter(&mut registry, "agentk_configuration_updates", "Configurations applied");
        let configuration_rejections = counter(
            &mut registry,
            "agentk_configuration_rejections",
            "Configurations refused; the last good one was kept",
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let connected = gauge(
            &mut registry,
            "agentk_connected",
            "Whether the agent is connected to kas",
        );
        let leader = gauge(
            &mut registry,
            "agentk_leader",
            "Whether this replica holds the agent's Lease",
        );
        let tasks = gauge(&mut registry, "agentk_tokio_alive_tasks", "Tasks alive in the runtime");
        let configuration = Family::<ConfigurationLabels, Gauge>::default();
        registry.register(
            "agentk_configuration_info",
            "The configuration in force",
            configuration.clone(),
        );
        let kubernetes_requests = Family::<VerbCodeLabels, Counter>::default();
        registry.register(
            "agentk_kubernetes_requests",
            "Requests the agent made to its API server for kas, by verb and status code",
            kubernetes_requests.clone(),
        );
        let kubernetes_latency = Family::<VerbLabels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "agentk_kubernetes_request_duration_seconds",
            "Time from a request's arrival from kas to the end of the API server's response",
            kubernetes_latency.clone(),
        );
        let kubernetes_streams = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "agentk_kubernetes_open_streams",
            "Watches and upgraded connections open to the API server",
            kubernetes_streams.clone(),
        );
        registry.register(
            "agentk_build",
            "The agentk version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Agent {
            registry,
            connection_attempts,
            connection_failures,
            connections,
            configuration_updates,
            configuration_rejections,
            connected,
            leader,
            tasks,
            configuration,
            kubernetes_requests,
            kubernetes_latency,
            kubernetes_streams,
        }
    }
}

/// What an agent's `/metrics` reads at the time of the scrape.
#[derive(Debug)]
pub struct AgentNow {
    pub connected: bool,
    pub leader: bool,
    pub tasks: usize,
    pub configuration: Option<ConfigurationLabels>,
}

impl Agent {
    /// A request to the API server that ended.
    pub fn kubernetes_request(&self, verb: &'static str, code: u16, took: Duration) {
        self.kubernetes_requests
            .get_or_create(&VerbCodeLabels { verb, code })
            .inc();
        self.kubernetes_latency
            .get_or_create(&VerbLabels { verb })
            .observe(took.as_secs_f64());
    }

    /// Counts an open watch or upgrade while the guard lives.
    pub fn kubernetes_stream(&self, kind: &'static str) -> OpenGuard {
        Open(self.kubernetes_streams.get_or_create(&StreamLabels { kind }).clone()).enter()
    }

    pub fn encode(&self, now: AgentNow) -> String {
        self.connected.set(i64::from(now.connected));
        self.leader.set(i64::from(now.leader));
        self.tasks.set(i64::try_from(now.tasks).unwrap_or(i64::MAX));
        self.configuration.clear();
        if let Some(labels) = now.configuration {
            self.configuration.get_or_create(&labels).set(1);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// The Kubernetes verb of a request, as the API server's audit log names
/// it, from its method, path and query; `connect` for upgrades.
pub fn kubernetes_verb(method: &str, path: &str, query: Option<&str>, upgrade: bool) -> &'static str {
    if upgrade {
        return "connect";
    }
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    // As the API server resolves a request: after `/api/<v>` or
    // `/apis/<group>/<v>` and `namespaces/<ns>` (unless that is the
    // namespace's own subresource), one segment is a collection.
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut rest: &[&str] = match segments.first() {
        Some(&"api") => segments.get(2..).unwrap_or_default(),
        Some(&"apis") => segments.get(3..).unwrap_or_default(),
        _ => &[],
    };
    if rest.first() == Some(&"namespaces") && rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
        rest = &rest[2..];
    }
    let collection = rest.len() == 1;
    match method {
        "GET" | "HEAD" if watch => "watch",
        "GET" | "HEAD" if collection => "list",
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if collection => "deletecollection",
        "DELETE" => "delete",
        "OPTIONS" => "options",
        _ => "other",
    }
}

/// Which lasting exchange a request with `verb` (from [`kubernetes_verb`])
/// and `query` is: `upgrade` (exec, attach, port-forward), `watch` (a
/// watch or a followed log), or none; the `kind` label of open streams.
pub fn stream_kind(verb: &str, query: Option<&str>) -> Option<&'static str> {
    if verb == "connect" {
        return Some("upgrade");
    }
    let lasts = query.is_some_and(|q| {
        q.split('&')
            .any(|p| matches!(p, "watch=true" | "watch=1" | "follow=true" | "follow=1"))
    });
    lasts.then_some("watch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lasting_exchanges_are_upgrades_watches_and_followed_logs() {
        assert_eq!(stream_kind("connect", None), Some("upgrade"));
        assert_eq!(stream_kind("watch", Some("watch=true")), Some("watch"));
        assert_eq!(stream_kind("get", Some("follow=true&container=a")), Some("watch"));
        assert_eq!(stream_kind("get", Some("follow=false")), None);
        assert_eq!(stream_kind("list", None), None);
    }

    #[test]
    fn verbs_follow_the_api_server_s_naming() {
        assert_eq!(kubernetes_verb("GET", "/api/v1/namespaces", None, false), "list");
        assert_eq!(kubernetes_verb("GET", "/api/v1/namespaces/default", None, false), "get");
        assert_eq!(
            kubernetes_verb("GET", "/api/v1/namespaces/default/pods", None, false),
            "list"
        );
        assert_eq!(
            kubernetes_verb(
                "GET",
                "/api/v1/namespaces/default/pods",
                Some("watch=true&resourceVersion=5"),
                false
            ),
            "watch"
        );
        assert_eq!(kubernetes_verb("GET", "/apis/apps/v1/deployments", None, false), "list");
        assert_eq!(
            kubernetes_verb("GET", "/apis/apps/v1/namespaces/a/deployments/b", None, false),
            "get"
        );
        assert_eq!(
            kubernetes_verb("GET", "/api/v1/namespaces/a/pods/b/log", None, false),
            "get"
        );
        assert_eq!(kubernetes_verb("GET", "/api/v1", None, false), "get");
        assert_eq!(kubernetes_verb("POST", "/api/v1/namespaces", None, false), "create");
        assert_eq!(
            kubernetes_verb("DELETE", "/api/v1/namespaces/a/pods", None, false),
            "deletecollection"
        );
        assert_eq!(
            kubernetes_verb("DELETE", "/api/v1/namespaces/a/pods/b", None, false),
            "delete"
        );
        assert_eq!(
            kubernetes_verb("POST", "/api/v1/namespaces/a/pods/b/exec", None, true),
            "connect"
        );
        assert_eq!(kubernetes_verb("GET", "/version", None, false), "get");
    }

    #[test]
    fn one_request_moves_its_series_only() {
        let kas = Kas::new();
        kas.proxy_request("personal_access_token", "list", 200, Duration::from_millis(3));
        let text = kas.encode(2);
        assert!(
            text.contains(r#"kas_proxy_requests_total{credential="personal_access_token",verb="list",code="200"} 1"#),
            "{text}"
        );
        assert!(text.contains("kas_agents_connected 2"), "{text}");
        assert!(
            text.contains(r#"kas_proxy_request_duration_seconds_bucket{le="0.004",credential="personal_access_token",verb="list"} 1"#)
                || text.contains(r#"kas_proxy_request_duration_seconds_bucket{credential="personal_access_token",verb="list",le="0.004"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn open_streams_fall_back_when_their_guards_drop() {
        let kas = Kas::new();
        let first = kas.proxy_stream("watch");
        let second = kas.proxy_stream("watch");
        assert!(kas.encode(0).contains(r#"kas_proxy_open_streams{kind="watch"} 2"#));
        drop(first);
        drop(second);
        assert!(kas.encode(0).contains(r#"kas_proxy_open_streams{kind="watch"} 0"#));
    }
}
