//! Choosing an HTTP CONNECT proxy the way curl and Go do: `HTTPS_PROXY` for
//! TLS targets, `HTTP_PROXY` for plain ones, both also in lower case (lower
//! case wins), and `NO_PROXY` to bypass (`*`, host names and domain
//! suffixes, IP addresses, IPv4 CIDR ranges, optional `:port`).

use std::net::{IpAddr, Ipv4Addr};

use base64::Engine;

/// A proxy to tunnel through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `Proxy-Authorization` value, from `user:pass@` in the proxy URL.
    pub authorization: Option<String>,
}

impl Proxy {
    /// Parses `http://[user:pass@]host[:port]` or `host[:port]`.
    pub fn parse(value: &str) -> Result<Proxy, String> {
        let rest = match value.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "proxy {value:?}: scheme {scheme}:// is not supported, use http://"
                ));
            }
            None => value,
        };
        let rest = rest.trim_end_matches('/');
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((auth, hostport)) => (Some(auth), hostport),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || hostport.starts_with('[') => {
                let port = port
                    .parse()
                    .map_err(|_| format!("proxy {value:?}: bad port {port:?}"))?;
                (host, port)
            }
            _ => (hostport, 80),
        };
        if host.is_empty() {
            return Err(format!("proxy {value:?} has no host"));
        }
        Ok(Proxy {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            authorization: auth.map(|a| {
                let decoded = percent_decode(a);
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(decoded))
            }),
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// The proxy for `host:port`, given how to read the environment.
pub fn proxy_for(
    tls: bool,
    host: &str,
    port: u16,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, String> {
    let read = |name: &str| {
        env(&name.to_ascii_lowercase())
            .or_else(|| env(name))
            .filter(|v| !v.trim().is_empty())
    };
    let configured = if tls { read("HTTPS_PROXY") } else { read("HTTP_PROXY") };
    let Some(configured) = configured else { return Ok(None) };
    if let Some(no_proxy) = read("NO_PROXY")
        && bypass(&no_proxy, host, port)
    {
        return Ok(None);
    }
    Proxy::parse(configured.trim()).map(Some)
}

/// The proxy for `host:port` from the process environment.
pub fn proxy_from_env(tls: bool, host: &str, port: u16) -> Result<Option<Proxy>, String> {
    proxy_for(tls, host, port, |name| std::env::var(name).ok())
}

fn bypass(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    let host_ip: Option<IpAddr> = host.parse().ok();
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let (entry, entry_port) = match entry.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
                _ => (entry, None),
            };
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            let entry = entry.trim_matches(['[', ']']).to_ascii_lowercase();
            if let Some((net, bits)) = entry.split_once('/') {
                return match (net.parse::<Ipv4Addr>(), bits.parse::<u32>(), host_ip) {
                    (Ok(net), Ok(bits), Some(IpAddr::V4(ip))) if bits <= 32 => {
                        let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
                        u32::from(net) & mask == u32::from(ip) & mask
                    }
                    _ => false,
                };
            }
            if let (Ok(entry_ip), Some(ip)) = (entry.parse::<IpAddr>(), host_ip) {
                return entry_ip == ip;
            }
            let domain = entry.trim_start_matches("*.").trim_start_matches('.');
            host == domain || host.ends_with(&format!(".{domain}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn picks_by_scheme_and_lower_case_wins() {
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "lower:8080"),
            ("HTTP_PROXY", "plain:1"),
        ]);
        assert_eq!(
            proxy_for(true, "kas.example.com", 443, &e).unwrap().unwrap().host,
            "lower"
        );
        assert_eq!(
            proxy_for(false, "kas.example.com", 80, &e).unwrap().unwrap().host,
            "plain"
        );
        assert_eq!(proxy_for(true, "x", 443, env(&[])).unwrap(), None);
    }

    #[test]
    fn no_proxy_rules() {
        let e = env(&[
            ("HTTPS_PROXY", "p:3128"),
            ("NO_PROXY", "example.com, 10.0.0.0/8,192.168.1.5,internal:8443"),
        ]);
        assert!(proxy_for(true, "kas.example.com", 443, &e).unwrap().is_none());
        assert!(proxy_for(true, "example.com", 443, &e).unwrap().is_none());
        assert!(proxy_for(true, "notexample.com", 443, &e).unwrap().is_some());
        assert!(proxy_for(true, "10.1.2.3", 443, &e).unwrap().is_none());
        assert!(proxy_for(true, "11.1.2.3", 443, &e).unwrap().is_some());
        assert!(proxy_for(true, "192.168.1.5", 443, &e).unwrap().is_none());
        assert!(proxy_for(true, "internal", 8443, &e).unwrap().is_none());
        assert!(proxy_for(true, "internal", 443, &e).unwrap().is_some());
        let all = env(&[("https_proxy", "p:1"), ("no_proxy", "*")]);
        assert!(proxy_for(true, "anything", 1, &all).unwrap().is_none());
    }

    #[test]
    fn parses_credentials_and_rejects_https_proxies() {
        let proxy = Proxy::parse("http://user:p%40ss@proxy.local:3128").unwrap();
        assert_eq!((proxy.host.as_str(), proxy.port), ("proxy.local", 3128));
        let expected = base64::engine::general_purpose::STANDARD.encode("user:p@ss");
        assert_eq!(proxy.authorization, Some(format!("Basic {expected}")));
        assert!(Proxy::parse("https://proxy:443").unwrap_err().contains("not supported"));
        assert_eq!(Proxy::parse("proxy").unwrap().port, 80);
    }
}
