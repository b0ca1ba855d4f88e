//! The agent configuration file, `.gitlab/agents/<agent-name>/config.yaml`
//! on the default branch of the agent's project.
//!
//! Parsing is strict, as in GitLab: unknown keys are errors, every rule is
//! checked while deserialising so that each error carries the line and
//! column where it happened, and an empty or missing file means defaults.

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

/// Files larger than this are refused (GitLab's default limit).
pub const MAX_CONFIG_FILE_SIZE: usize = 128 * 1024;
/// At most this many projects and this many groups per access list.
pub const MAX_AUTHORIZED_ENTRIES: usize = 500;

/// The path of an agent's configuration file inside its project.
pub fn config_file_path(agent_name: &str) -> String {
    format!(".gitlab/agents/{agent_name}/config.yaml")
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci_access: Option<CiAccess>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_access: Option<UserAccess>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flux: Option<Flux>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observability: Option<Observability>,
}

/// Which CI/CD jobs may use the agent, and as whom.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CiAccess {
    #[serde(deserialize_with = "bounded_list", skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<CiAccessEntry>,
    #[serde(deserialize_with = "bounded_list", skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<CiAccessEntry>,
}

/// One authorised project or group (by full path) for CI/CD access.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiAccessEntry {
    pub id: NonEmpty,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_as: Option<CiAccessAs>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<NonEmpty>,
    #[serde(default)]
    pub protected_branches_only: bool,
}

/// The identity a CI/CD job acts as in the cluster. Absent means `agent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CiAccessAs {
    Agent(Empty),
    Impersonate(Impersonate),
    CiJob(Empty),
}

/// A static identity to impersonate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impersonate {
    pub username: NonEmpty,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<ImpersonateExtra>,
}

/// One extra field of an impersonated identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpersonateExtra {
    pub key: NonEmpty,
    #[serde(deserialize_with = "non_empty_list")]
    pub val: Vec<String>,
}

/// Which people may use the agent through the Kubernetes API proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserAccess {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_as: Option<UserAccessAs>,
    #[serde(deserialize_with = "bounded_list", skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<IdEntry>,
    #[serde(deserialize_with = "bounded_list", skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<IdEntry>,
}

/// The identity people act as. Absent means `agent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UserAccessAs {
    Agent(Empty),
    User(Empty),
}

/// A project or group named by its full path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdEntry {
    pub id: NonEmpty,
}

/// Flux integration settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Flux {
    /// Whether the agent requests a reconciliation of the GitRepository
    /// objects that point at a project of this forge when the project is
    /// pushed (default: true). Turn it off for an agent that shares its
    /// cluster with another agent that does it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile_on_push: Option<bool>,
    /// Upstream's Receiver URL; refused with the reason (see
    /// [`refuse_webhook_receiver_url`]).
    #[serde(deserialize_with = "refuse_webhook_receiver_url", skip_serializing)]
    webhook_receiver_url: Refused,
}

impl Flux {
    pub fn reconcile_on_push(&self) -> bool {
        self.reconcile_on_push.unwrap_or(true)
    }
}

/// A key that is never accepted.
#[derive(Clone, Debug, Default, PartialEq)]
struct Refused;

/// glagent's agent annotates the GitRepository itself, so upstream's
/// Receiver URL would do nothing; a silent no-op would mislead.
fn refuse_webhook_receiver_url<'de, D: serde::Deserializer<'de>>(_: D) -> Result<Refused, D::Error> {
    Err(serde::de::Error::custom(
        "flux.webhook_receiver_url is not used: agentk requests reconciliations by annotating the GitRepository (reconcile.fluxcd.io/requestedAt), so no Receiver or webhook is needed; remove the key (flux.reconcile_on_push: false turns the module off)",
    ))
}

/// Observability settings of the agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Observability {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
}

/// Log levels of the agent; both may change while it runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_level: Option<LogLevel>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// An empty mapping, `{}`, used where the real schema has an empty message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A string that must not be empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NonEmpty(String);

impl NonEmpty {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NonEmpty {
    type Error = &'static str;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.trim().is_empty() {
            Err("value must not be empty")
        } else {
            Ok(NonEmpty(value))
        }
    }
}

impl From<NonEmpty> for String {
    fn from(value: NonEmpty) -> String {
        value.0
    }
}

fn bounded_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let list = Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default();
    if list.len() > MAX_AUTHORIZED_ENTRIES {
        return Err(serde::de::Error::custom(format!(
            "{} entries listed; at most {MAX_AUTHORIZED_ENTRIES} are allowed",
            list.len()
        )));
    }
    Ok(list)
}

fn non_empty_list<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    let list = Vec::<String>::deserialize(deserializer)?;
    if list.is_empty() {
        return Err(serde::de::Error::custom("list must have at least one value"));
    }
    Ok(list)
}

/// Why a configuration file was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{path}: file is {size} bytes; the limit is {MAX_CONFIG_FILE_SIZE} bytes (128 KiB)")]
    TooLarge { path: String, size: usize },
    #[error("{path}: file is not valid UTF-8")]
    NotUtf8 { path: String },
    #[error("{path}: {}{message}", location_prefix(*.line, *.column))]
    Invalid {
        path: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
}

fn location_prefix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("line {line}, column {column}: "),
        (Some(line), None) => format!("line {line}: "),
        _ => String::new(),
    }
}

impl ConfigError {
    /// The line the error is on, when known (1-based).
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => *line,
            _ => None,
        }
    }
}

/// Parses a configuration file. `path` is used in error messages only.
pub fn parse_config(path: &str, bytes: &[u8]) -> Result<AgentConfig, ConfigError> {
    if bytes.len() > MAX_CONFIG_FILE_SIZE {
        return Err(ConfigError::TooLarge {
            path: path.to_string(),
            size: bytes.len(),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8 { path: path.to_string() })?;
    if is_blank_yaml(text) {
        return Ok(AgentConfig::default());
    }
    match serde_saphyr::from_str::<Option<AgentConfig>>(text) {
        Ok(config) => Ok(config.unwrap_or_default()),
        Err(error) => {
            let location = error.location();
            Err(ConfigError::Invalid {
                path: path.to_string(),
                line: location.map(|l| l.line() as usize),
                column: location.map(|l| l.column() as usize),
                message: first_line(&error.to_string()),
            })
        }
    }
}

/// True for a file with nothing but whitespace, comments or a document
/// marker: GitLab treats that as an empty configuration.
fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

/// serde-saphyr renders a source snippet after the message and repeats the
/// position before it; keep only the message, since the position is ours.
fn first_line(message: &str) -> String {
    let line = message.lines().find(|l| !l.trim().is_empty()).unwrap_or(message).trim();
    let line = line.strip_prefix("error:").unwrap_or(line).trim_start();
    match line.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
        Some((position, rest))
            if position
                .chars()
                .all(|c| c.is_ascii_digit() || c == ' ' || c.is_alphabetic()) =>
        {
            rest.to_string()
        }
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = ".gitlab/agents/a/config.yaml";

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        parse_config(PATH, text.as_bytes())
    }

    #[test]
    fn empty_file_means_defaults() {
        for text in ["", "\n", "# nothing yet\n", "---\n", "null\n"] {
            assert_eq!(parse(text), Ok(AgentConfig::default()), "{text:?}");
        }
    }

    #[test]
    fn full_file_parses() {
        let config = parse(
            r#"
ci_access:
  projects:
    - id: group/app
      default_namespace: app
      environments: ["review/*", production]
      protected_branches_only: true
      access_as:
        impersonate:
          username: deployer
          groups: [deployers]
          extra:
            - key: team
              val: [a, b]
  groups:
    - id: group
      access_as:
        ci_job: {}
user_access:
  access_as:
    user: {}
  projects:
    - id: group/app
  groups:
    - id: group
flux:
  reconcile_on_push: false
observability:
  logging:
    level: debug
    grpc_level: warn
"#,
        )
        .unwrap();
        let ci = config.ci_access.unwrap();
        assert_eq!(ci.projects[0].id.as_str(), "group/app");
        assert!(ci.projects[0].protected_branches_only);
        assert!(
            matches!(ci.projects[0].access_as, Some(CiAccessAs::Impersonate(ref i)) if i.username.as_str() == "deployer")
        );
        assert_eq!(ci.groups[0].access_as, Some(CiAccessAs::CiJob(Empty {})));
        assert_eq!(
            config.user_access.unwrap().access_as,
            Some(UserAccessAs::User(Empty {}))
        );
        assert_eq!(
            config.observability.unwrap().logging.unwrap().level,
            Some(LogLevel::Debug)
        );
        assert!(!config.flux.unwrap().reconcile_on_push());
        assert!(Flux::default().reconcile_on_push());
    }

    #[test]
    fn upstreams_webhook_receiver_url_is_refused_with_the_reason() {
        let (line, message) = invalid("flux:\n  webhook_receiver_url: http://webhook-receiver.flux-system.svc\n");
        assert_eq!(line, Some(2), "{message}");
        assert!(message.contains("flux.webhook_receiver_url is not used"), "{message}");
        assert!(message.contains("remove the key"), "{message}");
    }

    fn invalid(text: &str) -> (Option<usize>, String) {
        match parse(text) {
            Err(error @ ConfigError::Invalid { .. }) => (error.line(), error.to_string()),
            other => panic!("expected an invalid-file error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let (line, message) = invalid("user_access:\n  projects: []\nci_acess:\n  projects: []\n");
        assert_eq!(line, Some(3), "{message}");
        assert!(message.contains("ci_acess"), "{message}");
        assert!(message.starts_with(PATH), "{message}");
    }

    #[test]
    fn nested_unknown_key() {
        let (line, message) = invalid("ci_access:\n  projects:\n    - id: a\n      namespace: x\n");
        assert_eq!(line, Some(4), "{message}");
        assert!(message.contains("namespace"), "{message}");
    }

    #[test]
    fn wrong_type() {
        let (line, message) = invalid("ci_access:\n  projects:\n    - id: a\n      protected_branches_only: maybe\n");
        assert_eq!(line, Some(4), "{message}");
    }

    #[test]
    fn rules_inside_values() {
        let (_, message) = invalid("ci_access:\n  projects:\n    - id: ''\n");
        assert!(message.contains("must not be empty"), "{message}");
        let (_, message) = invalid("observability:\n  logging:\n    level: loud\n");
        assert!(message.contains("loud"), "{message}");
        let (_, message) =
            invalid("ci_access:\n  projects:\n    - id: a\n      access_as:\n        agent: {}\n        ci_job: {}\n");
        assert!(!message.is_empty());
    }

    #[test]
    fn too_many_entries() {
        let mut text = String::from("user_access:\n  projects:\n");
        for i in 0..=MAX_AUTHORIZED_ENTRIES {
            text.push_str(&format!("    - id: g/p{i}\n"));
        }
        let (_, message) = invalid(&text);
        assert!(message.contains("at most 500"), "{message}");
    }

    #[test]
    fn invalid_yaml_and_size() {
        let (line, message) = invalid("ci_access:\n  projects: [\n");
        assert!(line.is_some(), "{message}");
        let big = format!("# {}\n", "x".repeat(MAX_CONFIG_FILE_SIZE));
        assert!(matches!(parse(&big), Err(ConfigError::TooLarge { .. })));
        assert!(matches!(
            parse_config(PATH, &[0xff, 0xfe]),
            Err(ConfigError::NotUtf8 { .. })
        ));
    }
}
