//! Secrets kas must keep in usable form (the private keys it signs
//! receptive agents' JWTs with, mTLS client keys) are sealed before they
//! reach the database: AES-256-GCM with a key kept in the data directory
//! (`<data-dir>/secrets/sealing.key`, 0600, shared by replicas like the CA),
//! so a database dump alone yields no usable key.

use std::path::Path;

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("reading or creating the sealing key {path}: {source}")]
    Key { path: String, source: std::io::Error },
    #[error("the sealing key {0} is not 32 bytes: restore it from the other replicas or a backup")]
    KeyLength(String),
    #[error("a sealed secret does not open with this kas's sealing key (another data directory's key?)")]
    Open,
    #[error("the system's random number generator failed")]
    Random,
}

/// Seals and opens secrets with the data directory's key.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// The key in `<dir>/sealing.key`, created on first use.
    pub fn open_dir(dir: &Path) -> Result<Sealer, SealError> {
        let path = dir.join("sealing.key");
        let io = |source| SealError::Key {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            use std::io::Write;
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
            let mut key = [0u8; 32];
            SystemRandom::new().fill(&mut key).map_err(|_| SealError::Random)?;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut file) => file.write_all(&key).map_err(io)?,
                // Another replica sharing the directory made it first.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        let bytes = std::fs::read(&path).map_err(io)?;
        Sealer::from_key(&bytes).ok_or_else(|| SealError::KeyLength(path.display().to_string()))
    }

    fn from_key(bytes: &[u8]) -> Option<Sealer> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(Sealer {
            key: LessSafeKey::new(key),
        })
    }

    /// `base64(nonce ‖ ciphertext ‖ tag)`; `context` (e.g. the row it goes
    /// into) is bound in, so a sealed value cannot be moved to another row.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; 12];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut data = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(B64.encode(out))
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let bytes = B64.decode(sealed).map_err(|_| SealError::Open)?;
        if bytes.len() < 12 + 16 {
            return Err(SealError::Open);
        }
        let (nonce, data) = bytes.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

/// What a URL configuration's sealed keys are bound to: its agent, so a
/// sealed key copied to another agent's row does not open.
pub fn url_configuration_context(agent_id: i64) -> String {
    format!("url_configuration:agent:{agent_id}")
}

/// A new Ed25519 key pair: (the private key as PKCS#8, the raw 32-byte
/// public key).
pub fn new_ed25519_key() -> Result<(Vec<u8>, Vec<u8>), SealError> {
    use ring::signature::KeyPair;
    let rng = SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SealError::Random)?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| SealError::Random)?;
    Ok((pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_context() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::open_dir(&dir.path().join("secrets")).unwrap();
        let sealed = sealer.seal(b"private key", "url_configuration:1").unwrap();
        assert!(!sealed.contains("private key"));
        assert_eq!(sealer.open(&sealed, "url_configuration:1").unwrap(), b"private key");
        assert!(
            matches!(sealer.open(&sealed, "url_configuration:2"), Err(SealError::Open)),
            "other row"
        );
        let mut tampered = B64.decode(&sealed).unwrap();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(sealer.open(&B64.encode(tampered), "url_configuration:1").is_err());
        // The same directory gives the same key (a restart, another replica).
        let again = Sealer::open_dir(&dir.path().join("secrets")).unwrap();
        assert_eq!(again.open(&sealed, "url_configuration:1").unwrap(), b"private key");
        let other = tempfile::tempdir().unwrap();
        let stranger = Sealer::open_dir(other.path()).unwrap();
        assert!(
            stranger.open(&sealed, "url_configuration:1").is_err(),
            "another data directory's key"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets/sealing.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(other.path().join("sealing.key"), b"short").unwrap();
        assert!(matches!(Sealer::open_dir(other.path()), Err(SealError::KeyLength(_))));
    }

    #[test]
    fn ed25519_keys_sign_and_verify() {
        let (pkcs8, public) = new_ed25519_key().unwrap();
        assert_eq!(public.len(), 32);
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let signature = pair.sign(b"jwt");
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public);
        assert!(key.verify(b"jwt", signature.as_ref()).is_ok());
    }
}
