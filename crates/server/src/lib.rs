//! kas, the glagent agent server: this crate wires kas's rooms together
//! and runs them. The rooms are crates of their own, with one-way
//! dependencies: `glagent-services` (what every face shares),
//! `glagent-connections` (agents dialing in, replica routes),
//! `glagent-k8s-proxy` (the Kubernetes API proxy) and `glagent-api` (REST
//! and Git over HTTP). Here: flags ([`args`]), TLS ([`tls`]), the first
//! start ([`bootstrap`]), the chart repository ([`charts`]), the one HTTP
//! face ([`router`]), the accept loop and graceful shutdown, and the
//! `kas admin` commands.

pub mod args;
pub mod bootstrap;
pub mod charts;
mod drain;
mod metrics;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use glagent_connections::{Connections, Routing};
use glagent_core::secret;
use glagent_git::Repos;
use glagent_k8s_proxy::Proxy;
use glagent_services::sealed::Sealer;
use glagent_services::urls::Urls;
use glagent_services::{Services, Settings};
use glagent_store::{NewPersonalAccessToken, Store};
use glagent_telemetry::logging::{LogFormat, Logging};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::args::{AdminCommand, Cli, Command, ServeArgs, StorageArgs};

/// Logs to stderr in `format`; the level comes from `RUST_LOG` (default
/// `info`). The `audit` target (a line per proxied request) is off unless
/// `RUST_LOG` names it. Database statements are timed into the metrics.
pub fn init_logging(format: LogFormat) {
    glagent_telemetry::logging::init(Logging {
        format,
        quiet: "audit=off",
        database_metrics: Some(glagent_telemetry::metrics::kas()),
    });
}

/// The whole HTTP face of kas: the REST API and Git, the agent endpoint,
/// the Kubernetes API proxy, the chart repository and health endpoints.
pub fn router(services: Services, connections: Connections, proxy: Proxy) -> Router {
    Router::new()
        .route(
            "/-/liveness",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/-/readiness", get(readiness).with_state(services.store.clone()))
        .merge(charts::router(services.urls.clone()))
        .merge(glagent_connections::router(services.clone(), connections.clone()))
        .merge(glagent_k8s_proxy::router(proxy))
        .merge(glagent_api::router_with_pages(
            services.clone(),
            connections.clone(),
            Some(glagent_web::router(services, connections)),
        ))
        .layer(axum::middleware::from_fn(drain::answer_refusals_after_the_body))
}

/// The private API other replicas call: proxied requests they forward, and
/// this replica's connections of an agent.
fn private_router(connections: &Connections, routing: Arc<Routing>, proxy: Proxy) -> Router {
    glagent_k8s_proxy::private_router(proxy).merge(glagent_connections::routing::private_router(
        connections.registry.clone(),
        routing,
    ))
}

async fn readiness(State(store): State<Store>) -> Response {
    match store.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(error) => {
            tracing::warn!(%error, "not ready: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "failed", "message": "database unreachable"})),
            )
                .into_response()
        }
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None | Some(Command::Serve) => serve(cli.storage, cli.serve).await,
        Some(Command::Admin(command)) => admin(cli.storage, command).await,
    }
}

async fn open_store(storage: &StorageArgs) -> Result<Store> {
    create_private_dir(&storage.data_dir)?;
    let url = match &storage.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}?mode=rwc", storage.data_dir.join("kas.sqlite3").display()),
    };
    Store::connect(&url)
        .await
        .with_context(|| format!("opening the database {}", redact_url(&url)))
}

fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .with_context(|| format!("creating the data directory {}", path.display()))?;
    }
    Ok(())
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

fn external_url(args: &ServeArgs) -> Result<url::Url> {
    let url = match &args.external_url {
        Some(url) => url.clone(),
        None => {
            let host = match args.listen.ip() {
                ip if ip.is_unspecified() => "localhost".to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            };
            url::Url::parse(&format!("https://{host}:{}", args.listen.port()))?
        }
    };
    anyhow::ensure!(
        matches!(url.scheme(), "https" | "http") && url.host_str().is_some(),
        "--external-url {url} must be an http:// or https:// URL with a host"
    );
    Ok(url)
}

async fn serve(storage: StorageArgs, args: ServeArgs) -> Result<()> {
    let external_url = external_url(&args)?;
    let store = open_store(&storage).await?;
    let created = bootstrap::ensure_root(
        &store,
        &storage.data_dir,
        std::env::var("KAS_INITIAL_ROOT_TOKEN").ok(),
        std::env::var("KAS_INITIAL_ROOT_PASSWORD").ok(),
    )
    .await?;
    if created {
        // Logs are read by more people than the data directory: the
        // secrets stay in their files (mode 0600).
        tracing::info!(
            username = "root",
            token_file = %storage.data_dir.join("initial_root_token").display(),
            password_file = %storage.data_dir.join("initial_root_password").display(),
            "created the root user; its first personal access token and password are in these files"
        );
    }
    let repos = Repos::new(storage.data_dir.join("repositories")).context("creating the repositories directory")?;
    let tls = if external_url.scheme() == "https" {
        let (cert, key) = match (&args.tls_cert_file, &args.tls_key_file) {
            (Some(cert), Some(key)) => (
                std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
                std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
            ),
            _ => {
                let host = external_url.host_str().unwrap_or("localhost").trim_matches(['[', ']']);
                let (cert, key) = tls::generated_certificate(&storage.data_dir.join("tls"), host)?;
                (cert.into_bytes(), key.into_bytes())
            }
        };
        Some(TlsAcceptor::from(tls::server_config(&cert, &key)?))
    } else {
        None
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let ca_pem = if tls.is_some() && args.tls_cert_file.is_none() {
        std::fs::read_to_string(storage.data_dir.join("tls/ca.crt")).ok()
    } else {
        None
    };
    let agent_port = match args.agent_listen {
        Some(address) => {
            let acceptor = match (&tls, args.agent_listen_cleartext) {
                (_, true) => None,
                (Some(acceptor), false) => Some(acceptor.clone()),
                (None, false) => anyhow::bail!(
                    "--agent-listen serves TLS with kas's certificate, but kas serves plain HTTP ({external_url}): pass --agent-listen-cleartext for grpc://, or serve https"
                ),
            };
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("listening on {address} for agents (--agent-listen)"))?;
            Some((listener, acceptor))
        }
        None => None,
    };
    let (routing, private) = match (&args.private_listen, &args.private_api_secret_file) {
        (Some(address), Some(secret)) => {
            let url = glagent_connections::routing::private_url(*address, args.private_url.as_ref())?;
            let tls_dir = storage.data_dir.join("tls");
            let acceptor = private_acceptor(&url, &tls_dir)?;
            let routing = Routing::new(secret, &url, &tls::ca_certificate(&tls_dir)?)?;
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("listening on {address} for the private API"))?;
            (Some(routing), Some((listener, acceptor)))
        }
        _ => (None, None),
    };
    let sealer =
        Sealer::open_dir(&storage.data_dir.join("secrets")).context("the sealing key of the data directory")?;
    let settings = Settings {
        receptive_agents: args.receptive_agents,
        audit_log: args.audit_log,
        audit_retention: Duration::from_secs(u64::from(args.audit_retention_days) * 86_400),
        undelivered_token_grace: Duration::from_secs(args.undelivered_token_grace),
        config_poll_period: Duration::from_secs(args.config_poll_period),
    };
    let services = Services::new(
        store.clone(),
        repos,
        Urls::new(external_url.clone(), ca_pem),
        sealer,
        settings,
    );
    let connections = Connections::new(&services, routing);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let proxy = Proxy::new(services.clone(), connections.clone(), shutdown.clone());
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    });
    let private = match (private, &connections.routing) {
        (Some((listener, acceptor)), Some(routing)) => {
            tracing::info!(
                listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                private_url = %routing.private_url,
                replica_id = %routing.replica_id,
                "private API for other replicas is serving"
            );
            tokio::spawn({
                let (routing, store, registry) = (routing.clone(), store.clone(), connections.registry.clone());
                async move { routing.refresh_forever(&store, &registry).await }
            });
            tokio::spawn(glagent_services::repository::relay_pushes_forever(services.clone()));
            Some(tokio::spawn(accept_loop(
                listener,
                acceptor,
                private_router(&connections, routing.clone(), proxy.clone()),
                shutdown.clone().cancelled_owned(),
            )))
        }
        _ => None,
    };
    let agent_port = agent_port.map(|(listener, acceptor)| {
        tracing::info!(
            listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            tls = acceptor.is_some(),
            "agent port (grpcs:// and grpc:// agents) is serving"
        );
        tokio::spawn(accept_loop(
            listener,
            acceptor,
            glagent_connections::router(services.clone(), connections.clone()),
            shutdown.clone().cancelled_owned(),
        ))
    });
    // Revocations, last use and pushes for every connection this replica holds.
    tokio::spawn(glagent_connections::upkeep::run(
        services.clone(),
        connections.clone(),
        shutdown.clone(),
    ));
    tokio::spawn({
        let (services, shutdown) = (services.clone(), shutdown.clone());
        async move {
            tokio::select! {
                _ = services.forget_undelivered_tokens() => {}
                _ = shutdown.cancelled() => {}
            }
        }
    });
    let receptive = services.settings.receptive_agents.then(|| {
        tokio::spawn(glagent_connections::receptive::run(
            services.clone(),
            connections.clone(),
            shutdown.clone(),
        ))
    });
    let requests_ended = tokio_util::sync::CancellationToken::new();
    let audit = tokio::spawn({
        let (services, store, requests_ended) = (services.clone(), store.clone(), requests_ended.clone());
        async move {
            let retention = services.settings.audit_retention;
            services
                .audit
                .write_until(store, retention, requests_ended.cancelled_owned())
                .await;
        }
    });
    let metrics = match args.metrics_listen {
        Some(address) => Some(metrics::serve(address, connections.registry.clone(), shutdown.clone()).await?),
        None => None,
    };
    tracing::info!(listen = %local, external_url = %external_url, "kas is serving");
    accept_loop(
        listener,
        tls,
        router(services, connections.clone(), proxy),
        shutdown.clone().cancelled_owned(),
    )
    .await;
    for task in [private, agent_port, receptive, metrics].into_iter().flatten() {
        let _ = task.await;
    }
    requests_ended.cancel();
    let _ = audit.await;
    if let Some(routing) = &connections.routing {
        routing.withdraw_all(&store).await;
    }
    store.close().await;
    tracing::info!("kas stopped");
    Ok(())
}

/// TLS for the private API when its URL is https://: a certificate for
/// its host from the CA the replicas share in their data directory.
fn private_acceptor(url: &url::Url, tls_dir: &Path) -> Result<Option<TlsAcceptor>> {
    if url.scheme() != "https" {
        return Ok(None);
    }
    let host = url.host_str().unwrap_or("localhost").trim_matches(['[', ']']);
    let (cert, key) = tls::private_certificate(tls_dir, host)?;
    Ok(Some(TlsAcceptor::from(tls::server_config(
        cert.as_bytes(),
        key.as_bytes(),
    )?)))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: draining connections");
}

/// Serves HTTP/1.1 and HTTP/2 (over TLS when given) until `shutdown`, then
/// lets open connections finish for up to 10 s.
/// The most header bytes a request may have, on every listener.
const MAX_HEADERS: usize = 64 << 10;

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let app = app.clone();
        let graceful = graceful.clone();
        tokio::spawn(async move {
            let service = TowerToHyperService::new(app);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // Request headers are at most MAX_HEADERS (431 above).
            builder.http1().max_buf_size(MAX_HEADERS);
            builder.http2().max_header_list_size(MAX_HEADERS as u32);
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        let _ = graceful.watch(conn.into_owned()).await;
                    }
                    Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                },
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = graceful.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing them");
    }
}

async fn admin(storage: StorageArgs, command: AdminCommand) -> Result<()> {
    let store = open_store(&storage).await?;
    match command {
        AdminCommand::CreateUser {
            username,
            name,
            email,
            admin,
            password,
        } => {
            glagent_core::names::validate_path(&username).map_err(|e| anyhow::anyhow!("--username: {e}"))?;
            if let Some(password) = &password {
                glagent_services::passwords::validate(password).map_err(|e| anyhow::anyhow!("--password: {e}"))?;
            }
            let name = name.unwrap_or_else(|| username.clone());
            let user =
                glagent_services::users::create_user(&store, &username, &name, email.as_deref().unwrap_or(""), admin)
                    .await?;
            if let Some(password) = &password {
                glagent_services::passwords::set(&store, user.id, password).await?;
            }
            println!("{}", serde_json::to_string(&user)?);
        }
        AdminCommand::CreateToken {
            username,
            name,
            scopes,
            expires_at,
        } => {
            let user = store
                .user_by_username(&username)
                .await
                .with_context(|| format!("no user named {username:?}"))?;
            glagent_api::users_validate(&scopes, expires_at.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
            let token = secret::new_personal_access_token();
            store
                .create_personal_access_token(&NewPersonalAccessToken {
                    user_id: user.id,
                    name,
                    scopes,
                    token_digest: token.digest(),
                    expires_at,
                })
                .await?;
            println!("{}", token.expose());
        }
    }
    store.close().await;
    Ok(())
}
