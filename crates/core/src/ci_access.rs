//! Which `ci_access` entry of an agent's configuration, if any, lets a CI
//! job use the agent, as GitLab decides it: entries that do not fit the job
//! (environment, protected branch) are dropped first, then a project entry
//! beats a group entry, and a nearer group beats a farther one.

use crate::agent_config::{AgentConfig, CiAccessEntry};

/// What is known about a running job.
#[derive(Clone, Debug)]
pub struct JobFacts<'a> {
    /// Full path of the job's project, e.g. `group/sub/app`.
    pub project_path: &'a str,
    pub ref_protected: bool,
    /// The job's environment slug, if it deploys to one.
    pub environment: Option<&'a str>,
}

/// The entry that authorises the job, if any.
pub fn authorizing_entry<'a>(config: &'a AgentConfig, job: &JobFacts<'_>) -> Option<&'a CiAccessEntry> {
    let ci = config.ci_access.as_ref()?;
    let fits = |entry: &&CiAccessEntry| fits(entry, job);
    if let Some(entry) = ci
        .projects
        .iter()
        .filter(|e| e.id.as_str() == job.project_path)
        .find(fits)
    {
        return Some(entry);
    }
    ci.groups
        .iter()
        .filter(|e| {
            let group = e.id.as_str().trim_end_matches('/');
            job.project_path.starts_with(&format!("{group}/"))
        })
        .filter(fits)
        .max_by_key(|e| e.id.as_str().len())
}

fn fits(entry: &CiAccessEntry, job: &JobFacts<'_>) -> bool {
    if entry.protected_branches_only && !job.ref_protected {
        return false;
    }
    if entry.environments.is_empty() {
        return true;
    }
    match job.environment {
        None => false,
        Some(environment) => entry
            .environments
            .iter()
            .any(|pattern| glob(pattern.as_str(), environment)),
    }
}

/// `*` matches any run of characters (including `/`), as GitLab's
/// environment patterns do.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_config::parse_config;

    fn config(text: &str) -> AgentConfig {
        parse_config("config.yaml", text.as_bytes()).unwrap()
    }

    fn job<'a>(path: &'a str, protected: bool, env: Option<&'a str>) -> JobFacts<'a> {
        JobFacts {
            project_path: path,
            ref_protected: protected,
            environment: env,
        }
    }

    #[test]
    fn wildcards() {
        assert!(glob("review/*", "review/feature-1"));
        assert!(glob("*", "anything"));
        assert!(glob("prod*-eu", "prod-2-eu"));
        assert!(!glob("review/*", "production"));
        assert!(glob("production", "production"));
        assert!(!glob("a*b*c", "acb"));
    }

    #[test]
    fn projects_groups_and_specificity() {
        let c = config(
            "ci_access:\n  projects:\n    - id: g/app\n      default_namespace: app\n  groups:\n    - id: g\n      default_namespace: group\n    - id: g/sub\n      default_namespace: sub\n",
        );
        assert_eq!(
            authorizing_entry(&c, &job("g/app", false, None))
                .unwrap()
                .default_namespace
                .as_deref(),
            Some("app")
        );
        assert_eq!(
            authorizing_entry(&c, &job("g/other", false, None))
                .unwrap()
                .default_namespace
                .as_deref(),
            Some("group")
        );
        assert_eq!(
            authorizing_entry(&c, &job("g/sub/x", false, None))
                .unwrap()
                .default_namespace
                .as_deref(),
            Some("sub")
        );
        assert!(authorizing_entry(&c, &job("gx/app", false, None)).is_none());
        assert!(authorizing_entry(&c, &job("other/app", false, None)).is_none());
    }

    #[test]
    fn environments_and_protected_branches() {
        let c = config(
            "ci_access:\n  projects:\n    - id: g/app\n      environments: [\"review/*\", production]\n      protected_branches_only: true\n  groups:\n    - id: g\n      default_namespace: fallback\n      environments: [staging]\n",
        );
        assert!(authorizing_entry(&c, &job("g/app", true, Some("review/x"))).is_some());
        assert!(authorizing_entry(&c, &job("g/app", true, Some("production"))).is_some());
        // Unprotected ref: the project entry drops out; staging still fits the group entry.
        assert!(authorizing_entry(&c, &job("g/app", false, Some("production"))).is_none());
        assert_eq!(
            authorizing_entry(&c, &job("g/app", false, Some("staging")))
                .unwrap()
                .default_namespace
                .as_deref(),
            Some("fallback")
        );
        // Entries with environments exclude jobs without one.
        assert!(authorizing_entry(&c, &job("g/app", true, None)).is_none());
        assert!(authorizing_entry(&config("{}"), &job("g/app", true, None)).is_none());
    }
}
