//! The REST API's entities: what kas serializes under `/api/v4` and what
//! the CLI and the tests deserialize, so that all three share one
//! definition of every field.
//!
//! The shapes are GitLab's (same field names, same `null`s), plus a few
//! glagent extensions that say so in their docs. kas builds these from its
//! store types in `glagent-api`; this crate knows no store and does no I/O.
//!
//! Two rules keep the JSON byte for byte what kas has always sent, because
//! clients (python-gitlab, scripts) have seen it:
//!
//! - fields are declared in the byte order of their JSON names, since kas
//!   used to send `serde_json::Value` objects, whose keys serde_json sorts;
//!   a test checks every entity serializes in that order;
//! - values of other crates' types ([`glagent_proto::AgentInfo`],
//!   [`glagent_core::agent_config::AgentConfig`]) go through
//!   `serde_json::Value` for the same reason, so their keys stay sorted.
//!
//! A field that is always sent is a plain field (`Option` when it may be
//! `null`); a field that is sometimes left out has
//! `skip_serializing_if = "Option::is_none"`.

mod agents;
mod ci;
mod environments;
mod meta;
mod projects;
mod users;

pub use agents::{
    Agent, AgentConfiguration, AgentToken, AgentTokenStatus, AuditEvent, AuditJob, AuditUser, ConfigProject,
    ConfigurationError, Connection, ConnectionWarning, CreatedAgentToken, InstallCommand, UrlConfiguration,
};
pub use ci::{
    AllowedAgent, AllowedAgentConfiguration, AllowedAgents, CreatedCiJob, Id, JobEnvironment, JobProject, JobUser,
};
pub use environments::Environment;
pub use meta::{KasMetadata, Message, Metadata, Version};
pub use projects::{CommittedFile, Group, Namespace, NamespaceKind, Project, RepositoryFile, Visibility};
pub use users::{CreatedPersonalAccessToken, Member, PersonalAccessToken, User};

/// What an agent reports about itself, as [`Connection::metadata`] carries it.
pub use glagent_proto::{AgentInfo, KubernetesVersion};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serializes through `serde_json::Value`, whose objects sort their keys:
/// for the types of other crates, declared in another order.
fn sorted_keys<T: Serialize, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(value)
        .map_err(serde::ser::Error::custom)?
        .serialize(serializer)
}

/// For a field that may be absent, `null` or a value: a present `null` is
/// `Some(None)` (serde alone would make it `None`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests;
