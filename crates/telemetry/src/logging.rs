//! Log lines on stderr: text (colours only on a terminal) or JSON lines
//! (`time`, `level`, `message`, `module`, then the event's and its spans'
//! fields), with a level that can change while running.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::{AsLog, log};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::metrics::Kas;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for `kubectl logs` and log collectors.
    Json,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown log format {0:?}: use text or json")]
pub struct UnknownLogFormat(String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<LogFormat, UnknownLogFormat> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(UnknownLogFormat(other.to_string())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

type Reload = dyn Fn(EnvFilter) -> Result<(), reload::Error> + Send + Sync;

/// Changes the log level of the running process.
#[derive(Clone)]
pub struct LogLevel {
    reload: Option<Arc<Reload>>,
    /// The quiet directives `RUST_LOG` did not override.
    quiet: String,
}

impl fmt::Debug for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogLevel")
            .field("attached", &self.reload.is_some())
            .finish()
    }
}

impl LogLevel {
    /// A handle that changes nothing, for tests.
    pub fn detached() -> LogLevel {
        LogLevel {
            reload: None,
            quiet: String::new(),
        }
    }

    /// Sets the level (`debug`, `info`, `warn`, `error`); the quiet
    /// directives of [`init`] that `RUST_LOG` did not override stay.
    pub fn set(&self, level: &str) {
        let Some(reload) = &self.reload else { return };
        let filter = EnvFilter::new(with_quiet(level, &self.quiet));
        let bridged = log_level(filter.max_level_hint());
        match reload(filter) {
            Ok(()) => log::set_max_level(bridged),
            Err(error) => tracing::warn!(%error, "could not change the log level"),
        }
    }
}

/// What the process logs and how.
#[derive(Clone, Copy, Debug)]
pub struct Logging {
    pub format: LogFormat,
    /// Directives added to the level, e.g. `h2=warn` for chatty libraries
    /// or `audit=off` for a target only wanted when asked for; one that
    /// `RUST_LOG` names itself gives way to it.
    pub quiet: &'static str,
    /// Database statements timed into these metrics (kas).
    pub database_metrics: Option<&'static Kas>,
}

/// The `quiet` directives whose target `directives` does not name.
fn unnamed_quiet(directives: &str, quiet: &str) -> String {
    let target = |directive: &str| directive.split('=').next().unwrap_or_default().trim().to_string();
    let named: Vec<String> = directives.split(',').map(target).collect();
    quiet
        .split(',')
        .filter(|directive| !directive.is_empty() && !named.contains(&target(directive)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `level` followed by `quiet`.
fn with_quiet(level: &str, quiet: &str) -> String {
    if quiet.is_empty() {
        level.to_string()
    } else {
        format!("{level},{quiet}")
    }
}

/// Installs the subscriber: level from `RUST_LOG`, default `info`, with
/// the quiet directives `RUST_LOG` does not override.
pub fn init(logging: Logging) -> LogLevel {
    let asked = std::env::var("RUST_LOG").ok().filter(|v| EnvFilter::try_new(v).is_ok());
    let level = asked.unwrap_or_else(|| "info".to_string());
    let quiet = unnamed_quiet(&level, logging.quiet);
    let initial = EnvFilter::new(with_quiet(&level, &quiet));
    let bridged = log_level(initial.max_level_hint());
    let (filter, handle) = reload::Layer::<EnvFilter, Registry>::new(initial);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match logging.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_filter(filter)
            .boxed(),
    };
    // sqlx reports each statement with its duration as a debug event; this
    // layer alone sees those, whatever the log level.
    let queries = logging
        .database_metrics
        .map(|kas| DatabaseQueries(kas).with_filter(Targets::new().with_target("sqlx::query", Level::TRACE)));
    tracing_subscriber::registry().with(lines).with(queries).init();
    // `init` opens the bridge for the `log` crate's records (tungstenite's,
    // rustls's) at the most verbose level of any layer, and the database
    // layer takes TRACE: each `log::trace!` on a library's hot path then
    // went through every filter (1.3 % of kas's CPU under proxy load).
    // Only the lines read those records: the bridge takes their level.
    log::set_max_level(bridged);
    LogLevel {
        reload: Some(Arc::new(move |filter| handle.reload(filter))),
        quiet,
    }
}

/// The `log` crate's level for a tracing filter's most verbose one
/// (TRACE when the filter cannot say: a span's field decides).
fn log_level(hint: Option<LevelFilter>) -> log::LevelFilter {
    hint.unwrap_or(LevelFilter::TRACE).as_log()
}

/// One JSON object per event.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let metadata = event.metadata();
        let mut line = Map::new();
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        line.insert("time".into(), Value::String(time));
        line.insert(
            "level".into(),
            Value::String(metadata.level().as_str().to_ascii_lowercase()),
        );
        line.insert("message".into(), Value::String(String::new()));
        line.insert("module".into(), Value::String(metadata.target().to_string()));
        event.record(&mut JsonVisitor(&mut line));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    for (name, value) in fields {
                        line.entry(name).or_insert(value);
                    }
                }
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        // Fields the `log` bridge adds repeat `module`.
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

/// Times database statements from sqlx's events.
struct DatabaseQueries(&'static Kas);

impl<S: Subscriber> Layer<S> for DatabaseQueries {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut query = Statement::default();
        event.record(&mut query);
        if let Some(seconds) = query.elapsed_secs {
            self.0.database_statement(statement_kind(&query.summary), seconds);
        }
    }
}

#[derive(Default)]
struct Statement {
    summary: String,
    elapsed_secs: Option<f64>,
}

impl Visit for Statement {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = Some(value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "summary" {
            self.summary = value.to_string();
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "summary" {
            self.summary = format!("{value:?}");
        }
    }
}

/// The statement's kind, a bounded label: its first keyword.
fn statement_kind(summary: &str) -> &'static str {
    let first = summary
        .trim_start_matches(|c: char| !c.is_ascii_alphabetic())
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match first.as_str() {
        "select" | "with" => "select",
        "insert" => "insert",
        "update" => "update",
        "delete" => "delete",
        "begin" | "start" => "begin",
        "commit" => "commit",
        "rollback" => "rollback",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_directives_give_way_to_the_targets_rust_log_names() {
        let quiet = "audit=off,h2=warn";
        assert_eq!(unnamed_quiet("info", quiet), "audit=off,h2=warn");
        assert_eq!(unnamed_quiet("debug,audit=info", quiet), "h2=warn");
        assert_eq!(unnamed_quiet("h2 = trace,audit", quiet), "");
        assert_eq!(
            with_quiet("info", &unnamed_quiet("info,audit=info", quiet)),
            "info,h2=warn"
        );
        assert_eq!(with_quiet("warn", ""), "warn");
    }

    #[test]
    fn log_records_are_admitted_at_the_lines_most_verbose_level_only() {
        let level = |directives: &str| log_level(EnvFilter::new(directives).max_level_hint());
        assert_eq!(level(&with_quiet("info", "audit=off,h2=warn")), log::LevelFilter::Info);
        assert_eq!(level("warn,glagent_agent=debug"), log::LevelFilter::Debug);
        assert_eq!(level("error"), log::LevelFilter::Error);
        assert_eq!(level("off"), log::LevelFilter::Off);
        assert_eq!(level("trace"), log::LevelFilter::Trace);
    }

    #[test]
    fn formats_parse_with_a_clear_refusal() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        let error = "yaml".parse::<LogFormat>().unwrap_err().to_string();
        assert_eq!(error, "unknown log format \"yaml\": use text or json");
    }

    #[test]
    fn statements_are_labelled_by_their_first_keyword_only() {
        assert_eq!(statement_kind("SELECT id FROM agents …"), "select");
        assert_eq!(statement_kind("\"insert into agent_tokens\""), "insert");
        assert_eq!(statement_kind("BEGIN IMMEDIATE"), "begin");
        assert_eq!(statement_kind("PRAGMA foreign_keys = ON"), "other");
        assert_eq!(statement_kind(""), "other");
    }

    #[test]
    fn a_json_line_has_time_level_message_module_and_the_fields() {
        use std::sync::Mutex;

        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("connection", agent_id = 7_i64);
            let _entered = span.enter();
            tracing::warn!(attempt = 3_u64, reason = %"refused", "dial failed");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "warn");
        assert_eq!(line["message"], "dial failed");
        assert_eq!(line["module"], module_path!());
        assert_eq!(line["attempt"], 3);
        assert_eq!(line["reason"], "refused");
        assert_eq!(line["agent_id"], 7);
        let time = line["time"].as_str().unwrap();
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).unwrap();
        assert!(!text.contains('\u{1b}'), "no escape codes in JSON lines");
    }
}
