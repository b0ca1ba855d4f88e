//! TLS for kas: the operator's certificate, or a CA and server certificate
//! generated into `<data-dir>/tls` on first start.
//!
//! The CA persists so that clients configured to trust `ca.crt` keep working
//! across restarts; the server certificate is re-issued at every start so
//! that it always names the current external host.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Loads a PEM chain and key into a rustls server config (ALPN h2 + http/1.1).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .context("reading the TLS certificate PEM")?;
    anyhow::ensure!(!certs.is_empty(), "the TLS certificate file holds no certificate");
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .context("reading the TLS key PEM")?
        .context("the TLS key file holds no private key")?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Returns (certificate chain PEM, key PEM) for `host`, creating the CA in
/// `dir` if it does not exist yet; writes them to `server.crt`/`server.key`.
pub fn generated_certificate(dir: &Path, host: &str) -> Result<(String, String)> {
    issue(dir, host, "server")
}

/// A certificate for this replica's private API at `host`, from the CA in
/// the data directory the replicas share; written to `private-<host>.crt`.
pub fn private_certificate(dir: &Path, host: &str) -> Result<(String, String)> {
    issue(dir, host, &format!("private-{}", host.replace([':', '/'], "_")))
}

/// The generated CA's certificate (PEM), creating the CA if needed.
pub fn ca_certificate(dir: &Path) -> Result<String> {
    Ok(ca(dir)?.0)
}

fn ca(dir: &Path) -> Result<(String, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_cert_path = dir.join("ca.crt");
    let ca_key_path = dir.join("ca.key");
    if ca_cert_path.exists() && ca_key_path.exists() {
        return Ok((
            std::fs::read_to_string(&ca_cert_path)?,
            std::fs::read_to_string(&ca_key_path)?,
        ));
    }
    let key = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    let key_pem = key.serialize_pem();
    write_private(&ca_key_path, &key_pem)?;
    std::fs::write(&ca_cert_path, cert.pem())?;
    Ok((cert.pem(), key_pem))
}

fn issue(dir: &Path, host: &str, stem: &str) -> Result<(String, String)> {
    let (ca_cert_pem, ca_key_pem) = ca(dir)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("reading tls/ca.key")?;
    // The issuer needs only the CA's name, key usages and key, all of which
    // are fixed, so the CA certificate need not be parsed back.
    let issuer = Issuer::new(ca_params()?, ca_key);

    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if !names.iter().any(|n| n == host) {
        names.push(host.to_string());
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, host);
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(name.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let key_pem = key.serialize_pem();
    write_private(&dir.join(format!("{stem}.key")), &key_pem)?;
    std::fs::write(dir.join(format!("{stem}.crt")), cert.pem())?;
    Ok((format!("{}{}", cert.pem(), ca_cert_pem), key_pem))
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "glagent kas CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    Ok(params)
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
