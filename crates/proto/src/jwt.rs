//! The JWT kas presents when it dials a receptive agent: EdDSA (Ed25519)
//! only, signed with the key kas made for the agent's URL configuration,
//! `iss` `gitlab-kas`, `aud` `gitlab-agent`, valid for 5 seconds around its
//! issue time, as upstream. agentk verifies every one with the public key it
//! was installed with before it does any work. Computation only, no I/O.

use base64::Engine;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Who issues the JWT.
pub const ISSUER: &str = "gitlab-kas";
/// Who the JWT is for.
pub const AUDIENCE: &str = "gitlab-agent";
/// `nbf` and `exp` lie this far before and after the issue time.
pub const VALIDITY_SECONDS: u64 = 5;
/// How far the two clocks may disagree.
pub const LEEWAY_SECONDS: u64 = 5;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the JWT is not three base64url parts of JSON")]
    Malformed,
    #[error("the JWT's algorithm is {0:?}; only EdDSA is accepted")]
    Algorithm(String),
    #[error(
        "the JWT's signature does not verify with this agent's public key (is --api-jwt-file the URL configuration's public_key?)"
    )]
    Signature,
    #[error("the JWT expired {0} s ago (are the clocks of kas and the agent's node apart?)")]
    Expired(u64),
    #[error("the JWT is not valid for another {0} s (are the clocks of kas and the agent's node apart?)")]
    NotYetValid(u64),
    #[error("the JWT's audience is {0:?}, not {AUDIENCE:?}")]
    Audience(Vec<String>),
    #[error("the JWT's issuer is {0:?}, not {ISSUER:?}")]
    Issuer(String),
    #[error("the public key is not base64 of a 32-byte Ed25519 key")]
    PublicKey,
    #[error("the private key is not an Ed25519 key in PKCS#8")]
    PrivateKey,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// What kas's JWT says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: Vec<String>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// kas's JWT for a receptive agent, signed with `pkcs8` (the URL
/// configuration's private key), issued at `now` (Unix seconds).
pub fn sign(pkcs8: &[u8], now: u64) -> Result<String, JwtError> {
    let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| JwtError::PrivateKey)?;
    let header = Header {
        alg: "EdDSA".into(),
        typ: Some("JWT".into()),
    };
    let claims = Claims {
        iss: ISSUER.into(),
        aud: vec![AUDIENCE.into()],
        iat: now,
        nbf: now.saturating_sub(VALIDITY_SECONDS),
        exp: now + VALIDITY_SECONDS,
    };
    let signing_input = format!(
        "{}.{}",
        B64URL.encode(serde_json::to_vec(&header).expect("a header serialises")),
        B64URL.encode(serde_json::to_vec(&claims).expect("claims serialise"))
    );
    let signature = key.sign(signing_input.as_bytes());
    Ok(format!("{signing_input}.{}", B64URL.encode(signature.as_ref())))
}

/// Checks kas's JWTs with the agent's copy of the public key.
#[derive(Debug)]
pub struct Verifier {
    key: Vec<u8>,
}

impl Verifier {
    /// From the URL configuration's `public_key` (base64 of the raw 32
    /// bytes), as the chart mounts it; surrounding white space is ignored.
    pub fn from_base64(text: &str) -> Result<Verifier, JwtError> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let key = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| JwtError::PublicKey)?;
        if key.len() != 32 {
            return Err(JwtError::PublicKey);
        }
        Ok(Verifier { key })
    }

    /// The claims of a JWT that kas signed for this agent and that is valid
    /// at `now` (Unix seconds); anything else is refused with the reason.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let decode = |part: &str| B64URL.decode(part).map_err(|_| JwtError::Malformed);
        let header: Header = serde_json::from_slice(&decode(header)?).map_err(|_| JwtError::Malformed)?;
        if header.alg != "EdDSA" {
            return Err(JwtError::Algorithm(header.alg));
        }
        let signing_input = &token[..token.len() - signature.len() - 1];
        UnparsedPublicKey::new(&ED25519, &self.key)
            .verify(signing_input.as_bytes(), &decode(signature)?)
            .map_err(|_| JwtError::Signature)?;
        let claims: Claims = serde_json::from_slice(&decode(claims)?).map_err(|_| JwtError::Malformed)?;
        if claims.iss != ISSUER {
            return Err(JwtError::Issuer(claims.iss));
        }
        if !claims.aud.iter().any(|a| a == AUDIENCE) {
            return Err(JwtError::Audience(claims.aud));
        }
        if now > claims.exp + LEEWAY_SECONDS {
            return Err(JwtError::Expired(now - claims.exp));
        }
        if now + LEEWAY_SECONDS < claims.nbf {
            return Err(JwtError::NotYetValid(claims.nbf - now));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    const NOW: u64 = 1_800_000_000;

    fn key() -> (Vec<u8>, Verifier) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = base64::engine::general_purpose::STANDARD.encode(pair.public_key().as_ref());
        (
            pkcs8.as_ref().to_vec(),
            Verifier::from_base64(&format!("{public}\n")).unwrap(),
        )
    }

    /// A token with these header and claims, signed with `pkcs8`.
    fn forged(pkcs8: &[u8], header: serde_json::Value, claims: serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let signature = Ed25519KeyPair::from_pkcs8(pkcs8).unwrap().sign(input.as_bytes());
        format!("{input}.{}", B64URL.encode(signature.as_ref()))
    }

    fn claims(iss: &str, aud: &str, issued: u64) -> serde_json::Value {
        serde_json::json!({"iss": iss, "aud": [aud], "iat": issued, "nbf": issued - 5, "exp": issued + 5})
    }

    #[test]
    fn kas_tokens_verify_within_their_validity() {
        let (pkcs8, verifier) = key();
        let token = sign(&pkcs8, NOW).unwrap();
        let claims = verifier.verify(&token, NOW).unwrap();
        assert_eq!(
            (claims.iss.as_str(), claims.aud.as_slice()),
            (ISSUER, &[AUDIENCE.to_string()][..])
        );
        assert_eq!((claims.nbf, claims.exp), (NOW - 5, NOW + 5));
        assert!(
            verifier.verify(&token, NOW + 10).is_ok(),
            "within the clock-skew allowance"
        );
        assert!(
            verifier.verify(&token, NOW - 10).is_ok(),
            "within the clock-skew allowance"
        );
    }

    #[test]
    fn every_other_token_is_refused_with_its_reason() {
        let (pkcs8, verifier) = key();
        let eddsa = serde_json::json!({"alg": "EdDSA", "typ": "JWT"});
        let good = claims(ISSUER, AUDIENCE, NOW);
        // alg none: no signature at all.
        let none = format!(
            "{}.{}.",
            B64URL.encode(serde_json::json!({"alg": "none"}).to_string()),
            B64URL.encode(good.to_string())
        );
        assert_eq!(verifier.verify(&none, NOW), Err(JwtError::Algorithm("none".into())));
        // HS256, "signed" with the public key as a shared secret.
        let hs256 = forged(&pkcs8, serde_json::json!({"alg": "HS256"}), good.clone());
        assert_eq!(verifier.verify(&hs256, NOW), Err(JwtError::Algorithm("HS256".into())));
        // Another key.
        let (other, _) = key();
        assert_eq!(
            verifier.verify(&sign(&other, NOW).unwrap(), NOW),
            Err(JwtError::Signature)
        );
        // Expired, and not yet valid.
        let token = sign(&pkcs8, NOW).unwrap();
        assert_eq!(verifier.verify(&token, NOW + 11), Err(JwtError::Expired(6)));
        assert_eq!(verifier.verify(&token, NOW - 11), Err(JwtError::NotYetValid(6)));
        // Wrong audience, wrong issuer (signed with the right key).
        let aud = forged(&pkcs8, eddsa.clone(), claims(ISSUER, "someone-else", NOW));
        assert_eq!(
            verifier.verify(&aud, NOW),
            Err(JwtError::Audience(vec!["someone-else".into()]))
        );
        let iss = forged(&pkcs8, eddsa.clone(), claims("gitlab-agent", AUDIENCE, NOW));
        assert_eq!(verifier.verify(&iss, NOW), Err(JwtError::Issuer("gitlab-agent".into())));
        // A changed payload no longer matches its signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        parts[1] = B64URL.encode(claims(ISSUER, AUDIENCE, NOW + 3600).to_string());
        assert_eq!(verifier.verify(&parts.join("."), NOW), Err(JwtError::Signature));
        for malformed in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert_eq!(verifier.verify(malformed, NOW), Err(JwtError::Malformed), "{malformed}");
        }
        assert_eq!(Verifier::from_base64("c2hvcnQ=").unwrap_err(), JwtError::PublicKey);
        assert_eq!(sign(b"not pkcs8", NOW).unwrap_err(), JwtError::PrivateKey);
        assert!(JwtError::Signature.to_string().contains("--api-jwt-file"));
    }
}
