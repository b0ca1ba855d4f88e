//! `GET /metadata` and `GET /version`, in GitLab's shape.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::auth::Caller;
use crate::Api;

fn body(state: &Api) -> Value {
    json!({
        "version": glagent_core::VERSION,
        "revision": option_env!("GLAGENT_REVISION").unwrap_or("unknown"),
        "kas": {
            "enabled": true,
            "externalUrl": state.urls.agent(),
            "externalK8sProxyUrl": state.urls.k8s_proxy(),
            "version": glagent_core::VERSION,
        },
        "enterprise": false,
    })
}

pub async fn metadata(State(state): State<Api>, _caller: Caller) -> Json<Value> {
    Json(body(&state))
}

pub async fn version(State(state): State<Api>, _caller: Caller) -> Json<Value> {
    let mut value = body(&state);
    if let Some(map) = value.as_object_mut() {
        map.remove("kas");
        map.remove("enterprise");
    }
    Json(value)
}
