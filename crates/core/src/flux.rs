//! Flux's view of this forge: which project a `GitRepository`'s
//! `spec.url` points at, if any. agentk watches GitRepository objects and
//! tells kas the projects they point at; kas tells it when one is pushed.
//! No I/O.

/// The project path (`group/sub/project`) that `url` names on the forge
/// at `external_url`, or `None` for another host or a URL with no project.
///
/// Accepted forms, as Flux and git write them: `https://host[:port]/<path>`
/// (the scheme and port must be the forge's, defaults included),
/// `ssh://[user@]host[:port]/<path>` and `[user@]host:<path>` (any port:
/// the forge's SSH port is not its HTTP port). A trailing `.git` or `/` is
/// dropped; a path prefix of `external_url` (a forge under `/gitlab`) must
/// be present and is removed. Hosts compare case-insensitively, paths
/// exactly as the forge's do (case-insensitively).
pub fn project_path(url: &str, external_url: &url::Url) -> Option<String> {
    let forge_host = external_url.host_str()?.to_ascii_lowercase();
    let prefix = external_url.path().trim_end_matches('/');
    let (host, path) = match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
            if parsed.scheme() != external_url.scheme()
                || parsed.port_or_known_default() != external_url.port_or_known_default()
            {
                return None;
            }
            (parsed.host_str()?.to_ascii_lowercase(), parsed.path().to_string())
        }
        Ok(parsed) if parsed.scheme() == "ssh" => (parsed.host_str()?.to_ascii_lowercase(), parsed.path().to_string()),
        Ok(_) if !url.contains("://") => scp_like(url)?,
        Ok(_) => return None,
        Err(_) => scp_like(url)?,
    };
    if host.trim_matches(['[', ']']) != forge_host.trim_matches(['[', ']']) {
        return None;
    }
    let path = if prefix.is_empty() {
        path.as_str()
    } else {
        path.strip_prefix(prefix)?
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
    // A project lives in a namespace: at least two segments, none empty.
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2 || segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(path.to_ascii_lowercase())
}

/// Whether pushes to `project` may be reconciled by an agent whose
/// configuration project is `agent_project`: its own project, or any
/// project under the same top-level group. (GitLab allows the
/// configuration project and public projects; glagent has no public
/// projects, and a top-level group is one organisation's.)
pub fn agent_may_reconcile(agent_project: &str, project: &str) -> bool {
    let top = |path: &str| path.split('/').next().unwrap_or_default().to_ascii_lowercase();
    agent_project.eq_ignore_ascii_case(project) || top(agent_project) == top(project)
}

/// `[user@]host:path`, git's short SSH form.
fn scp_like(url: &str) -> Option<(String, String)> {
    let (authority, path) = url.split_once(':')?;
    if path.starts_with("//") {
        return None;
    }
    let host = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    if host.is_empty() || host.contains('/') {
        return None;
    }
    Some((host.to_ascii_lowercase(), format!("/{path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forge(url: &str) -> url::Url {
        url::Url::parse(url).unwrap()
    }

    #[test]
    fn http_and_ssh_forms_name_the_project() {
        let kas = forge("https://KAS.example.com:8443");
        for url in [
            "https://kas.example.com:8443/group/app.git",
            "https://kas.example.com:8443/group/app",
            "https://kas.example.com:8443/group/app/",
            "ssh://git@kas.example.com/group/app.git",
            "ssh://git@kas.example.com:2222/group/app.git",
            "git@kas.example.com:group/app.git",
            "https://kas.example.com:8443/Group/App.git",
        ] {
            assert_eq!(project_path(url, &kas).as_deref(), Some("group/app"), "{url}");
        }
        assert_eq!(
            project_path("https://kas.example.com:8443/a/b/c.git", &kas).as_deref(),
            Some("a/b/c")
        );
    }

    #[test]
    fn other_hosts_ports_and_paths_are_not_this_forge() {
        let kas = forge("https://kas.example.com:8443");
        for url in [
            "https://github.com/group/app.git",
            "https://kas.example.com/group/app.git",
            "http://kas.example.com:8443/group/app.git",
            "https://kas.example.com:8443/app.git",
            "https://kas.example.com:8443/",
            "oci://kas.example.com/group/app",
            "not a url",
        ] {
            assert_eq!(project_path(url, &kas), None, "{url}");
        }
        // Default ports count.
        let plain = forge("https://gitlab.example.com");
        assert_eq!(
            project_path("https://gitlab.example.com:443/g/p", &plain).as_deref(),
            Some("g/p")
        );
    }

    #[test]
    fn agents_reconcile_their_own_top_level_group() {
        assert!(agent_may_reconcile("ops/agents", "ops/agents"));
        assert!(agent_may_reconcile("ops/agents", "OPS/apps/web"));
        assert!(!agent_may_reconcile("ops/agents", "other/app"));
        assert!(!agent_may_reconcile("ops/agents", "opsx/app"));
    }

    #[test]
    fn a_forge_under_a_path_prefix_needs_the_prefix() {
        let kas = forge("https://example.com/gitlab/");
        assert_eq!(
            project_path("https://example.com/gitlab/g/p.git", &kas).as_deref(),
            Some("g/p")
        );
        assert_eq!(project_path("https://example.com/g/p.git", &kas), None);
    }
}
