//! Groups, projects and their namespaces, and the Repository Files API.

use serde::{Deserialize, Serialize};

/// Who may see a group or project. glagent's are all private.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Private,
    Internal,
    Public,
}

/// A group, as GitLab's Groups API shows one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub created_at: String,
    pub description: String,
    /// The full path with ` / ` between the parts.
    pub full_name: String,
    pub full_path: String,
    pub id: i64,
    pub name: String,
    pub parent_id: Option<i64>,
    pub path: String,
    pub visibility: Visibility,
    pub web_url: String,
}

/// What a namespace belongs to: a user (their personal namespace) or a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceKind {
    User,
    Group,
}

/// A project's namespace, as GitLab embeds it in a project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub full_path: String,
    pub id: i64,
    pub kind: NamespaceKind,
    pub name: String,
    pub parent_id: Option<i64>,
    pub path: String,
    pub web_url: String,
}

/// A project, as GitLab's Projects API shows one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub created_at: String,
    pub creator_id: i64,
    pub default_branch: String,
    pub description: String,
    /// Git over HTTP: `<base>/<full path>.git`.
    pub http_url_to_repo: String,
    pub id: i64,
    pub name: String,
    /// The namespace's full path and the name, with ` / ` between the parts.
    pub name_with_namespace: String,
    pub namespace: Namespace,
    pub path: String,
    /// The project's full path.
    pub path_with_namespace: String,
    /// Always `null`: glagent serves Git over HTTP only.
    pub ssh_url_to_repo: Option<String>,
    pub visibility: Visibility,
    pub web_url: String,
}

/// A file read through GitLab's Repository Files API
/// (`GET /projects/:id/repository/files/:file_path`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryFile {
    pub blob_id: String,
    /// The commit `ref` resolved to.
    pub commit_id: String,
    /// The file's bytes, encoded as `encoding` says.
    pub content: String,
    pub content_sha256: String,
    /// Always `base64`.
    pub encoding: String,
    pub file_name: String,
    pub file_path: String,
    /// The last commit that changed the file.
    pub last_commit_id: String,
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// In bytes, before encoding.
    pub size: u64,
}

/// A file created or updated through the Repository Files API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedFile {
    pub branch: String,
    pub file_path: String,
}
