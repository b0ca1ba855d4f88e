//! GitLab's rules for environments: which names are valid, the slug made
//! from a name, the tier guessed from a name, and the shape of the fields
//! that link an environment to a cluster (`kubernetes_namespace`,
//! `flux_resource_path`).

use serde::{Deserialize, Serialize};

/// An environment's deployment tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Production,
    Staging,
    Testing,
    Development,
    Other,
}

impl Tier {
    pub const ALL: [Tier; 5] = [
        Tier::Production,
        Tier::Staging,
        Tier::Testing,
        Tier::Development,
        Tier::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Production => "production",
            Tier::Staging => "staging",
            Tier::Testing => "testing",
            Tier::Development => "development",
            Tier::Other => "other",
        }
    }

    /// The tier named `name`, or why there is none.
    pub fn parse(name: &str) -> Result<Tier, EnvironmentError> {
        Tier::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| EnvironmentError::Tier(name.to_string()))
    }

    /// The tier GitLab guesses from an environment's name when none is
    /// given, by the first of these that the lowercased name contains:
    /// development (`dev`, `review`, `trunk`), testing (`test`, `tst`,
    /// `int`, `accept`, `acpt`, `qa`, `qc`, `control`, `quality`), staging
    /// (`stag`, `stg`, `model`, `modl`, `pre`, `demo`, `non`), production
    /// (`prod`, `prd`, `live`); anything else is other.
    pub fn guess(name: &str) -> Tier {
        let name = name.to_ascii_lowercase();
        let has = |parts: &[&str]| parts.iter().any(|p| name.contains(p));
        if has(&["dev", "review", "trunk"]) {
            Tier::Development
        } else if has(&["test", "tst", "int", "accept", "acpt", "qa", "qc", "control", "quality"]) {
            Tier::Testing
        } else if has(&["stag", "stg", "model", "modl", "pre", "demo", "non"]) {
            Tier::Staging
        } else if has(&["prod", "prd", "live"]) {
            Tier::Production
        } else {
            Tier::Other
        }
    }
}

/// Whether an environment is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Available,
    Stopping,
    Stopped,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Available => "available",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }

    pub fn parse(name: &str) -> Option<State> {
        [State::Available, State::Stopping, State::Stopped]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentError {
    #[error(
        "name can contain only letters, digits, '-', '_', '/', '$', '{{', '}}', '.', and spaces, but it cannot start or end with '/' (and is at most 255 characters)"
    )]
    Name,
    #[error("tier {0:?} is not one of production, staging, testing, development, other")]
    Tier(String),
    #[error(
        "kubernetes_namespace {0:?} is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)"
    )]
    Namespace(String),
    #[error(
        "flux_resource_path {0:?} must be the path after /apis/ of a Kustomization or HelmRelease, e.g. helm.toolkit.fluxcd.io/v2/namespaces/flux-system/helmreleases/gitlab-agent"
    )]
    FluxResourcePath(String),
    #[error("external_url {0:?} must be an http:// or https:// URL")]
    ExternalUrl(String),
}

/// GitLab's environment name rule.
pub fn validate_name(name: &str) -> Result<(), EnvironmentError> {
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '/' | '$' | '{' | '}' | '.' | ' ');
    let ok = !name.trim().is_empty()
        && name.chars().count() <= 255
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name.chars().all(allowed);
    if ok { Ok(()) } else { Err(EnvironmentError::Name) }
}

/// The slug of a name, as GitLab makes it: lowercase letters and digits,
/// other characters as `-`, no `-` twice in a row, starting with a letter
/// (`env-` is put in front otherwise), at most 24 characters, not ending in
/// `-`. When that changed the name, the slug ends in 6 characters derived
/// from the name's SHA-256, so that names that slug alike do not collide.
pub fn slug(name: &str) -> String {
    let lowered: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let prefixed = if lowered.starts_with(|c: char| c.is_ascii_lowercase()) {
        lowered
    } else {
        format!("env-{lowered}")
    };
    let mut squeezed = String::with_capacity(prefixed.len());
    for c in prefixed.chars() {
        if !(c == '-' && squeezed.ends_with('-')) {
            squeezed.push(c);
        }
    }
    if squeezed.len() > 24 || squeezed != name {
        let mut short: String = squeezed.chars().take(17).collect();
        if !short.ends_with('-') {
            short.push('-');
        }
        short.push_str(&name_suffix(name));
        short
    } else {
        squeezed.trim_end_matches('-').to_string()
    }
}

/// The last 6 base-36 digits of the name's SHA-256 read as a number.
fn name_suffix(name: &str) -> String {
    use sha2::Digest;
    const MODULUS: u64 = 36u64.pow(6);
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut rest = digest.iter().fold(0u64, |r, b| (r * 256 + u64::from(*b)) % MODULUS);
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = b"0123456789abcdefghijklmnopqrstuvwxyz"[(rest % 36) as usize];
        rest /= 36;
    }
    String::from_utf8(digits.to_vec()).expect("ASCII")
}

/// A Kubernetes namespace name (an RFC 1123 label).
pub fn validate_namespace(namespace: &str) -> Result<(), EnvironmentError> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 63
        && namespace
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(EnvironmentError::Namespace(namespace.to_string()))
    }
}

/// A Flux object as GitLab links it: `<group>/<version>/namespaces/<ns>/
/// <kustomizations|helmreleases>/<name>`, the path after `/apis/`.
pub fn validate_flux_resource_path(path: &str) -> Result<(), EnvironmentError> {
    let bad = || EnvironmentError::FluxResourcePath(path.to_string());
    let parts: Vec<&str> = path.split('/').collect();
    let [group, version, "namespaces", namespace, resource, name] = parts.as_slice() else {
        return Err(bad());
    };
    let kind_ok = matches!(
        (*group, *resource),
        ("kustomize.toolkit.fluxcd.io", "kustomizations") | ("helm.toolkit.fluxcd.io", "helmreleases")
    );
    let version_ok = version.starts_with('v') && version.len() > 1;
    if kind_ok && version_ok && validate_namespace(namespace).is_ok() && !name.is_empty() {
        Ok(())
    } else {
        Err(bad())
    }
}

/// An environment's external URL.
pub fn validate_external_url(url: &str) -> Result<(), EnvironmentError> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) => Ok(()),
        _ => Err(EnvironmentError::ExternalUrl(url.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_gitlabs_rules() {
        assert_eq!(slug("production"), "production");
        assert_eq!(slug("staging-2"), "staging-2");
        // Changed by the rules: shortened and given the name's suffix.
        let review = slug("review/feature-x");
        assert!(review.starts_with("review-feature-x-"), "{review}");
        assert_eq!(review.len(), 23);
        let long = slug("a-very-long-environment-name-indeed");
        assert!(long.starts_with("a-very-long-envir-"), "{long}");
        assert_eq!(long.len(), 24);
        assert!(slug("1st").starts_with("env-1st-"), "must start with a letter");
        assert!(slug("Prod").starts_with("prod-"), "upper case changes the name");
        assert_ne!(slug("review/a"), slug("review-a"), "names that slug alike still differ");
        assert_eq!(slug("review/a"), slug("review/a"), "the same name, the same slug");
        for name in ["production", "review/feature-x", "1st", "Ünïcode name"] {
            let s = slug(name);
            assert!(
                s.len() <= 24 && !s.ends_with('-') && s.starts_with(|c: char| c.is_ascii_lowercase()),
                "{s}"
            );
            assert!(!s.contains("--"), "{s}");
        }
    }

    #[test]
    fn tiers_are_guessed_from_names() {
        for (name, tier) in [
            ("production", Tier::Production),
            ("prod-eu", Tier::Production),
            ("live", Tier::Production),
            ("staging", Tier::Staging),
            ("pre-prod", Tier::Staging),
            ("preview", Tier::Development),
            ("qa", Tier::Testing),
            ("integration-tests", Tier::Testing),
            ("review/feature-x", Tier::Development),
            ("dev", Tier::Development),
            ("sandbox", Tier::Other),
        ] {
            assert_eq!(Tier::guess(name), tier, "{name}");
        }
        assert_eq!(Tier::parse("staging"), Ok(Tier::Staging));
        assert!(
            Tier::parse("prod")
                .unwrap_err()
                .to_string()
                .contains("not one of production")
        );
    }

    #[test]
    fn names_namespaces_flux_paths_and_urls_are_checked() {
        assert!(validate_name("review/feature-x ${CI}").is_ok());
        for bad in ["", "/leading", "trailing/", "semi;colon", &"x".repeat(256)] {
            assert_eq!(validate_name(bad), Err(EnvironmentError::Name), "{bad}");
        }
        assert!(validate_namespace("gitlab-agent").is_ok());
        for bad in ["", "Upper", "-dash", "dash-", "a_b", &"a".repeat(64)] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
        assert!(
            validate_flux_resource_path("helm.toolkit.fluxcd.io/v2/namespaces/flux-system/helmreleases/gitlab-agent")
                .is_ok()
        );
        assert!(
            validate_flux_resource_path("kustomize.toolkit.fluxcd.io/v1/namespaces/apps/kustomizations/web").is_ok()
        );
        for bad in [
            "HelmRelease/flux-system",
            "helm.toolkit.fluxcd.io/v2/namespaces/flux-system/kustomizations/x",
            "apps/v1/namespaces/default/deployments/web",
            "helm.toolkit.fluxcd.io/v2/namespaces/Bad/helmreleases/x",
            "helm.toolkit.fluxcd.io/v2/namespaces/ns/helmreleases/",
        ] {
            let error = validate_flux_resource_path(bad).unwrap_err();
            assert!(error.to_string().contains("the path after /apis/"), "{bad}");
        }
        assert!(validate_external_url("https://app.example.com/x").is_ok());
        for bad in ["app.example.com", "ftp://x", "https://", "https://a b"] {
            assert!(validate_external_url(bad).is_err(), "{bad}");
        }
    }
}
