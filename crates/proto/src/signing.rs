//! How kas replicas sign the private requests they forward to each other:
//! HMAC-SHA256 with the secret they share over a timestamp, the agent, the
//! identity decided, the method and the path, valid for a minute. The
//! comparison is constant-time.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};

/// How long a signature is valid, either way of now (seconds).
pub const SIGNATURE_WINDOW: u64 = 60;

/// Signs and verifies with one shared secret.
pub struct RequestSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestSigner(redacted)")
    }
}

impl RequestSigner {
    pub fn new(secret: Vec<u8>) -> RequestSigner {
        RequestSigner { secret }
    }

    fn mac(&self, timestamp: u64, agent_id: i64, identity: &str, method: &str, path: &str) -> Hmac<sha2::Sha256> {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(format!("{timestamp}\n{agent_id}\n{identity}\n{method}\n{path}").as_bytes());
        mac
    }

    /// The signature of a request made now.
    pub fn sign(&self, agent_id: i64, identity: &str, method: &str, path: &str) -> String {
        self.sign_at(unix_now(), agent_id, identity, method, path)
    }

    fn sign_at(&self, timestamp: u64, agent_id: i64, identity: &str, method: &str, path: &str) -> String {
        let tag = self
            .mac(timestamp, agent_id, identity, method, path)
            .finalize()
            .into_bytes();
        format!("{timestamp}.{}", hex::encode(tag))
    }

    /// Whether `signature` was made with this secret, for exactly this
    /// agent, identity, method and path, within the window.
    pub fn verify(&self, signature: &str, agent_id: i64, identity: &str, method: &str, path: &str) -> bool {
        let Some((timestamp, tag)) = signature.split_once('.') else {
            return false;
        };
        let (Ok(timestamp), Ok(tag)) = (timestamp.parse::<u64>(), hex::decode(tag)) else {
            return false;
        };
        unix_now().abs_diff(timestamp) <= SIGNATURE_WINDOW
            && self
                .mac(timestamp, agent_id, identity, method, path)
                .verify_slice(&tag)
                .is_ok()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_agent_identity_method_and_path() {
        let a = RequestSigner::new(b"a".repeat(32));
        let signature = a.sign(7, "id", "GET", "/p?q=1");
        assert!(a.verify(&signature, 7, "id", "GET", "/p?q=1"));
        assert!(!a.verify(&signature, 8, "id", "GET", "/p?q=1"));
        assert!(!a.verify(&signature, 7, "other", "GET", "/p?q=1"));
        assert!(!a.verify(&signature, 7, "id", "DELETE", "/p?q=1"));
        assert!(!a.verify(&signature, 7, "id", "GET", "/p?q=2"));
        assert!(!a.verify("garbage", 7, "id", "GET", "/p?q=1"));
        assert!(!a.verify("1.zz", 7, "id", "GET", "/p?q=1"));
        let b = RequestSigner::new(b"b".repeat(32));
        assert!(!b.verify(&signature, 7, "id", "GET", "/p?q=1"), "another secret");
        let stale = a.sign_at(unix_now() - SIGNATURE_WINDOW - 5, 7, "id", "GET", "/p?q=1");
        assert!(!a.verify(&stale, 7, "id", "GET", "/p?q=1"), "too old");
        let early = a.sign_at(unix_now() + SIGNATURE_WINDOW + 5, 7, "id", "GET", "/p?q=1");
        assert!(!a.verify(&early, 7, "id", "GET", "/p?q=1"), "from the future");
    }
}
