//! From credentials to an authorised caller: which agent the request is
//! for, and which identity (if any) kas imposes on it at the API server.
//!
//! Credentials are `Authorization: Bearer <kind>:<agent id>:<secret>`:
//! `pat:` with a personal access token that has the `k8s_proxy` scope (the
//! agent's `user_access` decides), or `ci:` with a CI job token (its
//! `ci_access` decides). The rules are `glagent_core::identity`; this
//! module gathers their facts. Decisions are kept for a few seconds, so a
//! burst of requests (kubectl sends several per command) costs one, and
//! forgotten at once when access changes.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use glagent_core::identity::{Impersonation, UserFacts, user_identity};
use glagent_core::secret;
use glagent_services::Services;
use glagent_services::access::user_access_roles;
use glagent_services::auth::{AuthError, authenticate};
use glagent_services::cache::TtlCache;
use glagent_services::configs::LoadError;
use glagent_services::sessions;
use glagent_store::{StoreError, User};

use crate::error::ProxyError;

/// Who may use which agent, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorized {
    pub agent_id: i64,
    /// The identity imposed on the request; `None`: the agent's own.
    pub impersonation: Option<Impersonation>,
    /// Who asked; `None` for a request another replica decided (and
    /// records).
    pub caller: Option<Caller>,
}

/// Who is behind a request, for metrics and the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// `personal_access_token`, `session_cookie` or `ci_job`.
    pub credential: &'static str,
    pub user_id: i64,
    pub username: String,
    /// The CI job, for a job's token.
    pub job: Option<JobRef>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobRef {
    pub project_id: i64,
    pub pipeline_id: i64,
    pub job_id: i64,
}

/// The kinds of credential the proxy takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    PersonalAccessToken,
    CiJob,
}

/// A parsed `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub struct Credential<'a> {
    pub kind: CredentialKind,
    pub agent_id: i64,
    pub secret: &'a str,
}

impl<'a> Credential<'a> {
    /// Reads exactly one `Authorization: Bearer <kind>:<agent id>:<secret>`.
    pub fn from_headers(headers: &'a HeaderMap) -> Result<Credential<'a>, ProxyError> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(ProxyError::Unauthorized(
                "send exactly one Authorization header: Bearer pat:<agent id>:<personal access token>".into(),
            ));
        };
        let value = value.to_str().unwrap_or_default();
        let credential = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, c)| c.trim())
            .ok_or_else(|| {
                ProxyError::Unauthorized("the Authorization header must be Bearer <type>:<agent id>:<secret>".into())
            })?;
        let mut fields = credential.splitn(3, ':');
        let (Some(kind), Some(agent_id), Some(secret)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(ProxyError::Unauthorized(
                "the bearer token must look like pat:<agent id>:<personal access token> or ci:<agent id>:<job token>"
                    .into(),
            ));
        };
        let agent_id = agent_id
            .parse()
            .map_err(|_| ProxyError::Unauthorized(format!("{agent_id:?} is not an agent id")))?;
        let kind = match kind {
            "pat" => CredentialKind::PersonalAccessToken,
            "ci" => CredentialKind::CiJob,
            other => {
                return Err(ProxyError::Unauthorized(format!(
                    "unknown token type {other:?}: use pat or ci"
                )));
            }
        };
        Ok(Credential { kind, agent_id, secret })
    }
}

/// Recent decisions, by the digest of the `Authorization` header.
pub struct DecisionCache(TtlCache<String, Authorized>);

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache(TtlCache::new(Duration::from_secs(5)))
    }
}

impl DecisionCache {
    /// Forgets every decision (access changed somewhere).
    pub fn clear(&self) {
        self.0.clear();
    }
}

/// A browser's session credential: the cookie, the agent and the CSRF
/// token, each exactly once.
#[derive(Debug, PartialEq, Eq)]
pub struct SessionCredential {
    pub agent_id: i64,
    pub session: String,
    pub csrf: String,
}

/// The one value of a header that must be sent exactly once.
fn exactly_one<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ProxyError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value
            .to_str()
            .map_err(|_| ProxyError::Unauthorized(format!("the {name} header is not text"))),
        _ => Err(ProxyError::Unauthorized(format!(
            "a browser session must send exactly one {name} header"
        ))),
    }
}

impl SessionCredential {
    /// A session credential, if the request has no `Authorization` but
    /// the proxy's session cookie. `origin` is kas's own: a request that
    /// says it comes from elsewhere is refused.
    pub fn from_headers(headers: &HeaderMap, origin: &str) -> Option<Result<SessionCredential, ProxyError>> {
        if headers.contains_key(header::AUTHORIZATION) {
            return None;
        }
        let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
        let session = sessions::cookie(cookies, sessions::PROXY_COOKIE)?;
        Some((|| {
            if let Some(sent) = headers.get(header::ORIGIN)
                && sent.to_str().ok() != Some(origin)
            {
                return Err(ProxyError::Unauthorized(format!(
                    "a browser session may only be used from {origin}"
                )));
            }
            let agent = exactly_one(headers, "gitlab-agent-id")?;
            let agent_id = agent
                .trim()
                .parse()
                .map_err(|_| ProxyError::Unauthorized(format!("Gitlab-Agent-Id {agent:?} is not an agent id")))?;
            let csrf = exactly_one(headers, "x-csrf-token")?.trim().to_string();
            Ok(SessionCredential {
                agent_id,
                session,
                csrf,
            })
        })())
    }
}

/// Authenticates and authorises a request.
pub async fn authorize(
    services: &Services,
    decisions: &DecisionCache,
    headers: &HeaderMap,
) -> Result<Authorized, ProxyError> {
    let origin = services.urls.origin();
    if let Some(session) = SessionCredential::from_headers(headers, &origin) {
        return authorize_session(services, session?).await;
    }
    let credential = Credential::from_headers(headers)?;
    let key = format!(
        "{:?}:{}:{}",
        credential.kind,
        credential.agent_id,
        secret::digest(credential.secret)
    );
    if let Some(authorized) = decisions.0.get(&key) {
        return Ok(authorized);
    }
    // A change of access while deciding must not leave this decision cached.
    let generation = decisions.0.generation();
    let authorized = match credential.kind {
        CredentialKind::PersonalAccessToken => authorize_user(services, credential.agent_id, credential.secret).await?,
        CredentialKind::CiJob => authorize_job(services, credential.agent_id, credential.secret).await?,
    };
    decisions.0.insert_unless_changed(key, authorized.clone(), generation);
    Ok(authorized)
}

async fn authorize_session(services: &Services, credential: SessionCredential) -> Result<Authorized, ProxyError> {
    let Some(user) = sessions::user(&services.store, &credential.session).await? else {
        return Err(ProxyError::Unauthorized(
            "the browser session has ended: sign in again".into(),
        ));
    };
    if !sessions::csrf_matches(&credential.session, &credential.csrf) {
        return Err(ProxyError::Unauthorized(
            "the X-Csrf-Token header does not belong to this session: reload the page".into(),
        ));
    }
    authorize_person(services, &user, credential.agent_id, "session_cookie").await
}

async fn authorize_user(services: &Services, agent_id: i64, secret: &str) -> Result<Authorized, ProxyError> {
    let caller = authenticate(&services.store, secret).await.map_err(|e| match e {
        AuthError::Unauthorized => ProxyError::Unauthorized(e.to_string()),
        AuthError::Store(e) => e.into(),
    })?;
    if !caller.token.has_scope("k8s_proxy") {
        return Err(ProxyError::Forbidden(
            "the personal access token needs the k8s_proxy scope".into(),
        ));
    }
    authorize_person(services, &caller.user, agent_id, "personal_access_token").await
}

/// A person through an agent: its `user_access` decides, whatever the
/// credential.
async fn authorize_person(
    services: &Services,
    user: &User,
    agent_id: i64,
    access_type: &'static str,
) -> Result<Authorized, ProxyError> {
    let denied = || ProxyError::Forbidden(format!("agent {agent_id} does not exist or does not grant you access"));
    let agent = match services.store.agent_by_id(agent_id).await {
        Ok(agent) => agent,
        Err(StoreError::NotFound) => return Err(denied()),
        Err(error) => return Err(error.into()),
    };
    let project = match services.store.project(agent.project_id).await {
        Ok(project) => project,
        Err(StoreError::NotFound) => return Err(denied()),
        Err(error) => return Err(error.into()),
    };
    let config = services.configs.current(&project, &agent).await.map_err(|e| match e {
        LoadError::Invalid(_) => ProxyError::Forbidden(e.to_string()),
        LoadError::Git(e) => ProxyError::Internal(e.to_string()),
    })?;
    let roles = match &config.user_access {
        Some(access) => user_access_roles(&services.store, user, access).await?,
        None => Default::default(),
    };
    let facts = UserFacts {
        agent_id: agent.id,
        config_project_id: project.id,
        username: &user.username,
        project_roles: &roles.projects,
        group_roles: &roles.groups,
        access_type,
    };
    let impersonation =
        user_identity(config.user_access.as_ref(), &facts).map_err(|e| ProxyError::Forbidden(e.to_string()))?;
    Ok(Authorized {
        agent_id: agent.id,
        impersonation,
        caller: Some(Caller {
            credential: access_type,
            user_id: user.id,
            username: user.username.clone(),
            job: None,
        }),
    })
}

async fn authorize_job(services: &Services, agent_id: i64, secret: &str) -> Result<Authorized, ProxyError> {
    let job = match services.store.ci_job_by_token_digest(&secret::digest(secret)).await {
        Ok(job) => job,
        Err(StoreError::NotFound) => return Err(ProxyError::Unauthorized("the CI job token is unknown".into())),
        Err(error) => return Err(error.into()),
    };
    if !job.is_active() {
        return Err(ProxyError::Unauthorized(
            "the CI job token has expired or its job has ended".into(),
        ));
    }
    let allowed = glagent_services::ci::allowed_agents(&services.store, &services.configs, &job).await?;
    let Some(allowed) = allowed.into_iter().find(|a| a.agent.id == agent_id) else {
        return Err(ProxyError::Forbidden(format!(
            "agent {agent_id} is not allowed for this job: its ci_access must list the job's project or a group above it, \
             and match the job's environment and branch protection"
        )));
    };
    let impersonation = glagent_services::ci::identity(&services.store, &job, &allowed).await?;
    let user = services.store.user(job.user_id).await?;
    Ok(Authorized {
        agent_id,
        impersonation,
        caller: Some(Caller {
            credential: "ci_job",
            user_id: user.id,
            username: user.username,
            job: Some(JobRef {
                project_id: job.project_id,
                pipeline_id: job.pipeline_id,
                job_id: job.job_id,
            }),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_static(value));
        }
        headers
    }

    fn refusal(values: &[&'static str]) -> String {
        match Credential::from_headers(&headers(values)) {
            Err(ProxyError::Unauthorized(message)) => message,
            other => panic!("{values:?}: expected a 401, got {other:?}"),
        }
    }

    #[test]
    fn credentials_name_their_kind_agent_and_secret() {
        let pat = headers(&["Bearer pat:7:glpat-abc:def"]);
        assert_eq!(
            Credential::from_headers(&pat).unwrap(),
            Credential {
                kind: CredentialKind::PersonalAccessToken,
                agent_id: 7,
                secret: "glpat-abc:def",
            }
        );
        let ci = headers(&["bearer ci:12:glcbt-x"]);
        assert_eq!(Credential::from_headers(&ci).unwrap().kind, CredentialKind::CiJob);
    }

    fn session_headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn a_browser_session_needs_one_agent_one_csrf_token_and_kas_s_origin() {
        const ORIGIN: &str = "https://kas.example";
        let read =
            |pairs: &[(&'static str, &'static str)]| SessionCredential::from_headers(&session_headers(pairs), ORIGIN);
        let good = [
            ("cookie", "_glagent_session=s; _glagent_kas=abc123"),
            ("gitlab-agent-id", "7"),
            ("x-csrf-token", "ff00"),
            ("origin", ORIGIN),
        ];
        assert_eq!(
            read(&good).unwrap().unwrap(),
            SessionCredential {
                agent_id: 7,
                session: "abc123".into(),
                csrf: "ff00".into()
            }
        );
        assert!(read(&good[1..]).is_none(), "no cookie: not a session");
        let mut with_bearer = good.to_vec();
        with_bearer.push(("authorization", "Bearer pat:7:glpat-x"));
        assert!(read(&with_bearer).is_none(), "a bearer token wins");
        let refused = |pairs: &[(&'static str, &'static str)]| match read(pairs) {
            Some(Err(ProxyError::Unauthorized(message))) => message,
            other => panic!("{pairs:?}: expected a 401, got {other:?}"),
        };
        assert!(refused(&[good[0], good[1], good[1], good[2]]).contains("exactly one gitlab-agent-id"));
        assert!(refused(&[good[0], good[1], good[2], good[2]]).contains("exactly one x-csrf-token"));
        assert!(refused(&[good[0], good[2]]).contains("exactly one gitlab-agent-id"));
        assert!(refused(&[good[0], good[1]]).contains("exactly one x-csrf-token"));
        assert!(
            refused(&[good[0], good[1], good[2], ("origin", "https://evil.example")])
                .contains("only be used from https://kas.example")
        );
    }

    #[test]
    fn bad_credentials_say_what_to_send() {
        assert!(refusal(&[]).contains("exactly one Authorization header"));
        assert!(refusal(&["Bearer pat:1:a", "Bearer pat:1:b"]).contains("exactly one"));
        assert!(refusal(&["Basic dXNlcjpwYXNz"]).contains("must be Bearer"));
        assert!(refusal(&["Bearer glpat-abc"]).contains("pat:<agent id>:<personal access token>"));
        assert!(refusal(&["Bearer pat:seven:glpat-abc"]).contains("\"seven\" is not an agent id"));
        assert!(refusal(&["Bearer job:7:x"]).contains("unknown token type \"job\""));
    }
}
