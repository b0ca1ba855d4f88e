//! What each request through the proxy leaves behind once it has ended:
//! its series in kas's metrics and, once its caller is known, an entry in
//! the audit log. Watches and upgrades end when they close, so their
//! duration is the stream's.

use std::time::Instant;

use axum::extract::Request;
use axum::http::StatusCode;
use glagent_proto::forwarding::upgrade_protocol;
use glagent_services::Services;
use glagent_store::{NewAuditEvent, Timestamp};
use glagent_telemetry::metrics::{OpenGuard, kas, kubernetes_verb, stream_kind};

use crate::authorize::{Authorized, Caller};

/// One request, recorded when dropped.
pub struct Exchange {
    services: Services,
    started: Instant,
    started_at: Timestamp,
    verb: &'static str,
    /// The API server's path, without the query.
    path: String,
    status: StatusCode,
    /// The agent, the caller and the user imposed, once authorised.
    authorized: Option<(i64, Caller, Option<String>)>,
    /// `upgrade` or `watch` for an exchange that lasts.
    stream: Option<&'static str>,
    _open: Option<OpenGuard>,
}

impl Exchange {
    /// A request arriving at the proxy, whose path starts with `prefix`.
    pub fn begin(services: &Services, request: &Request, prefix: &str) -> Exchange {
        let uri = request.uri();
        let path = uri.path().strip_prefix(prefix).unwrap_or(uri.path());
        let path = if path.is_empty() { "/" } else { path };
        let upgrade = upgrade_protocol(request.headers()).is_some();
        let verb = kubernetes_verb(request.method().as_str(), path, uri.query(), upgrade);
        let stream = stream_kind(verb, uri.query());
        Exchange {
            services: services.clone(),
            started: Instant::now(),
            started_at: Timestamp::now(),
            verb,
            path: path.to_string(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
            authorized: None,
            stream,
            _open: stream.map(|kind| kas().proxy_stream(kind)),
        }
    }

    /// A watch or a followed log: a response body that lasts.
    pub fn is_watch(&self) -> bool {
        self.stream == Some("watch")
    }

    /// The caller is known and may use the agent.
    pub fn authorized(&mut self, authorized: &Authorized) {
        self.authorized = authorized.caller.clone().map(|caller| {
            let imposed = authorized.impersonation.as_ref().map(|i| i.username.clone());
            (authorized.agent_id, caller, imposed)
        });
    }

    /// The status sent to the client.
    pub fn answered(&mut self, status: StatusCode) {
        self.status = status;
    }
}

/// Whether the request is a watch or a followed log, whose response body
/// lasts until one side ends it.
pub fn is_watch(request: &Request) -> bool {
    stream_kind("", request.uri().query()) == Some("watch")
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        let credential = self
            .authorized
            .as_ref()
            .map_or("none", |(_, caller, _)| caller.credential);
        kas().proxy_request(credential, self.verb, self.status.as_u16(), took);
        if !self.services.settings.audit_log {
            return;
        }
        let Some((agent_id, caller, impersonated)) = self.authorized.take() else {
            return;
        };
        self.services.audit.record(NewAuditEvent {
            agent_id,
            started_at: self.started_at,
            credential: caller.credential.to_string(),
            user_id: caller.user_id,
            username: caller.username,
            project_id: caller.job.map(|j| j.project_id),
            pipeline_id: caller.job.map(|j| j.pipeline_id),
            job_id: caller.job.map(|j| j.job_id),
            impersonated,
            verb: self.verb.to_string(),
            path: std::mem::take(&mut self.path),
            status: i64::from(self.status.as_u16()),
            duration_us: i64::try_from(took.as_micros()).unwrap_or(i64::MAX),
        });
    }
}
