//! Whom an agent is shared with: the projects and groups its configuration
//! names under `ci_access` (CI jobs) and `user_access` (people). A project is
//! shared with when it is named itself or lies under a named group, as
//! GitLab's "Shared agents" tab and the environment form's agent list
//! decide it.

use crate::agent_config::AgentConfig;

/// How an agent's configuration shares it with one project.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sharing {
    pub ci_access: bool,
    pub user_access: bool,
}

impl Sharing {
    pub fn any(self) -> bool {
        self.ci_access || self.user_access
    }
}

/// How `config` shares its agent with the project at `project_path`.
pub fn sharing(config: &AgentConfig, project_path: &str) -> Sharing {
    let ci_access = config.ci_access.as_ref().is_some_and(|ci| {
        ci.projects.iter().any(|e| e.id.as_str() == project_path)
            || ci.groups.iter().any(|e| under(project_path, e.id.as_str()))
    });
    let user_access = config.user_access.as_ref().is_some_and(|ua| {
        ua.projects.iter().any(|e| e.id.as_str() == project_path)
            || ua.groups.iter().any(|e| under(project_path, e.id.as_str()))
    });
    Sharing { ci_access, user_access }
}

/// Whether `path` lies under the group at `group` (never for an empty one).
fn under(path: &str, group: &str) -> bool {
    let group = group.trim_end_matches('/');
    !group.is_empty() && path.len() > group.len() && path.starts_with(group) && path.as_bytes()[group.len()] == b'/'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_config::parse_config;

    fn config(yaml: &str) -> AgentConfig {
        parse_config(".gitlab/agents/a/config.yaml", yaml.as_bytes()).unwrap()
    }

    #[test]
    fn a_project_is_shared_with_when_named_or_under_a_named_group() {
        let c = config(
            "ci_access:\n  projects:\n    - id: other/app\n  groups:\n    - id: team\nuser_access:\n  access_as:\n    agent: {}\n  groups:\n    - id: ops/\n",
        );
        assert_eq!(
            sharing(&c, "other/app"),
            Sharing {
                ci_access: true,
                user_access: false
            }
        );
        assert_eq!(
            sharing(&c, "team/sub/app"),
            Sharing {
                ci_access: true,
                user_access: false
            }
        );
        assert_eq!(
            sharing(&c, "ops/app"),
            Sharing {
                ci_access: false,
                user_access: true
            }
        );
        assert!(
            !sharing(&c, "teamwork/app").any(),
            "a group's name is not a prefix of another's"
        );
        assert!(!sharing(&c, "team").any(), "a group does not contain itself");
        assert!(!sharing(&c, "other/app2").any());
    }

    #[test]
    fn no_access_sections_share_with_nobody() {
        assert!(!sharing(&config("observability:\n  logging:\n    level: info\n"), "g/p").any());
    }
}
