//! The recommended install command kas gives after registration, in the
//! shape of GitLab's: add kas's own chart repository, then one
//! `helm upgrade --install` with the image tag, token and kas address.

use crate::urls::Urls;

/// The commands, one per line. `token` may be a placeholder.
pub fn command(urls: &Urls, agent_name: &str, token: &str) -> String {
    let version = glagent_core::VERSION;
    let self_signed = urls.ca_pem().is_some();
    let mut lines = Vec::new();
    if self_signed {
        lines.push("# kas uses its own CA: save it as kas-ca.crt (it is <kas data dir>/tls/ca.crt)".to_string());
    }
    let ca_flag = if self_signed { " --ca-file kas-ca.crt" } else { "" };
    lines.push(format!("helm repo add glagent {}{ca_flag}", urls.charts()));
    lines.push("helm repo update".to_string());
    let mut install = format!(
        "helm upgrade --install {agent_name} glagent/gitlab-agent \\\n    --namespace gitlab-agent-{agent_name} \\\n    --create-namespace \\\n    --set image.tag={version} \\\n    --set config.token={token} \\\n    --set config.kasAddress={}",
        urls.agent()
    );
    if self_signed {
        install.push_str(" \\\n    --set-file config.kasCaCert=kas-ca.crt");
    }
    lines.push(install);
    lines.join("\n") + "\n"
}
