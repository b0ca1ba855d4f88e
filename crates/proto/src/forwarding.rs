//! The rules every hop of a proxied Kubernetes API request follows, written
//! once for kas (client to agent, replica to replica) and agentk (agent to
//! API server): which headers travel end to end, how the imposed identity
//! is carried, how paths are re-rooted, and what makes a request an HTTP
//! upgrade.

use base64::Engine;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::Impersonation;

/// Headers that describe one hop and never travel further.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Credentials and GitLab headers that kas consumes: the API server sees
/// the agent's credentials, never the caller's.
const CONSUMED: &[&str] = &["authorization", "cookie", "gitlab-agent-id", "x-csrf-token"];

/// The prefix of the headers kas, kas replicas and agentk set among
/// themselves; nobody else may send them through.
pub const OWN_PREFIX: &str = "x-glagent-";

/// Whether a header belongs to the request or response itself: not
/// hop-by-hop, not a credential, not one of glagent's own.
pub fn is_end_to_end(name: &HeaderName) -> bool {
    let name = name.as_str();
    !HOP_BY_HOP.contains(&name) && !CONSUMED.contains(&name) && !name.starts_with(OWN_PREFIX)
}

/// Appends the end-to-end headers of `from` to `to`.
pub fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if is_end_to_end(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// The `Via` each glagent hop adds.
pub fn via(hop: &'static str) -> HeaderValue {
    HeaderValue::from_static(hop)
}

/// The protocol of an HTTP/1.1 upgrade request (exec, attach,
/// port-forward): `Connection: upgrade` and an `Upgrade` header.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<&str> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok())
}

/// Why an identity header could not be read.
#[derive(Debug, thiserror::Error)]
#[error("bad identity header: {0}")]
pub struct IdentityHeaderError(String);

/// An identity as carried between glagent's hops: base64 of its JSON.
pub fn encode_identity(identity: &Impersonation) -> HeaderValue {
    let json = serde_json::to_vec(identity).expect("an identity serialises");
    let encoded = base64::engine::general_purpose::STANDARD.encode(json);
    HeaderValue::from_str(&encoded).expect("base64 is a valid header value")
}

pub fn decode_identity(value: &[u8]) -> Result<Impersonation, IdentityHeaderError> {
    let json = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| IdentityHeaderError(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| IdentityHeaderError(e.to_string()))
}

/// Re-roots a request path: the part after `from` (always starting with
/// `/`), under `to`, with the query kept. A path outside `from` becomes
/// `to` + `/`.
pub fn rebase(path: &str, query: Option<&str>, from: &str, to: &str) -> String {
    let rest = path.strip_prefix(from).unwrap_or("/");
    let slash = if rest.starts_with('/') { "" } else { "/" };
    match query {
        Some(query) => format!("{to}{slash}{rest}?{query}"),
        None => format!("{to}{slash}{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_end_to_end_headers_travel() {
        let mut from = HeaderMap::new();
        for (name, value) in [
            ("accept", "application/json"),
            ("authorization", "Bearer pat:1:glpat-x"),
            ("cookie", "_gitlab_kas=x"),
            ("x-glagent-upgrade", "SPDY/3.1"),
            ("x-glagent-impersonation", "e30="),
            ("x-glagent-route-identity", "e30="),
            ("connection", "keep-alive"),
            ("proxy-authorization", "Basic x"),
            ("transfer-encoding", "chunked"),
            ("host", "kas"),
            ("impersonate-user", "someone"),
            ("gitlab-agent-id", "1"),
        ] {
            from.append(name, HeaderValue::from_static(value));
        }
        let mut to = HeaderMap::new();
        copy_end_to_end(&from, &mut to);
        let kept: Vec<&str> = to.keys().map(|k| k.as_str()).collect();
        assert_eq!(kept, ["accept", "impersonate-user"]);
    }

    #[test]
    fn upgrades_need_connection_upgrade_and_a_protocol() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert_eq!(upgrade_protocol(&headers), None);
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert_eq!(upgrade_protocol(&headers), Some("SPDY/3.1"));
        headers.remove(header::UPGRADE);
        assert_eq!(upgrade_protocol(&headers), None);
    }

    #[test]
    fn identities_round_trip_and_garbage_is_refused() {
        let identity = Impersonation {
            username: "gitlab:user:alice".into(),
            uid: None,
            groups: vec!["gitlab:user".into()],
            extra: [("agent.gitlab.com/id".to_string(), vec!["7".to_string()])].into(),
        };
        let value = encode_identity(&identity);
        assert_eq!(decode_identity(value.as_bytes()).unwrap(), identity);
        let error = decode_identity(b"not base64!").unwrap_err();
        assert!(error.to_string().starts_with("bad identity header"), "{error}");
        assert!(decode_identity(b"e30=").is_err(), "{{}} has no username");
    }

    #[test]
    fn paths_are_rebased_with_their_query() {
        let prefix = "/-/kubernetes-agent/k8s-proxy";
        assert_eq!(
            rebase(&format!("{prefix}/api/v1/pods"), Some("watch=1"), prefix, "/k8s-proxy"),
            "/k8s-proxy/api/v1/pods?watch=1"
        );
        assert_eq!(rebase(prefix, None, prefix, "/k8s-proxy"), "/k8s-proxy/");
        assert_eq!(rebase("/k8s-proxy/version", None, "/k8s-proxy", ""), "/version");
        assert_eq!(rebase("/elsewhere", None, prefix, "/k8s-proxy"), "/k8s-proxy/");
    }
}
