//! Git over smart HTTP at `<external-url>/<full_path>.git`, served by the
//! real `git http-backend` as a CGI program. A personal access token is the
//! password (any user name), as with GitLab.
//!
//! Pushes run under the repository's lock; the refs before and after are
//! compared and every change is recorded as a push event.

use std::process::Stdio;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::TryStreamExt;
use glagent_core::access::AccessLevel;
use glagent_store::StoreError;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::Api;
use crate::auth::{Caller, authenticate};
use crate::error::ApiError;
use glagent_git::{Repos, ref_updates};

/// The largest request body of a Git request (a push's pack).
pub const MAX_PUSH: usize = 1 << 30;

const SUFFIXES: [&str; 3] = ["/info/refs", "/git-upload-pack", "/git-receive-pack"];

/// Whether a request path is a Git smart-HTTP request.
pub fn is_git_request(path: &str) -> bool {
    SUFFIXES.iter().any(|s| path.ends_with(s))
}

fn challenge(message: &str) -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, format!("{message}\n")).into_response();
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"glagent\""),
    );
    response
}

fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    decoded.split_once(':').map(|(_, password)| password.to_string())
}

pub async fn handle(State(state): State<Api>, request: Request) -> Response {
    match serve(&state, request).await {
        Ok(response) => response,
        Err(response) => response,
    }
}

async fn serve(state: &Api, request: Request) -> Result<Response, Response> {
    let path = request.uri().path().to_string();
    let (suffix, repo_part) = SUFFIXES
        .iter()
        .find_map(|s| path.strip_suffix(s).map(|rest| (*s, rest)))
        .ok_or_else(|| ApiError::NotFound("Route").into_response())?;
    let full_path = repo_part.trim_start_matches('/');
    let full_path = full_path.strip_suffix(".git").unwrap_or(full_path);
    let query = request.uri().query().unwrap_or("").to_string();
    let service = if suffix == "/info/refs" {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "service")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    } else {
        suffix.trim_start_matches('/').to_string()
    };
    let writes = match service.as_str() {
        "git-upload-pack" => false,
        "git-receive-pack" => true,
        _ => {
            return Err((
                StatusCode::FORBIDDEN,
                "only smart HTTP (git-upload-pack, git-receive-pack) is served\n",
            )
                .into_response());
        }
    };

    let Some(token) = basic_password(request.headers()) else {
        return Err(challenge(
            "authentication required: use a personal access token as the password",
        ));
    };
    let caller: Caller = authenticate(state, &token)
        .await
        .map_err(|_| challenge("HTTP Basic: Access denied. The token is unknown, revoked or expired"))?;
    let scope_ok = caller.token.has_scope("api")
        || (if writes {
            caller.token.has_scope("write_repository")
        } else {
            caller.token.has_scope("read_repository")
                || caller.token.has_scope("read_api")
                || caller.token.has_scope("write_repository")
        });
    if !scope_ok {
        return Err((
            StatusCode::FORBIDDEN,
            "the token lacks the scope for this (api, read_repository or write_repository)\n",
        )
            .into_response());
    }
    let project = match state.store.project_by_full_path(full_path).await {
        Ok(project) => project,
        Err(StoreError::NotFound) => return Err(not_found()),
        Err(error) => return Err(ApiError::from(error).into_response()),
    };
    let level = state
        .project_access(&caller.user, &project)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let Some(level) = level.filter(|l| l.can_read_code()) else {
        return Err(not_found());
    };
    if writes && level < AccessLevel::Developer {
        return Err((
            StatusCode::FORBIDDEN,
            "You are not allowed to push code to this project.\n",
        )
            .into_response());
    }

    let path_info = format!("/{}{}", Repos::dir_name(project.id), suffix);
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "A push is at most {} MiB on this server: push fewer commits at a time.\n",
                MAX_PUSH >> 20
            ),
        )
            .into_response()
    };
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_PUSH) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    // A chunked body is cut at the limit: git then refuses the truncated pack.
    let body = http_body_util::Limited::new(body, MAX_PUSH);
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", state.repos.root())
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &path_info)
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", &query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", &caller.user.username)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let content_length = header("content-length");
    if !content_length.is_empty() {
        command.env("CONTENT_LENGTH", content_length);
    }

    // A push holds the repository lock from before it starts until its
    // refs have been compared, so that concurrent commits are not mixed in.
    let change = if writes && parts.method == http::Method::POST {
        Some(state.change_repository(project.id).await)
    } else {
        None
    };
    let before = match &change {
        Some(change) => Some(
            change
                .repos()
                .refs(project.id)
                .await
                .map_err(|e| ApiError::from(e).into_response())?,
        ),
        None => None,
    };

    let mut child = command
        .spawn()
        .map_err(|e| ApiError::Internal(format!("starting git http-backend: {e}")).into_response())?;
    let mut stdin = child.stdin.take().expect("piped");
    tokio::spawn(async move {
        let mut reader = StreamReader::new(
            http_body_util::BodyDataStream::new(body).map_err(|e| std::io::Error::other(e.to_string())),
        );
        let _ = tokio::io::copy(&mut reader, &mut stdin).await;
    });
    let mut stderr = child.stderr.take().expect("piped");
    let project_id = project.id;
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        if !text.trim().is_empty() {
            tracing::warn!(project_id, stderr = %text.trim(), "git http-backend");
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let head = read_cgi_headers(&mut stdout).await;
    let body = if let (Some(change), Some(before)) = (change, before) {
        // Whatever went wrong in reading the answer, git may have moved
        // refs: wait for it, and record what moved before answering.
        let mut output = Vec::new();
        let read = match &head {
            Ok(_) => stdout.read_to_end(&mut output).await.map(|_| ()),
            Err(_) => Ok(()),
        };
        let _ = child.wait().await;
        let after = state.repos.refs(project.id).await;
        let updates = match &after {
            Ok(after) => ref_updates(&before, after),
            Err(_) => Vec::new(),
        };
        change.finish(Some(caller.user.id), &updates).await;
        if let Err(error) = after {
            return Err(ApiError::from(error).into_response());
        }
        read.map_err(|e| ApiError::Internal(format!("reading git http-backend output: {e}")).into_response())?;
        Body::from(output)
    } else {
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Body::from_stream(ReaderStream::new(stdout))
    };
    let (status, headers) =
        head.map_err(|e| ApiError::Internal(format!("reading git http-backend output: {e}")).into_response())?;
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "The project you were looking for could not be found or you don't have permission to view it.\n",
    )
        .into_response()
}

async fn read_cgi_headers<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<(StatusCode, HeaderMap)> {
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse::<u16>().ok());
            status = code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
        } else if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    Ok((status, headers))
}
