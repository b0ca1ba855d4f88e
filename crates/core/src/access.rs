//! GitLab's member roles and what each one may do with cluster agents.

use serde::{Deserialize, Serialize};

/// A member role, with GitLab's numeric access levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "i64", try_from = "i64")]
pub enum AccessLevel {
    Guest = 10,
    Reporter = 20,
    Developer = 30,
    Maintainer = 40,
    Owner = 50,
}

/// An access level number that is not one of GitLab's roles.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("access_level {0} is not a role: use 10 (guest), 20 (reporter), 30 (developer), 40 (maintainer) or 50 (owner)")]
pub struct UnknownAccessLevel(pub i64);

impl AccessLevel {
    pub const ALL: [AccessLevel; 5] = [
        AccessLevel::Guest,
        AccessLevel::Reporter,
        AccessLevel::Developer,
        AccessLevel::Maintainer,
        AccessLevel::Owner,
    ];

    /// The role's name as GitLab spells it (`developer`, `maintainer`...).
    pub fn name(self) -> &'static str {
        match self {
            AccessLevel::Guest => "guest",
            AccessLevel::Reporter => "reporter",
            AccessLevel::Developer => "developer",
            AccessLevel::Maintainer => "maintainer",
            AccessLevel::Owner => "owner",
        }
    }

    /// Reading agents, their tokens and configuration needs Developer.
    pub fn can_read_agents(self) -> bool {
        self >= AccessLevel::Developer
    }

    /// Registering, deleting agents and managing tokens needs Maintainer.
    pub fn can_admin_agents(self) -> bool {
        self >= AccessLevel::Maintainer
    }

    /// Cloning needs Reporter, as in GitLab for private projects.
    pub fn can_read_code(self) -> bool {
        self >= AccessLevel::Reporter
    }

    /// Pushing and committing through the Files API needs Developer.
    pub fn can_push_code(self) -> bool {
        self >= AccessLevel::Developer
    }
}

impl From<AccessLevel> for i64 {
    fn from(level: AccessLevel) -> i64 {
        level as i64
    }
}

impl TryFrom<i64> for AccessLevel {
    type Error = UnknownAccessLevel;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        AccessLevel::ALL
            .into_iter()
            .find(|level| *level as i64 == value)
            .ok_or(UnknownAccessLevel(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip_and_order() {
        for level in AccessLevel::ALL {
            assert_eq!(AccessLevel::try_from(level as i64), Ok(level));
        }
        assert_eq!(AccessLevel::try_from(35), Err(UnknownAccessLevel(35)));
        assert!(AccessLevel::Maintainer > AccessLevel::Developer);
    }

    #[test]
    fn agent_permissions_follow_gitlab() {
        assert!(!AccessLevel::Reporter.can_read_agents());
        assert!(AccessLevel::Developer.can_read_agents());
        assert!(!AccessLevel::Developer.can_admin_agents());
        assert!(AccessLevel::Maintainer.can_admin_agents());
        assert!(AccessLevel::Owner.can_admin_agents());
    }
}
