//! Version compatibility between agents and kas, as GitLab states it: an
//! agent should have kas's major.minor; the previous and the next minor are
//! supported too; anything else deserves a warning. Several versions among
//! one agent's pods deserve one as well.

/// `major.minor.patch`, with an optional leading `v` and suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim().trim_start_matches('v');
        let core = text.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().unwrap_or("0").parse().ok()?;
        Some(Version { major, minor, patch })
    }
}

/// The warning for one agent version against the kas version, if any.
pub fn version_warning(agent: &str, kas: &str) -> Option<String> {
    let (Some(a), Some(k)) = (Version::parse(agent), Version::parse(kas)) else {
        return Some(format!(
            "Agent version {agent} cannot be compared with kas version {kas}: versions must look like 1.2.3"
        ));
    };
    if a.major == k.major && a.minor.abs_diff(k.minor) <= 1 {
        return None;
    }
    let advice = if a < k {
        format!("update the agent to {}.{}", k.major, k.minor)
    } else {
        format!(
            "the agent is newer than kas: update kas, or install agent {}.{}",
            k.major, k.minor
        )
    };
    Some(format!(
        "Agent version {agent} is not compatible with kas version {kas}: only {}.{} and the minor versions next to it are supported; {advice}",
        k.major, k.minor
    ))
}

/// The warning when one agent's pods run different versions.
pub fn mixed_versions_warning(versions: &[&str]) -> Option<String> {
    let mut distinct: Vec<&str> = versions.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    (distinct.len() > 1).then(|| {
        format!(
            "The agent's pods run different versions ({}): finish the rollout so that every pod runs the same version",
            distinct.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_and_neighbouring_minors_are_fine() {
        assert_eq!(version_warning("1.5.0", "1.5.3"), None);
        assert_eq!(version_warning("v1.4.9", "1.5.0"), None);
        assert_eq!(version_warning("1.6.0", "1.5.0"), None);
    }

    #[test]
    fn two_minors_apart_warns_naming_both() {
        let older = version_warning("1.3.0", "1.5.0").unwrap();
        assert!(
            older.contains("1.3.0") && older.contains("1.5.0") && older.contains("update the agent"),
            "{older}"
        );
        let newer = version_warning("1.7.0", "1.5.0").unwrap();
        assert!(newer.contains("1.7.0") && newer.contains("newer"), "{newer}");
    }

    #[test]
    fn other_major_warns() {
        assert!(version_warning("2.5.0", "1.5.0").is_some());
        assert!(version_warning("0.5.0", "1.5.0").is_some());
        assert!(version_warning("garbage", "1.5.0").unwrap().contains("garbage"));
    }

    #[test]
    fn mixed_pods_warn() {
        assert_eq!(mixed_versions_warning(&["1.5.0", "1.5.0"]), None);
        let warning = mixed_versions_warning(&["1.5.0", "1.4.0", "1.5.0"]).unwrap();
        assert!(warning.contains("1.4.0, 1.5.0"), "{warning}");
    }

    #[test]
    fn parsing() {
        assert_eq!(
            Version::parse("v17.8.1-rc2"),
            Some(Version {
                major: 17,
                minor: 8,
                patch: 1
            })
        );
        assert_eq!(
            Version::parse("1.2"),
            Some(Version {
                major: 1,
                minor: 2,
                patch: 0
            })
        );
        assert_eq!(Version::parse("x"), None);
    }
}
