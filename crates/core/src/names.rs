//! Names users choose: agent names (RFC 1123 DNS labels) and the paths of
//! groups and projects.

use thiserror::Error;

/// Why a name was refused. Each variant names the one rule that broke, so
/// the message tells the user what to change.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name is {0} characters long; the limit is 63 (RFC 1123 DNS label)")]
    TooLong(usize),
    #[error("name contains {0:?}; only lowercase letters a-z, digits 0-9 and '-' are allowed (RFC 1123 DNS label)")]
    InvalidChar(char),
    #[error("name must start with a lowercase letter or digit, not '{0}' (RFC 1123 DNS label)")]
    BadStart(char),
    #[error("name must end with a lowercase letter or digit, not '{0}' (RFC 1123 DNS label)")]
    BadEnd(char),
}

/// Checks an agent name against the RFC 1123 DNS label rule.
pub fn validate_agent_name(name: &str) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty)?;
    let count = name.chars().count();
    if count > 63 {
        return Err(NameError::TooLong(count));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::InvalidChar(bad));
    }
    if first == '-' {
        return Err(NameError::BadStart(first));
    }
    let last = name.chars().last().unwrap_or(first);
    if last == '-' {
        return Err(NameError::BadEnd(last));
    }
    Ok(())
}

/// Why a group or project path was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path must not be empty")]
    Empty,
    #[error("path is {0} characters long; the limit is 255")]
    TooLong(usize),
    #[error("path contains {0:?}; use letters, digits, '_', '-' and '.'")]
    InvalidChar(char),
    #[error("path must start and end with a letter, digit or '_'")]
    BadEdge,
    #[error("path must not end in '.git' or '.atom'")]
    ReservedSuffix,
}

/// Checks one segment of a namespace or project path, as GitLab does.
pub fn validate_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > 255 {
        return Err(PathError::TooLong(path.len()));
    }
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(PathError::InvalidChar(bad));
    }
    let edge_ok = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if !path.starts_with(edge_ok) || !path.ends_with(edge_ok) {
        return Err(PathError::BadEdge);
    }
    if path.ends_with(".git") || path.ends_with(".atom") {
        return Err(PathError::ReservedSuffix);
    }
    Ok(())
}

/// Turns a display name into a path, as GitLab does when only `name` is given.
pub fn path_from_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches(|c| c == '-' || c == '.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_agent_names() {
        for name in ["a", "agent-1", "0", "my-agent-in-prod", &"a".repeat(63)] {
            assert_eq!(validate_agent_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_agent_names_name_the_rule() {
        assert_eq!(validate_agent_name(""), Err(NameError::Empty));
        assert_eq!(validate_agent_name(&"a".repeat(64)), Err(NameError::TooLong(64)));
        assert_eq!(validate_agent_name("Agent"), Err(NameError::InvalidChar('A')));
        assert_eq!(validate_agent_name("-agent"), Err(NameError::BadStart('-')));
        assert_eq!(validate_agent_name("agent-"), Err(NameError::BadEnd('-')));
        assert_eq!(validate_agent_name("my_agent"), Err(NameError::InvalidChar('_')));
        assert_eq!(validate_agent_name("my.agent"), Err(NameError::InvalidChar('.')));
        assert_eq!(validate_agent_name("agént"), Err(NameError::InvalidChar('é')));
        let message = validate_agent_name(&"a".repeat(64)).unwrap_err().to_string();
        assert!(message.contains("63"), "{message}");
    }

    #[test]
    fn paths() {
        assert_eq!(validate_path("my-project.v2"), Ok(()));
        assert_eq!(validate_path("x.git"), Err(PathError::ReservedSuffix));
        assert_eq!(validate_path("-x"), Err(PathError::BadEdge));
        assert_eq!(validate_path("a/b"), Err(PathError::InvalidChar('/')));
        assert_eq!(path_from_name("My Cool Project"), "my-cool-project");
    }
}
