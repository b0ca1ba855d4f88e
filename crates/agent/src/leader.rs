//! Leader election among an agent's replicas, for work only one of them
//! should do (such as triggering Flux). Every replica serves proxied
//! requests; only the holder of the Lease `agent-<agent id>-lock` in the
//! pod's namespace is the leader. Timings as client-go's defaults for the
//! real agent: 15 s lease, renewed every 2 s.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::state::AgentState;

const LEASE_SECONDS: i64 = 15;
const RETRY: Duration = Duration::from_secs(2);

pub fn lease_name(agent_id: i64) -> String {
    format!("agent-{agent_id}-lock")
}

fn now() -> String {
    let now = OffsetDateTime::now_utc();
    let micros = now.replace_nanosecond(now.microsecond() * 1000).unwrap_or(now);
    micros.format(&Rfc3339).unwrap_or_default()
}

fn expired(renew_time: Option<&str>) -> bool {
    let Some(renewed) = renew_time.and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()) else {
        return true;
    };
    OffsetDateTime::now_utc() - renewed > time::Duration::seconds(LEASE_SECONDS)
}

/// One round: acquire, renew or observe. Returns whether we lead.
async fn round(api: &Api<Lease>, name: &str, me: &str) -> kube::Result<bool> {
    let spec = |transitions: i64, acquire: Option<String>| {
        json!({
            "holderIdentity": me,
            "leaseDurationSeconds": LEASE_SECONDS,
            "acquireTime": acquire.unwrap_or_else(now),
            "renewTime": now(),
            "leaseTransitions": transitions,
        })
    };
    let current = match api.get_opt(name).await? {
        Some(lease) => lease,
        None => {
            let lease: Lease = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec(0, None)}))
                .expect("a valid Lease");
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        }
    };
    let value = serde_json::to_value(&current).expect("serialisable");
    let holder = value["spec"]["holderIdentity"].as_str().unwrap_or_default();
    let renew = value["spec"]["renewTime"].as_str();
    let transitions = value["spec"]["leaseTransitions"].as_i64().unwrap_or(0);
    let acquire = value["spec"]["acquireTime"].as_str().map(str::to_string);
    let next = if holder == me {
        spec(transitions, acquire)
    } else if holder.is_empty() || expired(renew) {
        spec(transitions + 1, None)
    } else {
        return Ok(false);
    };
    let mut updated = value.clone();
    updated["spec"] = next;
    let updated: Lease = serde_json::from_value(updated).expect("a valid Lease");
    match api.replace(name, &PostParams::default(), &updated).await {
        Ok(_) => Ok(true),
        // Someone else renewed or took it in between.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up (on shutdown), so another replica leads at once
/// instead of after the lease runs out.
pub async fn release(state: &AgentState) {
    if !state.leader.load(Ordering::Relaxed) {
        return;
    }
    let Some(applied) = state.applied() else { return };
    let name = lease_name(applied.agent_id);
    let api: Api<Lease> = Api::namespaced(state.kube.clone(), &state.pod_namespace);
    let Ok(Some(lease)) = api.get_opt(&name).await else {
        return;
    };
    let mut value = serde_json::to_value(&lease).expect("serialisable");
    if value["spec"]["holderIdentity"] != state.pod_name.as_str() {
        return;
    }
    value["spec"]["holderIdentity"] = json!("");
    value["spec"]["leaseDurationSeconds"] = json!(1);
    value["spec"]["renewTime"] = json!(now());
    let Ok(released) = serde_json::from_value::<Lease>(value) else {
        return;
    };
    match api.replace(&name, &PostParams::default(), &released).await {
        Ok(_) => {
            state.leader.store(false, Ordering::Relaxed);
            tracing::info!(lease = %name, "released leadership");
        }
        Err(error) => tracing::warn!(lease = %name, %error, "could not release leadership"),
    }
}

/// Runs forever: waits for the agent id (from the first configuration),
/// then keeps trying to lead.
pub async fn run(state: Arc<AgentState>) {
    let agent_id = loop {
        if let Some(applied) = state.applied() {
            break applied.agent_id;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let name = lease_name(agent_id);
    let api: Api<Lease> = Api::namespaced(state.kube.clone(), &state.pod_namespace);
    let mut warned = false;
    loop {
        let leading = match round(&api, &name, &state.pod_name).await {
            Ok(leading) => {
                warned = false;
                leading
            }
            Err(error) => {
                if !warned {
                    tracing::warn!(lease = %name, %error, "leader election failed: can the agent's service account get, create and update leases in its namespace?");
                    warned = true;
                }
                false
            }
        };
        let was = state.leader.swap(leading, Ordering::Relaxed);
        if was != leading {
            tracing::info!(lease = %name, leading, "leadership changed");
        }
        tokio::time::sleep(RETRY).await;
    }
}
