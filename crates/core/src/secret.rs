//! Minting and hashing of the secrets users hold: personal access tokens
//! (`glpat-...`) and agent tokens (`glagent-...`).
//!
//! Only digests are ever stored. A token carries 120 bits (PAT) or 300 bits
//! (agent token) of randomness, so an unsalted SHA-256 digest cannot be
//! reversed, and it can be looked up by equality.

use std::fmt;

use rand::RngExt;
use sha2::{Digest, Sha256};

/// Prefix of personal access tokens, as in GitLab.
pub const PAT_PREFIX: &str = "glpat-";
/// Prefix of CI job tokens, as in GitLab.
pub const JOB_TOKEN_PREFIX: &str = "glcbt-";
/// Prefix of agent tokens.
pub const AGENT_TOKEN_PREFIX: &str = "glagent-";

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// A secret value that never shows itself in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The plain value, for the one place that must hand it to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest under which the secret is stored and looked up.
    pub fn digest(&self) -> String {
        digest(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// SHA-256 of a token, hex encoded.
pub fn digest(token: &str) -> String {
    digest_bytes(token.as_bytes())
}

/// SHA-256 of any bytes, hex encoded.
pub fn digest_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn random_chars(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A new personal access token: `glpat-` and 20 random characters.
pub fn new_personal_access_token() -> Secret {
    Secret(format!("{PAT_PREFIX}{}", random_chars(20)))
}

/// A new agent token: `glagent-` and 50 characters of `[A-Za-z0-9_-]`.
pub fn new_agent_token() -> Secret {
    Secret(format!("{AGENT_TOKEN_PREFIX}{}", random_chars(50)))
}

/// A new password: 24 random characters (the initial root password).
pub fn new_password() -> Secret {
    Secret(random_chars(24))
}

/// A new CI job token: `glcbt-` and 40 random characters.
pub fn new_job_token() -> Secret {
    Secret(format!("{JOB_TOKEN_PREFIX}{}", random_chars(40)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_token_shape() {
        let token = new_agent_token();
        let rest = token.expose().strip_prefix(AGENT_TOKEN_PREFIX).unwrap();
        assert_eq!(rest.len(), 50);
        assert!(rest.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(new_agent_token(), token);
    }

    #[test]
    fn pat_shape_and_digest() {
        let token = new_personal_access_token();
        assert!(token.expose().starts_with(PAT_PREFIX));
        assert_eq!(token.expose().len(), 26);
        assert_eq!(token.digest().len(), 64);
        assert!(!token.digest().contains(token.expose()));
        assert_eq!(format!("{token:?}"), "Secret([redacted])");
    }
}
