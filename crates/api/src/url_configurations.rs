//! Receptive agents' URL configurations, GitLab's
//! `/projects/:id/cluster_agents/:agent_id/url_configurations`: where kas
//! dials the agent, and how it proves itself (a JWT signed with an Ed25519
//! key kas makes for the configuration, or an mTLS client certificate).
//! One per agent; deleting it makes the agent a normal one again. The
//! private keys are sealed before they are stored and never shown.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use glagent_api_types as api;
use glagent_core::access::AccessLevel;
use glagent_core::receptive;
use glagent_store::{NewUrlConfiguration, StoreError};
use serde::Deserialize;

use super::agents::find_agent;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::input::Params;
use super::{entities, find_project, require};
use crate::Api;

/// GitLab answers 404 on every route while receptive agents are off.
fn enabled(state: &Api) -> ApiResult<()> {
    if state.settings.receptive_agents {
        Ok(())
    } else {
        Err(ApiError::NotFound("Route"))
    }
}

pub async fn list(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id)): Path<(String, i64)>,
) -> ApiResult<Json<Vec<api::UrlConfiguration>>> {
    enabled(&state)?;
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Maintainer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    let found = state.store.url_configuration(agent.id).await?;
    Ok(Json(found.iter().map(entities::url_configuration).collect()))
}

pub async fn get(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id, config_id)): Path<(String, i64, i64)>,
) -> ApiResult<Json<api::UrlConfiguration>> {
    enabled(&state)?;
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Maintainer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    match state.store.url_configuration(agent.id).await? {
        Some(config) if config.id == config_id => Ok(Json(entities::url_configuration(&config))),
        _ => Err(ApiError::NotFound("URL configuration")),
    }
}

#[derive(Deserialize)]
pub struct NewParams {
    url: Option<String>,
    ca_cert: Option<String>,
    tls_host: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
}

pub async fn create(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id)): Path<(String, i64)>,
    Params(params): Params<NewParams>,
) -> ApiResult<Response> {
    enabled(&state)?;
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Maintainer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    let bad = |e: receptive::ReceptiveError| ApiError::BadRequest(e.to_string());
    let url = params
        .url
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::BadRequest("url is missing".into()))?;
    receptive::validate_url(&url).map_err(bad)?;
    let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let ca_cert = given(params.ca_cert)
        .map(|v| receptive::pem("ca_cert", &v))
        .transpose()
        .map_err(bad)?;
    let tls_host = given(params.tls_host);
    if let Some(host) = &tls_host {
        receptive::validate_tls_host(host).map_err(bad)?;
    }
    let client_cert = given(params.client_cert)
        .map(|v| receptive::pem("client_cert", &v))
        .transpose()
        .map_err(bad)?;
    let client_key = given(params.client_key)
        .map(|v| receptive::pem("client_key", &v))
        .transpose()
        .map_err(bad)?;
    if client_cert.is_some() != client_key.is_some() {
        return Err(bad(receptive::ReceptiveError::ClientPair));
    }
    for (field, pem) in [("ca_cert", &ca_cert), ("client_cert", &client_cert)] {
        if let Some(pem) = pem {
            let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
            if !certs.is_ok_and(|c| !c.is_empty()) {
                return Err(ApiError::BadRequest(format!(
                    "{field} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                )));
            }
        }
    }
    if let Some(key) = &client_key
        && !matches!(rustls_pemfile::private_key(&mut key.as_bytes()), Ok(Some(_)))
    {
        return Err(ApiError::BadRequest(
            "client_key holds no PEM private key (-----BEGIN PRIVATE KEY-----)".into(),
        ));
    }
    if state.store.url_configuration(agent.id).await?.is_some() {
        return Err(ApiError::BadRequest(
            "URL configuration already exists for this agent".into(),
        ));
    }
    let context = glagent_services::sealed::url_configuration_context(agent.id);
    let seal = |secret: &[u8]| {
        state
            .sealer
            .seal(secret, &context)
            .map_err(|e| ApiError::Internal(e.to_string()))
    };
    let (public_key, private_key_sealed, client_key_sealed) = match &client_key {
        Some(key) => (None, None, Some(seal(key.as_bytes())?)),
        None => {
            let (private, public) =
                glagent_services::sealed::new_ed25519_key().map_err(|e| ApiError::Internal(e.to_string()))?;
            let public = base64::engine::general_purpose::STANDARD.encode(public);
            (Some(public), Some(seal(&private)?), None)
        }
    };
    let config = state
        .store
        .create_url_configuration(&NewUrlConfiguration {
            agent_id: agent.id,
            url,
            ca_cert,
            tls_host,
            client_cert,
            client_key_sealed,
            public_key,
            private_key_sealed,
            created_by_user_id: caller.user.id,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => ApiError::BadRequest(message),
            other => other.into(),
        })?;
    tracing::info!(agent_id = agent.id, url = %config.url, mtls = config.client_cert.is_some(), "URL configuration created: the agent is receptive");
    state.events.url_configurations_changed();
    Ok((StatusCode::CREATED, Json(entities::url_configuration(&config))).into_response())
}

pub async fn delete(
    State(state): State<Api>,
    caller: Caller,
    Path((id, agent_id, config_id)): Path<(String, i64, i64)>,
) -> ApiResult<StatusCode> {
    enabled(&state)?;
    let (project, level) = find_project(&state, &caller, &id).await?;
    require(level, AccessLevel::Maintainer)?;
    let agent = find_agent(&state, &project, agent_id).await?;
    match state.store.delete_url_configuration(agent.id, config_id).await {
        Ok(()) => {
            tracing::info!(
                agent_id = agent.id,
                "URL configuration deleted: the agent is a normal agent again"
            );
            state.events.url_configurations_changed();
            Ok(StatusCode::NO_CONTENT)
        }
        Err(StoreError::NotFound) => Err(ApiError::NotFound("URL configuration")),
        Err(other) => Err(other.into()),
    }
}
