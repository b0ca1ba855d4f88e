//! Passwords for signing in to the web UI. Only a PBKDF2-HMAC-SHA256
//! digest is stored (`pbkdf2-sha256$<iterations>$<salt>$<hash>`, base64
//! without padding; 600,000 iterations, OWASP's figure for this function),
//! verified in constant time. Signing in as an unknown user costs the same
//! work as a wrong password, so the time does not tell which it was.

use std::num::NonZeroU32;

use base64::Engine;
use glagent_store::{Store, StoreError, User};
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

const ALGORITHM: pbkdf2::Algorithm = pbkdf2::PBKDF2_HMAC_SHA256;
const ITERATIONS: u32 = 600_000;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;
/// GitLab's minimum.
pub const MIN_LENGTH: usize = 8;
pub const MAX_LENGTH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password is too short (minimum is {MIN_LENGTH} characters)")]
    TooShort,
    #[error("password is too long (maximum is {MAX_LENGTH} characters)")]
    TooLong,
    #[error("the system's random number generator failed")]
    Random,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `password` may be set, as GitLab's rules say.
pub fn validate(password: &str) -> Result<(), PasswordError> {
    match password.chars().count() {
        n if n < MIN_LENGTH => Err(PasswordError::TooShort),
        n if n > MAX_LENGTH => Err(PasswordError::TooLong),
        _ => Ok(()),
    }
}

fn derive(password: &str, salt: &[u8], iterations: NonZeroU32) -> [u8; 32] {
    let mut hash = [0u8; 32];
    pbkdf2::derive(ALGORITHM, iterations, salt, password.as_bytes(), &mut hash);
    hash
}

/// The stored form of `password`.
pub fn digest(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    SystemRandom::new().fill(&mut salt).map_err(|_| PasswordError::Random)?;
    let iterations = NonZeroU32::new(ITERATIONS).expect("non-zero");
    let hash = derive(password, &salt, iterations);
    Ok(format!(
        "pbkdf2-sha256${ITERATIONS}${}${}",
        B64.encode(salt),
        B64.encode(hash)
    ))
}

/// Whether `password` matches the stored `digest`.
pub fn matches(password: &str, digest: &str) -> bool {
    let parts: Vec<&str> = digest.split('$').collect();
    let ["pbkdf2-sha256", iterations, salt, hash] = parts.as_slice() else {
        return false;
    };
    let (Some(iterations), Ok(salt), Ok(hash)) = (
        iterations.parse::<u32>().ok().and_then(NonZeroU32::new),
        B64.decode(salt),
        B64.decode(hash),
    ) else {
        return false;
    };
    pbkdf2::verify(ALGORITHM, iterations, &salt, password.as_bytes(), &hash).is_ok()
}

/// Sets a user's password after checking the rules.
pub async fn set(store: &Store, user_id: i64, password: &str) -> Result<(), PasswordError> {
    validate(password)?;
    let digest = digest(password)?;
    store.set_password_digest(user_id, Some(&digest)).await?;
    Ok(())
}

/// The user, if `username` exists, has a password, and `password` is it.
pub async fn check(store: &Store, username: &str, password: &str) -> Result<Option<User>, StoreError> {
    let found = match store.user_with_password_digest(username).await {
        Ok(found) => Some(found),
        Err(StoreError::NotFound) => None,
        Err(other) => return Err(other),
    };
    match found {
        Some((user, Some(digest))) => {
            let password = password.to_string();
            let ok = tokio::task::spawn_blocking(move || matches(&password, &digest))
                .await
                .unwrap_or(false);
            Ok(ok.then_some(user))
        }
        _ => {
            // The same work as a real check.
            let password = password.to_string();
            let _ = tokio::task::spawn_blocking(move || {
                derive(
                    &password,
                    b"no-such-user-salt",
                    NonZeroU32::new(ITERATIONS).expect("non-zero"),
                )
            })
            .await;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_verify_only_their_password_and_hold_no_password() {
        let stored = digest("correct horse battery").unwrap();
        assert!(stored.starts_with("pbkdf2-sha256$600000$"), "{stored}");
        assert!(!stored.contains("correct"));
        assert!(matches("correct horse battery", &stored));
        assert!(!matches("correct horse batterY", &stored));
        assert!(!matches("correct horse battery", "pbkdf2-sha256$1$$"));
        assert!(!matches("correct horse battery", "plain"));
        assert_ne!(digest("same").unwrap(), digest("same").unwrap(), "salted");
    }

    #[test]
    fn gitlabs_length_rules() {
        assert!(matches!(validate("short"), Err(PasswordError::TooShort)));
        assert!(validate("eight ch").is_ok());
        assert!(matches!(validate(&"x".repeat(129)), Err(PasswordError::TooLong)));
        assert_eq!(
            PasswordError::TooShort.to_string(),
            "password is too short (minimum is 8 characters)"
        );
    }
}
