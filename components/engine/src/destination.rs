//! Where a tenant's configuration may send the deployment's requests.
//!
//! A tenant names provider base URLs; the host then fetches them from inside the
//! deployment. On Spin, `http://<component>.spin.internal` reaches the deployment's own
//! components (the plugins' private routes) and a self-hosted Spin may sit beside services
//! on private addresses or a cloud's metadata endpoint. So a provider URL must name a
//! public host or this machine's loopback (local models, development): never an internal
//! name (`*.internal`, `*.local`, `*.localhost`, a single-label name other than
//! `localhost`), a private, link-local, shared or unspecified address, nor any spelling a
//! URL parser could read as another host (userinfo, backslashes, numeric hosts that are not
//! dotted quads, percent-encoding in the host).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a URL was refused, for the configuration error's message.
pub const INTERNAL_MESSAGE: &str =
    "must reach a public host or this machine's loopback, not an internal name or private address";

/// The host of an `http://` or `https://` URL, lower-cased and without a trailing dot, or
/// `None` when the URL is not one whose host every parser agrees on.
pub fn strict_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    if rest[end..].starts_with('\\') {
        // WHATWG reads `\` as `/` in special schemes; other parsers do not.
        return None;
    }
    let authority = &rest[..end];
    if authority.contains('@') || authority.contains('%') {
        return None;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        let (inner, after) = v6.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        inner.parse::<Ipv6Addr>().ok()?;
        format!("[{}]", inner.to_ascii_lowercase())
    } else {
        let host = authority.split(':').next().unwrap_or_default();
        host.trim_end_matches('.').to_ascii_lowercase()
    };
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && !(port.is_empty() || port.parse::<u16>().is_ok())
    {
        return None;
    }
    if host.is_empty()
        || host.starts_with('[') && host.len() < 3
        || !host.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return None;
    }
    Some(host)
}

/// Whether `host` (as [`strict_host`] gives it) is internal to a deployment.
pub fn is_internal_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match v6.parse::<Ipv6Addr>() {
            Ok(ip) => is_internal_v6(ip),
            Err(_) => true,
        };
    }
    let labels: Vec<&str> = host.split('.').collect();
    // WHATWG reads a host whose last label is a number (decimal, or hex after `0x`) as an
    // IPv4 address, in forms other parsers read differently (`2130706433`, `0x7f.1`,
    // `017.0.0.1`): only a plain dotted quad is taken, anything else is refused.
    let last = labels.last().copied().unwrap_or_default();
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
    if numeric {
        let plain = labels.len() == 4
            && labels.iter().all(|l| {
                *l == "0" || (!l.starts_with('0') && l.bytes().all(|b| b.is_ascii_digit()))
            });
        return match host.parse::<Ipv4Addr>() {
            Ok(ip) if plain => is_internal_v4(ip),
            _ => true,
        };
    }
    if host == "localhost" {
        return false;
    }
    labels.len() < 2
        || [
            "internal",
            "local",
            "localhost",
            "localdomain",
            "home",
            "lan",
            "intranet",
            "corp",
        ]
        .iter()
        .any(|tld| labels.last() == Some(tld))
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    if ip.is_loopback() {
        return false;
    }
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if ip.is_loopback() {
        return false;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed internally)
}

/// Checks a provider base URL from a tenant's configuration: `Err(message)` when it is
/// not an `http(s)://` URL with an unambiguous, non-internal host.
pub fn check_provider_url(url: &str) -> Result<(), &'static str> {
    let host = strict_host(url.trim()).ok_or(
        "must be an http:// or https:// URL with a plain host (no user, backslash or percent-encoding in it)",
    )?;
    if is_internal_host(&host) {
        return Err(INTERNAL_MESSAGE);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_hosts_and_loopback_pass() {
        for url in [
            "https://api.openai.com/v1",
            "https://API.Anthropic.com./v1",
            "http://127.0.0.1:8787/v1",
            "http://localhost:11434/v1",
            "http://[::1]:9000/v1",
            "https://8.8.8.8/v1",
            "https://gateway.ai.cloudflare.com/v1/acct/gw/openai",
        ] {
            assert_eq!(check_provider_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn internal_names_and_addresses_are_refused() {
        for url in [
            "http://plugin-pii-redactor.spin.internal/hook",
            "http://metadata.google.internal/computeMetadata/v1",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5/v1",
            "http://172.16.3.4/v1",
            "http://192.168.1.1/v1",
            "http://100.64.0.1/v1",
            "http://0.0.0.0:8080/v1",
            "http://printer.local/v1",
            "http://db/v1",
            "http://[fd00::1]/v1",
            "http://[fe80::1]/v1",
            "http://[::ffff:10.0.0.1]/v1",
            "http://2130706433/v1",
            "http://0x7f000001/v1",
            "http://017.0.0.1/v1",
            "http://0x7f.0.0.1/v1",
        ] {
            assert!(check_provider_url(url).is_err(), "{url} passed");
        }
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for url in [
            "https://evil.net\\.api.openai.com/v1",
            "https://api.openai.com@evil.net/v1",
            "https://api.openai.com%2eevil.net/v1",
            "https://api.openai.com:99999/v1",
            "https:///v1",
            "https://api .openai.com/v1",
            "ftp://api.openai.com/v1",
        ] {
            assert!(check_provider_url(url).is_err(), "{url} passed");
        }
    }
}
