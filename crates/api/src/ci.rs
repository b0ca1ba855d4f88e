//! The CI integration API for an external CI system: register a job and get
//! its job token; the job asks which agents it may use and gets a
//! KUBECONFIG for them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use glagent_api_types as api;
use glagent_core::access::AccessLevel;
use glagent_core::secret;
use glagent_store::{CiJob, NewCiJob, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::input::{Params, opt_bool, opt_int};
use super::{entities, find_project, require};
use crate::Api;
use glagent_services::ci;
use glagent_services::environments::KubernetesTarget;
use glagent_services::events::AccessChange;

#[derive(Deserialize)]
pub struct NewJobParams {
    project_id: Option<Value>,
    #[serde(default, deserialize_with = "opt_int")]
    pipeline_id: Option<i64>,
    #[serde(default, deserialize_with = "opt_int")]
    job_id: Option<i64>,
    #[serde(rename = "ref")]
    ref_name: Option<String>,
    #[serde(default, deserialize_with = "opt_bool")]
    ref_protected: Option<bool>,
    environment: Option<String>,
    environment_tier: Option<String>,
    /// As the CI keyword `environment:kubernetes`: `agent`
    /// (`<project path>:<agent name>`), `namespace`, `flux_resource_path`.
    environment_kubernetes: Option<KubernetesParams>,
    #[serde(default, deserialize_with = "opt_int")]
    user_id: Option<i64>,
    #[serde(default, deserialize_with = "opt_int")]
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
pub struct KubernetesParams {
    agent: Option<String>,
    namespace: Option<String>,
    flux_resource_path: Option<String>,
}

const TIERS: &[&str] = &["production", "staging", "testing", "development", "other"];

/// `POST /ci/jobs`: a job of `project_id` starts, running as `user_id`
/// (default: the caller; only administrators may name someone else).
pub async fn create_job(
    State(state): State<Api>,
    caller: Caller,
    Params(p): Params<NewJobParams>,
) -> ApiResult<Response> {
    let project_ref = match p.project_id {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Err(ApiError::BadRequest("project_id is missing".into())),
    };
    let job_id = p
        .job_id
        .filter(|j| *j > 0)
        .ok_or_else(|| ApiError::BadRequest("job_id is missing (a positive integer)".into()))?;
    let pipeline_id = p
        .pipeline_id
        .filter(|j| *j > 0)
        .ok_or_else(|| ApiError::BadRequest("pipeline_id is missing (a positive integer)".into()))?;
    let ref_name = p
        .ref_name
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::BadRequest("ref is missing".into()))?;
    let given_tier = p.environment_tier.clone();
    let tier = match (&p.environment, p.environment_tier) {
        (None, Some(_)) => return Err(ApiError::BadRequest("environment_tier needs an environment".into())),
        (Some(_), Some(tier)) if !TIERS.contains(&tier.as_str()) => {
            return Err(ApiError::BadRequest(format!(
                "environment_tier {tier:?} is not one of {}",
                TIERS.join(", ")
            )));
        }
        (Some(_), None) => Some("other".to_string()),
        (_, tier) => tier,
    };
    let kubernetes = match p.environment_kubernetes {
        None => None,
        Some(_) if p.environment.is_none() => {
            return Err(ApiError::BadRequest(
                "environment_kubernetes needs an environment".into(),
            ));
        }
        Some(k) => {
            let target = KubernetesTarget {
                agent: k.agent.filter(|a| !a.is_empty()).ok_or_else(|| {
                    ApiError::BadRequest("environment_kubernetes needs an agent (<project path>:<agent name>)".into())
                })?,
                namespace: k.namespace.filter(|n| !n.is_empty()),
                flux_resource_path: k.flux_resource_path.filter(|f| !f.is_empty()),
            };
            target.validate()?;
            Some(target)
        }
    };
    if let Some(name) = p.environment.as_deref().filter(|e| !e.is_empty()) {
        glagent_core::environment::validate_name(name).map_err(|e| ApiError::BadRequest(format!("environment {e}")))?;
    }
    let expires_in = p.expires_in.unwrap_or(3600);
    if !(1..=86_400).contains(&expires_in) {
        return Err(ApiError::BadRequest(
            "expires_in must be between 1 and 86400 seconds".into(),
        ));
    }
    let (project, caller_level) = find_project(&state, &caller, &project_ref).await?;
    let user = match p.user_id {
        Some(id) if id != caller.user.id => {
            if !caller.user.is_admin {
                return Err(ApiError::ForbiddenBecause(
                    "only administrators may register jobs for another user".into(),
                ));
            }
            state.store.user(id).await.map_err(|_| ApiError::NotFound("User"))?
        }
        _ => caller.user.clone(),
    };
    let level = if user.id == caller.user.id {
        caller_level
    } else {
        state
            .project_access(&user, &project)
            .await?
            .ok_or(ApiError::NotFound("Project"))?
    };
    require(level, AccessLevel::Developer)?;
    let token = secret::new_job_token();
    let expires_at = glagent_store::Timestamp::from_now(std::time::Duration::from_secs(expires_in as u64));
    let job = state
        .store
        .create_ci_job(&NewCiJob {
            job_id,
            project_id: project.id,
            pipeline_id,
            user_id: user.id,
            ref_name,
            ref_protected: p.ref_protected.unwrap_or(false),
            environment_slug: p.environment.clone().filter(|e| !e.is_empty()),
            environment_tier: tier,
            token_digest: token.digest(),
            expires_at,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => ApiError::BadRequest(message),
            other => other.into(),
        })?;
    tracing::info!(job_id, project_id = project.id, "CI job registered");
    // The job deploys: its environment exists from now on, linked to a
    // cluster by its first deployment that names one.
    if let Some(name) = p.environment.as_deref().filter(|e| !e.is_empty()) {
        state
            .environment_for_job(&project, name, given_tier.as_deref(), &user, kubernetes.as_ref())
            .await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(entities::created_ci_job(&job, token.expose())),
    )
        .into_response())
}

/// `DELETE /ci/jobs/:job_id`: the job ended; its token stops working.
pub async fn finish_job(State(state): State<Api>, caller: Caller, Path(job_id): Path<i64>) -> ApiResult<StatusCode> {
    let job = state
        .store
        .ci_job(job_id)
        .await
        .map_err(|_| ApiError::NotFound("Job"))?;
    let project = state.store.project(job.project_id).await?;
    let level = state.project_access(&caller.user, &project).await?;
    if job.user_id != caller.user.id && level < Some(AccessLevel::Maintainer) {
        return Err(ApiError::NotFound("Job"));
    }
    state.store.finish_ci_job(job_id).await?;
    state.events.access_changed(AccessChange::CiJobFinished { job_id });
    Ok(StatusCode::NO_CONTENT)
}

/// The job token of a request: `JOB-TOKEN`, `Authorization: Bearer` or
/// `?job_token=`.
async fn job_from_request(state: &Api, headers: &HeaderMap, uri: &Uri) -> ApiResult<(CiJob, String)> {
    let from_query = || {
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "job_token")
            .map(|(_, v)| v.into_owned())
    };
    let token = headers
        .get("job-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .or_else(from_query)
        .ok_or(ApiError::Unauthorized)?;
    let job = state
        .store
        .ci_job_by_token_digest(&secret::digest(token.trim()))
        .await
        .map_err(|_| ApiError::Unauthorized)?;
    if !job.is_active() {
        return Err(ApiError::Unauthorized);
    }
    Ok((job, token.trim().to_string()))
}

/// `GET /job/allowed_agents`, in GitLab's shape.
pub async fn allowed_agents(
    State(state): State<Api>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<api::AllowedAgents>> {
    let (job, _) = job_from_request(&state, &headers, &uri).await?;
    let allowed = ci::allowed_agents(&state.store, &state.configs, &job).await?;
    let project = state.store.project(job.project_id).await?;
    let user = state.store.user(job.user_id).await?;
    let groups = state
        .namespace_chain(project.namespace_id)
        .await?
        .iter()
        .filter(|ns| ns.is_group())
        .map(|ns| api::Id { id: ns.id })
        .collect();
    let allowed_agents = allowed
        .iter()
        .map(|a| api::AllowedAgent {
            config_project: api::Id {
                id: a.config_project.id,
            },
            configuration: api::AllowedAgentConfiguration {
                access_as: a.entry.access_as.clone(),
                default_namespace: a.entry.default_namespace.clone(),
            },
            id: a.agent.id,
        })
        .collect();
    Ok(Json(api::AllowedAgents {
        allowed_agents,
        environment: job.environment_slug.map(|slug| api::JobEnvironment {
            slug,
            tier: job.environment_tier,
        }),
        job: api::Id { id: job.job_id },
        pipeline: api::Id { id: job.pipeline_id },
        project: api::JobProject { groups, id: project.id },
        user: api::JobUser {
            id: user.id,
            username: user.username,
        },
    }))
}

/// `GET /job/kubeconfig`: the job's KUBECONFIG, as GitLab writes it.
pub async fn kubeconfig(State(state): State<Api>, headers: HeaderMap, uri: Uri) -> ApiResult<Response> {
    let (job, token) = job_from_request(&state, &headers, &uri).await?;
    let allowed = ci::allowed_agents(&state.store, &state.configs, &job).await?;
    let mut cluster = json!({"server": state.urls.k8s_proxy()});
    if let Some(ca) = state.urls.ca_pem() {
        use base64::Engine;
        cluster["certificate-authority-data"] = json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    let users: Vec<Value> = allowed
        .iter()
        .map(|a| json!({"name": format!("agent:{}", a.agent.id), "user": {"token": format!("ci:{}:{token}", a.agent.id)}}))
        .collect();
    let contexts: Vec<Value> = allowed
        .iter()
        .map(|a| {
            let mut context = json!({"cluster": "gitlab", "user": format!("agent:{}", a.agent.id)});
            if let Some(ns) = &a.entry.default_namespace {
                context["namespace"] = json!(ns);
            }
            json!({"name": format!("{}:{}", a.config_project.full_path, a.agent.name), "context": context})
        })
        .collect();
    let mut config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gitlab", "cluster": cluster}],
        "users": users,
        "contexts": contexts,
    });
    if let [only] = allowed.as_slice() {
        config["current-context"] = json!(format!("{}:{}", only.config_project.full_path, only.agent.name));
    }
    let yaml = serde_saphyr::to_string(&config).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(http::header::CONTENT_TYPE, "application/yaml")], yaml).into_response())
}
