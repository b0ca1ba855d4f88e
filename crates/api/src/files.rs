//! The Repository Files API: read a file, or commit one change to a branch.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use glagent_api_types::{CommittedFile, RepositoryFile};
use glagent_core::access::AccessLevel;
use glagent_store::Project;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::input::{Params, Query};
use super::projects::validate_branch;
use super::{find_project, require};
use crate::Api;
use glagent_git::{Author, FileBlob, FileChange, FileCommit};

/// A path inside the repository: relative, no `..`, no `.git`.
fn validate_file_path(path: &str) -> ApiResult<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.ends_with('/')
        || path.contains('\0')
        || path
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg == ".git");
    if bad {
        Err(ApiError::BadRequest(format!(
            "file_path {path:?} is not a valid file path: use a relative path without '..', '.git' or empty segments"
        )))
    } else {
        Ok(())
    }
}

#[derive(Deserialize)]
pub struct ReadQuery {
    #[serde(rename = "ref")]
    rev: Option<String>,
}

async fn read(
    state: &Api,
    caller: &Caller,
    id: &str,
    file_path: &str,
    rev: Option<String>,
) -> ApiResult<(Project, String, FileBlob)> {
    let (project, level) = find_project(state, caller, id).await?;
    require(level, AccessLevel::Reporter)?;
    validate_file_path(file_path)?;
    let rev = rev
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| project.default_branch.clone());
    let blob = state
        .repos
        .read_file(project.id, &rev, file_path)
        .await?
        .ok_or(ApiError::NotFound("File"))?;
    Ok((project, rev, blob))
}

pub async fn get(
    State(state): State<Api>,
    caller: Caller,
    Path((id, file_path)): Path<(String, String)>,
    Query(query): Query<ReadQuery>,
) -> ApiResult<Response> {
    let (_, rev, blob) = read(&state, &caller, &id, &file_path, query.rev).await?;
    let file_name = file_path.rsplit('/').next().unwrap_or(&file_path).to_string();
    Ok(Json(RepositoryFile {
        blob_id: blob.blob_id,
        commit_id: blob.commit_id,
        content: BASE64.encode(&blob.content),
        content_sha256: glagent_core::secret::digest_bytes(&blob.content),
        encoding: "base64".into(),
        file_name,
        file_path,
        last_commit_id: blob.last_commit_id,
        ref_name: rev,
        size: blob.content.len() as u64,
    })
    .into_response())
}

pub async fn raw(
    State(state): State<Api>,
    caller: Caller,
    Path((id, file_path)): Path<(String, String)>,
    Query(query): Query<ReadQuery>,
) -> ApiResult<Response> {
    let (_, _, blob) = read(&state, &caller, &id, &file_path, query.rev).await?;
    Ok((
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        blob.content,
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct WriteParams {
    branch: Option<String>,
    start_branch: Option<String>,
    content: Option<String>,
    encoding: Option<String>,
    commit_message: Option<String>,
    author_name: Option<String>,
    author_email: Option<String>,
}

enum Kind {
    Create,
    Update,
    Delete,
}

async fn write(
    state: Api,
    caller: Caller,
    id: String,
    file_path: String,
    params: WriteParams,
    kind: Kind,
) -> ApiResult<Response> {
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Developer)?;
    validate_file_path(&file_path)?;
    let branch = params
        .branch
        .filter(|b| !b.is_empty())
        .ok_or_else(|| ApiError::BadRequest("branch is missing".into()))?;
    validate_branch(&branch)?;
    if let Some(start) = &params.start_branch {
        validate_branch(start)?;
    }
    let message = params
        .commit_message
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("commit_message is missing".into()))?;
    let content = || -> ApiResult<Vec<u8>> {
        let text = params
            .content
            .clone()
            .ok_or_else(|| ApiError::BadRequest("content is missing".into()))?;
        match params.encoding.as_deref().unwrap_or("text") {
            "text" => Ok(text.into_bytes()),
            "base64" => BASE64
                .decode(text.trim())
                .map_err(|e| ApiError::BadRequest(format!("content is not valid base64: {e}"))),
            other => Err(ApiError::BadRequest(format!(
                "encoding {other:?} is not supported: use text or base64"
            ))),
        }
    };
    let change = match kind {
        Kind::Create => FileChange::Create(content()?),
        Kind::Update => FileChange::Update(content()?),
        Kind::Delete => FileChange::Delete,
    };
    let author = Author {
        name: params.author_name.unwrap_or_else(|| caller.user.name.clone()),
        email: params
            .author_email
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| format!("{}@users.noreply.glagent", caller.user.username)),
    };
    let repository = state.change_repository(project.id).await;
    let update = repository
        .repos()
        .commit_file(
            project.id,
            FileCommit {
                branch: &branch,
                start_branch: params.start_branch.as_deref(),
                path: &file_path,
                change,
                message: &message,
                author: &author,
            },
        )
        .await?;
    repository
        .finish(Some(caller.user.id), std::slice::from_ref(&update))
        .await;
    let committed = Json(CommittedFile { branch, file_path });
    Ok(match kind {
        Kind::Delete => StatusCode::NO_CONTENT.into_response(),
        Kind::Create => (StatusCode::CREATED, committed).into_response(),
        Kind::Update => (StatusCode::OK, committed).into_response(),
    })
}

pub async fn create(
    State(state): State<Api>,
    caller: Caller,
    Path((id, file_path)): Path<(String, String)>,
    Params(params): Params<WriteParams>,
) -> ApiResult<Response> {
    write(state, caller, id, file_path, params, Kind::Create).await
}

pub async fn update(
    State(state): State<Api>,
    caller: Caller,
    Path((id, file_path)): Path<(String, String)>,
    Params(params): Params<WriteParams>,
) -> ApiResult<Response> {
    write(state, caller, id, file_path, params, Kind::Update).await
}

pub async fn delete(
    State(state): State<Api>,
    caller: Caller,
    Path((id, file_path)): Path<(String, String)>,
    Params(params): Params<WriteParams>,
) -> ApiResult<Response> {
    write(state, caller, id, file_path, params, Kind::Delete).await
}
