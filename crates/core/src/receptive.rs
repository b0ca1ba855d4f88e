//! Receptive agents, which kas dials: what their URL configuration may
//! say. GitLab takes certificates and keys as PEM or as base64 of the PEM
//! (its code decodes base64, its docs say PEM): both are accepted.

use base64::Engine;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceptiveError {
    #[error("url {0:?} must be grpc://<host>[:port] or grpcs://<host>[:port] (the agent's listener)")]
    Url(String),
    #[error("{0} is neither PEM nor base64-encoded PEM")]
    Pem(&'static str),
    #[error("client_cert and client_key go together (mTLS instead of the JWT)")]
    ClientPair,
    #[error("tls_host {0:?} is not a host name")]
    TlsHost(String),
}

/// The agent's address: `grpc://` (cleartext) or `grpcs://` (TLS), a host,
/// an optional port; a path is ignored, as upstream does.
pub fn validate_url(url: &str) -> Result<(), ReceptiveError> {
    let bad = || ReceptiveError::Url(url.to_string());
    let rest = url
        .strip_prefix("grpcs://")
        .or_else(|| url.strip_prefix("grpc://"))
        .ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(bad());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (host, Some(port)),
        _ => (authority, None),
    };
    if host.is_empty() || port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(bad());
    }
    Ok(())
}

/// PEM text from PEM or base64-encoded PEM.
pub fn pem(field: &'static str, value: &str) -> Result<String, ReceptiveError> {
    let value = value.trim();
    let text = if value.starts_with("-----BEGIN ") {
        value.to_string()
    } else {
        let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = B64.decode(compact).map_err(|_| ReceptiveError::Pem(field))?;
        String::from_utf8(bytes).map_err(|_| ReceptiveError::Pem(field))?
    };
    let text = text.trim().to_string();
    if text.starts_with("-----BEGIN ") && text.contains("-----END ") {
        Ok(text + "\n")
    } else {
        Err(ReceptiveError::Pem(field))
    }
}

/// A TLS server name to expect instead of the URL's host.
pub fn validate_tls_host(host: &str) -> Result<(), ReceptiveError> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(ReceptiveError::TlsHost(host.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_grpc_or_grpcs_with_a_host() {
        for good in [
            "grpc://agent.example:8082",
            "grpcs://agent.example",
            "grpcs://10.0.0.7:443/ignored/path",
            "grpcs://[::1]:8082",
        ] {
            assert_eq!(validate_url(good), Ok(()), "{good}");
        }
        for bad in [
            "wss://kas.example/-/kubernetes-agent/",
            "grpc://",
            "grpcs://:8082",
            "grpcs://agent:http",
            "grpcs://user@agent:1",
            "agent:8082",
        ] {
            let error = validate_url(bad).unwrap_err();
            assert!(error.to_string().contains("must be grpc://"), "{bad}");
        }
    }

    #[test]
    fn certificates_come_as_pem_or_base64_pem() {
        let pem_text = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert_eq!(pem("ca_cert", pem_text).unwrap(), format!("{pem_text}\n"));
        let encoded = B64.encode(pem_text);
        assert_eq!(pem("ca_cert", &encoded).unwrap(), format!("{pem_text}\n"));
        assert_eq!(pem("ca_cert", "not a cert"), Err(ReceptiveError::Pem("ca_cert")));
        assert_eq!(
            pem("client_key", &B64.encode("plain text")),
            Err(ReceptiveError::Pem("client_key"))
        );
        assert!(validate_tls_host("agent.internal").is_ok());
        assert!(validate_tls_host("bad host").is_err());
    }
}
