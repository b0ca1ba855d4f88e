//! Which identity a caller of the Kubernetes API proxy gets at the API
//! server, decided from facts alone: the agent's `user_access` or
//! `ci_access` entry, the caller's roles, the job's pipeline and
//! environment. kas gathers the facts from its store; these functions are
//! the rules, so they can be tested without one.
//!
//! `None` as an identity means "the agent's own service account"; GitLab
//! calls this `access_as: {agent: {}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::access::AccessLevel;
use crate::agent_config::{CiAccessAs, UserAccess, UserAccessAs};

/// An identity to impersonate at the Kubernetes API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Impersonation {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Extra keys GitLab puts on every identity it imposes.
pub mod extra {
    pub const AGENT_ID: &str = "agent.gitlab.com/id";
    pub const USERNAME: &str = "agent.gitlab.com/username";
    pub const ACCESS_TYPE: &str = "agent.gitlab.com/access_type";
    pub const CONFIG_PROJECT_ID: &str = "agent.gitlab.com/config_project_id";
    pub const PROJECT_ID: &str = "agent.gitlab.com/project_id";
    pub const CI_PIPELINE_ID: &str = "agent.gitlab.com/ci_pipeline_id";
    pub const CI_JOB_ID: &str = "agent.gitlab.com/ci_job_id";
    pub const ENVIRONMENT_SLUG: &str = "agent.gitlab.com/environment_slug";
    pub const ENVIRONMENT_TIER: &str = "agent.gitlab.com/environment_tier";
}

/// The least role that lets a member of a listed project or group use an
/// agent through `user_access`.
pub const USER_ACCESS_ROLE: AccessLevel = AccessLevel::Developer;

/// What is known about a person calling through an agent.
#[derive(Clone, Debug)]
pub struct UserFacts<'a> {
    pub agent_id: i64,
    /// The project that holds the agent's configuration file.
    pub config_project_id: i64,
    pub username: &'a str,
    /// The caller's role in each project listed under `user_access`
    /// (listed projects the caller is no member of are left out).
    pub project_roles: &'a [(i64, AccessLevel)],
    /// The caller's role in each group listed under `user_access`.
    pub group_roles: &'a [(i64, AccessLevel)],
    /// How the caller authenticated, for the `access_type` extra
    /// (`personal_access_token`, `session_cookie`).
    pub access_type: &'a str,
}

/// Why a person may not use an agent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserDenied {
    #[error(
        "agent {0} does not allow user access: list projects or groups under user_access in its configuration file"
    )]
    NoUserAccess(i64),
    #[error("you need the developer role or higher in a project or group listed in agent {0}'s user_access")]
    NoRole(i64),
}

/// The identity a person gets through an agent whose configuration has
/// `user_access` (or a refusal). With `access_as: {user: {}}` it is
/// `gitlab:user:<username>`, in group `gitlab:user` and in one
/// `gitlab:project_role:<id>:<role>` (or `group_role`) group for every role
/// up to the caller's in each listed project (or group) where the caller is
/// a developer or more.
pub fn user_identity(access: Option<&UserAccess>, facts: &UserFacts<'_>) -> Result<Option<Impersonation>, UserDenied> {
    let access = access.ok_or(UserDenied::NoUserAccess(facts.agent_id))?;
    let enough = |(_, level): &&(i64, AccessLevel)| *level >= USER_ACCESS_ROLE;
    let projects: Vec<_> = facts.project_roles.iter().filter(enough).collect();
    let groups: Vec<_> = facts.group_roles.iter().filter(enough).collect();
    if projects.is_empty() && groups.is_empty() {
        return Err(UserDenied::NoRole(facts.agent_id));
    }
    match access.access_as {
        Some(UserAccessAs::User(_)) => {}
        Some(UserAccessAs::Agent(_)) | None => return Ok(None),
    }
    let roles_up_to = |level: AccessLevel| AccessLevel::ALL.into_iter().filter(move |l| *l <= level);
    let mut group_names = vec!["gitlab:user".to_string()];
    for (id, level) in projects {
        group_names.extend(roles_up_to(*level).map(|r| format!("gitlab:project_role:{id}:{}", r.name())));
    }
    for (id, level) in groups {
        group_names.extend(roles_up_to(*level).map(|r| format!("gitlab:group_role:{id}:{}", r.name())));
    }
    let extra = BTreeMap::from([
        (extra::AGENT_ID.to_string(), vec![facts.agent_id.to_string()]),
        (extra::USERNAME.to_string(), vec![facts.username.to_string()]),
        (extra::ACCESS_TYPE.to_string(), vec![facts.access_type.to_string()]),
        (
            extra::CONFIG_PROJECT_ID.to_string(),
            vec![facts.config_project_id.to_string()],
        ),
    ]);
    Ok(Some(Impersonation {
        username: format!("gitlab:user:{}", facts.username),
        uid: None,
        groups: group_names,
        extra,
    }))
}

/// What is known about a CI job calling through an agent.
#[derive(Clone, Debug)]
pub struct JobIdentityFacts<'a> {
    pub agent_id: i64,
    pub config_project_id: i64,
    /// The job's project.
    pub project_id: i64,
    /// The groups above the job's project, the top-level group first.
    pub group_ids: &'a [i64],
    pub pipeline_id: i64,
    pub job_id: i64,
    /// The user the job runs as.
    pub username: &'a str,
    pub environment_slug: Option<&'a str>,
    pub environment_tier: Option<&'a str>,
}

/// The identity a CI job gets through the `ci_access` entry that lets it
/// use the agent: the agent's own (`None`), a fixed one (`impersonate`), or
/// `gitlab:ci_job:<id>` with the groups and extras GitLab gives it.
pub fn job_identity(access_as: Option<&CiAccessAs>, facts: &JobIdentityFacts<'_>) -> Option<Impersonation> {
    match access_as? {
        CiAccessAs::Agent(_) => None,
        CiAccessAs::Impersonate(identity) => Some(Impersonation {
            username: identity.username.as_str().to_string(),
            uid: identity.uid.clone(),
            groups: identity.groups.clone(),
            extra: identity
                .extra
                .iter()
                .map(|e| (e.key.as_str().to_string(), e.val.clone()))
                .collect(),
        }),
        CiAccessAs::CiJob(_) => {
            let tier = facts.environment_tier;
            let mut groups = vec!["gitlab:ci_job".to_string()];
            for group in facts.group_ids {
                groups.push(format!("gitlab:group:{group}"));
                if let Some(tier) = tier {
                    groups.push(format!("gitlab:group_env_tier:{group}:{tier}"));
                }
            }
            let project = facts.project_id;
            groups.push(format!("gitlab:project:{project}"));
            if let Some(slug) = facts.environment_slug {
                groups.push(format!("gitlab:project_env:{project}:{slug}"));
                if let Some(tier) = tier {
                    groups.push(format!("gitlab:project_env_tier:{project}:{tier}"));
                }
            }
            let mut extra = BTreeMap::from([
                (extra::AGENT_ID.to_string(), vec![facts.agent_id.to_string()]),
                (
                    extra::CONFIG_PROJECT_ID.to_string(),
                    vec![facts.config_project_id.to_string()],
                ),
                (extra::PROJECT_ID.to_string(), vec![project.to_string()]),
                (extra::CI_PIPELINE_ID.to_string(), vec![facts.pipeline_id.to_string()]),
                (extra::CI_JOB_ID.to_string(), vec![facts.job_id.to_string()]),
                (extra::USERNAME.to_string(), vec![facts.username.to_string()]),
            ]);
            if let Some(slug) = facts.environment_slug {
                extra.insert(extra::ENVIRONMENT_SLUG.to_string(), vec![slug.to_string()]);
            }
            if let Some(tier) = tier {
                extra.insert(extra::ENVIRONMENT_TIER.to_string(), vec![tier.to_string()]);
            }
            Some(Impersonation {
                username: format!("gitlab:ci_job:{}", facts.job_id),
                uid: None,
                groups,
                extra,
            })
        }
    }
}

/// Whether a request may carry `Impersonate-*` headers of its own: only
/// when no identity is imposed on it (GitLab refuses nested impersonation).
pub fn client_may_impersonate<'a>(
    imposed: Option<&Impersonation>,
    header_names: impl IntoIterator<Item = &'a str>,
) -> bool {
    imposed.is_none()
        || !header_names
            .into_iter()
            .any(|name| name.len() >= 12 && name[..12].eq_ignore_ascii_case("impersonate-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_config::parse_config;

    fn config(yaml: &str) -> crate::agent_config::AgentConfig {
        parse_config("config.yaml", yaml.as_bytes()).unwrap()
    }

    fn user<'a>(projects: &'a [(i64, AccessLevel)], groups: &'a [(i64, AccessLevel)]) -> UserFacts<'a> {
        UserFacts {
            agent_id: 7,
            config_project_id: 3,
            username: "alice",
            project_roles: projects,
            group_roles: groups,
            access_type: "personal_access_token",
        }
    }

    #[test]
    fn access_as_user_gets_every_role_up_to_the_callers_in_each_listed_place() {
        let config = config("user_access:\n  access_as: {user: {}}\n  projects: [{id: g/p}]\n  groups: [{id: g}]\n");
        let facts = user(&[(3, AccessLevel::Maintainer)], &[(9, AccessLevel::Developer)]);
        let identity = user_identity(config.user_access.as_ref(), &facts).unwrap().unwrap();
        assert_eq!(identity.username, "gitlab:user:alice");
        assert_eq!(
            identity.groups,
            [
                "gitlab:user",
                "gitlab:project_role:3:guest",
                "gitlab:project_role:3:reporter",
                "gitlab:project_role:3:developer",
                "gitlab:project_role:3:maintainer",
                "gitlab:group_role:9:guest",
                "gitlab:group_role:9:reporter",
                "gitlab:group_role:9:developer",
            ]
        );
        assert_eq!(identity.extra[extra::AGENT_ID], ["7"]);
        assert_eq!(identity.extra[extra::USERNAME], ["alice"]);
        assert_eq!(identity.extra[extra::ACCESS_TYPE], ["personal_access_token"]);
        assert_eq!(identity.extra[extra::CONFIG_PROJECT_ID], ["3"]);
        assert_eq!(identity.extra.len(), 4);
    }

    #[test]
    fn access_as_agent_or_unset_keeps_the_agents_identity() {
        for yaml in [
            "user_access:\n  access_as: {agent: {}}\n  projects: [{id: g/p}]\n",
            "user_access:\n  projects: [{id: g/p}]\n",
        ] {
            let config = config(yaml);
            let facts = user(&[(3, AccessLevel::Developer)], &[]);
            assert_eq!(user_identity(config.user_access.as_ref(), &facts), Ok(None), "{yaml}");
        }
    }

    #[test]
    fn user_access_needs_a_listed_place_where_the_caller_is_developer_or_more() {
        let config = config("user_access:\n  access_as: {user: {}}\n  projects: [{id: g/p}]\n");
        let reporter = user(&[(3, AccessLevel::Reporter)], &[(9, AccessLevel::Guest)]);
        assert_eq!(
            user_identity(config.user_access.as_ref(), &reporter),
            Err(UserDenied::NoRole(7))
        );
        assert_eq!(
            user_identity(config.user_access.as_ref(), &user(&[], &[])),
            Err(UserDenied::NoRole(7))
        );
        // Places where the caller is only a reporter give no groups.
        let mixed = user(&[(3, AccessLevel::Reporter)], &[(9, AccessLevel::Owner)]);
        let identity = user_identity(config.user_access.as_ref(), &mixed).unwrap().unwrap();
        assert!(
            identity.groups.iter().all(|g| !g.contains(":3:")),
            "{:?}",
            identity.groups
        );
        assert!(identity.groups.contains(&"gitlab:group_role:9:owner".to_string()));
        let none = crate::agent_config::AgentConfig::default();
        let denied = user_identity(none.user_access.as_ref(), &mixed).unwrap_err();
        assert_eq!(denied, UserDenied::NoUserAccess(7));
        assert!(denied.to_string().contains("list projects or groups under user_access"));
    }

    fn job<'a>(groups: &'a [i64], slug: Option<&'a str>, tier: Option<&'a str>) -> JobIdentityFacts<'a> {
        JobIdentityFacts {
            agent_id: 7,
            config_project_id: 3,
            project_id: 12,
            group_ids: groups,
            pipeline_id: 100,
            job_id: 555,
            username: "bob",
            environment_slug: slug,
            environment_tier: tier,
        }
    }

    fn access_as(yaml: &str) -> Option<CiAccessAs> {
        let config = config(&format!("ci_access:\n  projects:\n    - id: g/app\n{yaml}"));
        config.ci_access.unwrap().projects[0].access_as.clone()
    }

    #[test]
    fn ci_job_identity_has_groups_from_the_top_group_down_and_the_environment() {
        let access = access_as("      access_as: {ci_job: {}}\n");
        let identity = job_identity(access.as_ref(), &job(&[1, 2], Some("review-x"), Some("staging"))).unwrap();
        assert_eq!(identity.username, "gitlab:ci_job:555");
        assert_eq!(
            identity.groups,
            [
                "gitlab:ci_job",
                "gitlab:group:1",
                "gitlab:group_env_tier:1:staging",
                "gitlab:group:2",
                "gitlab:group_env_tier:2:staging",
                "gitlab:project:12",
                "gitlab:project_env:12:review-x",
                "gitlab:project_env_tier:12:staging",
            ]
        );
        for (key, value) in [
            (extra::AGENT_ID, "7"),
            (extra::CONFIG_PROJECT_ID, "3"),
            (extra::PROJECT_ID, "12"),
            (extra::CI_PIPELINE_ID, "100"),
            (extra::CI_JOB_ID, "555"),
            (extra::USERNAME, "bob"),
            (extra::ENVIRONMENT_SLUG, "review-x"),
            (extra::ENVIRONMENT_TIER, "staging"),
        ] {
            assert_eq!(identity.extra[key], [value], "{key}");
        }
        // Without an environment: no environment groups or extras.
        let plain = job_identity(access.as_ref(), &job(&[1], None, None)).unwrap();
        assert_eq!(plain.groups, ["gitlab:ci_job", "gitlab:group:1", "gitlab:project:12"]);
        assert_eq!(plain.extra.len(), 6);
    }

    #[test]
    fn ci_access_as_agent_or_unset_keeps_the_agents_identity_and_impersonate_is_taken_as_written() {
        let facts = job(&[], None, None);
        assert_eq!(job_identity(None, &facts), None);
        assert_eq!(
            job_identity(access_as("      access_as: {agent: {}}\n").as_ref(), &facts),
            None
        );
        let fixed = access_as(
            "      access_as:\n        impersonate:\n          username: deployer\n          uid: u-1\n          groups: [ops]\n          extra: [{key: team, val: [a, b]}]\n",
        );
        let identity = job_identity(fixed.as_ref(), &facts).unwrap();
        assert_eq!(identity.username, "deployer");
        assert_eq!(identity.uid.as_deref(), Some("u-1"));
        assert_eq!(identity.groups, ["ops"]);
        assert_eq!(identity.extra["team"], ["a", "b"]);
    }

    #[test]
    fn clients_may_impersonate_only_when_nothing_is_imposed() {
        let imposed = Impersonation {
            username: "gitlab:user:alice".into(),
            ..Default::default()
        };
        let headers = ["accept", "Impersonate-User"];
        assert!(client_may_impersonate(None, headers));
        assert!(!client_may_impersonate(Some(&imposed), headers));
        assert!(!client_may_impersonate(Some(&imposed), ["impersonate-group"]));
        assert!(client_may_impersonate(Some(&imposed), ["accept", "impersonate"]));
    }
}
