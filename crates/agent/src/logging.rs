//! agentk's logging (glagent-telemetry's), whose level the agent
//! configuration can change while running (`observability.logging.level`).

use glagent_telemetry::logging::Logging;
pub use glagent_telemetry::logging::{LogFormat, LogLevel};

/// Installs the subscriber in `format`: level from `RUST_LOG`, default
/// `info`, the HTTP/2, HTTP and TLS libraries at `warn`.
pub fn init(format: LogFormat) -> LogLevel {
    glagent_telemetry::logging::init(Logging {
        format,
        quiet: "h2=warn,hyper=warn,rustls=warn,tungstenite=warn",
        database_metrics: None,
    })
}
