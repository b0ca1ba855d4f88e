//! Logging whose level the agent configuration can change while running
//! (`observability.logging.level`).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Changes the log level of the running process.
#[derive(Clone)]
pub struct LogLevel {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogLevel {
    /// A handle that changes nothing, for tests.
    pub fn detached() -> LogLevel {
        LogLevel { handle: None }
    }

    /// Sets the level (`debug`, `info`, `warn`, `error`).
    pub fn set(&self, level: &str) {
        if let Some(handle) = &self.handle {
            let filter = EnvFilter::new(format!("{level},h2=warn,hyper=warn,rustls=warn,tungstenite=warn"));
            if let Err(error) = handle.reload(filter) {
                tracing::warn!(%error, "could not change the log level");
            }
        }
    }
}

/// Installs the subscriber: level from `RUST_LOG`, default `info`.
pub fn init() -> LogLevel {
    let initial = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,h2=warn,hyper=warn,rustls=warn,tungstenite=warn"));
    let (filter, handle) = reload::Layer::new(initial);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    LogLevel { handle: Some(handle) }
}
