//! Where kas is reached from outside, and the addresses derived from it.

use url::Url;

/// kas's external URL and the CA it generated for itself, if it did.
#[derive(Clone, Debug)]
pub struct Urls {
    external: Url,
    ca_pem: Option<String>,
}

impl Urls {
    pub fn new(external: Url, ca_pem: Option<String>) -> Urls {
        Urls { external, ca_pem }
    }

    pub fn external(&self) -> &Url {
        &self.external
    }

    /// The CA that signed kas's certificate when kas made its own: put in
    /// kubeconfigs and install commands.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// `https://host[:port]` without a trailing slash.
    pub fn base(&self) -> String {
        self.external.as_str().trim_end_matches('/').to_string()
    }

    /// kas's origin as browsers send it in `Origin`: `https://host[:port]`
    /// (the port only when it is not the scheme's default).
    pub fn origin(&self) -> String {
        self.external.origin().ascii_serialization()
    }

    /// Where agents connect: `wss://<host>/-/kubernetes-agent/`.
    pub fn agent(&self) -> String {
        let scheme = if self.external.scheme() == "https" { "wss" } else { "ws" };
        let base = self.base();
        let rest = base.split_once("://").map(|(_, r)| r).unwrap_or(&base);
        format!("{scheme}://{rest}{}", glagent_proto::AGENT_PATH)
    }

    /// The Kubernetes API proxy for users and CI jobs.
    pub fn k8s_proxy(&self) -> String {
        format!("{}/-/kubernetes-agent/k8s-proxy/", self.base())
    }

    /// The proxy's path on kas's host, without a trailing slash (where the
    /// dashboards' session cookie is scoped).
    pub fn k8s_proxy_path(&self) -> String {
        let proxy = self.k8s_proxy();
        url::Url::parse(&proxy)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_else(|_| "/-/kubernetes-agent/k8s-proxy".into())
    }

    /// kas's own Helm chart repository.
    pub fn charts(&self) -> String {
        format!("{}/-/charts", self.base())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_external_url() {
        let urls = Urls::new(Url::parse("https://kas.example:8443/").unwrap(), None);
        assert_eq!(urls.base(), "https://kas.example:8443");
        assert_eq!(urls.agent(), "wss://kas.example:8443/-/kubernetes-agent/");
        assert_eq!(
            urls.k8s_proxy(),
            "https://kas.example:8443/-/kubernetes-agent/k8s-proxy/"
        );
        assert_eq!(urls.charts(), "https://kas.example:8443/-/charts");
        let plain = Urls::new(Url::parse("http://127.0.0.1:8080").unwrap(), None);
        assert_eq!(plain.agent(), "ws://127.0.0.1:8080/-/kubernetes-agent/");
    }
}
