//! `GET /metadata` and `GET /version`, in GitLab's shape.

use axum::Json;
use axum::extract::State;
use glagent_api_types::{KasMetadata, Metadata, Version};

use super::auth::Caller;
use crate::Api;

fn revision() -> String {
    option_env!("GLAGENT_REVISION").unwrap_or("unknown").to_string()
}

pub async fn metadata(State(state): State<Api>, _caller: Caller) -> Json<Metadata> {
    Json(Metadata {
        enterprise: false,
        kas: KasMetadata {
            enabled: true,
            external_k8s_proxy_url: state.urls.k8s_proxy(),
            external_url: state.urls.agent(),
            version: glagent_core::VERSION.to_string(),
        },
        revision: revision(),
        version: glagent_core::VERSION.to_string(),
    })
}

pub async fn version(_caller: Caller) -> Json<Version> {
    Json(Version {
        revision: revision(),
        version: glagent_core::VERSION.to_string(),
    })
}
