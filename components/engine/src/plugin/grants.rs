//! What a plugin may reach beyond its own settings, deny by default: its [`Grants`], the
//! check every outbound URL passes ([`check_url`]), its own key-value namespace and the
//! limits on its log lines.

use serde::{Deserialize, Serialize};

/// A key of a plugin's key-value space: at most this many bytes.
pub const MAX_KV_KEY_BYTES: usize = 256;
/// A value of a plugin's key-value space: at most this many bytes.
pub const MAX_KV_VALUE_BYTES: usize = 64 * 1024;
/// An outbound request's or response's body: at most this many bytes.
pub const MAX_HTTP_BODY_BYTES: usize = 1024 * 1024;
/// A log line is cut at this many bytes.
pub const MAX_LOG_LINE_BYTES: usize = 2048;
/// A hook call may write at most this many log lines.
pub const MAX_LOG_LINES: u32 = 50;

/// What a plugin may reach beyond its own settings. Deny by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// Hosts its outbound requests may go to: `shop.example.com`, or `*.example.com` for any
    /// subdomain (not the domain itself), optionally with a `:port` (without one, only the
    /// scheme's default port). `https://` only, except `localhost`/`127.0.0.1`. See
    /// [`check_url`].
    pub hosts: Vec<String>,
    /// Whether it has its own key-value space.
    pub kv: bool,
}

/// Whether `host` is a host name a grant may name: letters, digits, `-` and dots, optionally
/// led by `*.`, optionally with a `:port`.
pub(super) fn is_grantable_host(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
        && !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Why an outbound request was refused before it was made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// A URL [`check_url`] approved: what a host fetches, in the form the check decided on.
///
/// The check parses the plugin's URL by the WHATWG URL rules (the rules `fetch` follows) and
/// judges the host that parse yields. Hosts then request exactly this serialization, or its
/// parts, never the plugin's original string, so no difference between two URL parsers
/// (`\` read as `/`, tabs and newlines dropped, `%2e` in a host, `0x7f.1` as an IPv4
/// address) can send a request somewhere the check did not see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovedUrl {
    url: url::Url,
}

impl ApprovedUrl {
    /// The URL to fetch: the WHATWG serialization, without a fragment (`https://host/path?q`).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// Whether the scheme is `https` (otherwise it is `http`, to loopback only).
    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// The request's authority: the host, with `:port` when it is not the scheme's default
    /// (`shop.example.com`, `127.0.0.1:9000`). Never carries credentials.
    pub fn authority(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// The path and query, as sent on the request line (`/orders/1?x=y`; at least `/`).
    pub fn path_and_query(&self) -> String {
        match self.url.query() {
            Some(query) => format!("{}?{query}", self.url.path()),
            None => self.url.path().to_owned(),
        }
    }
}

impl std::fmt::Display for ApprovedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest URL a plugin may fetch, in bytes.
pub const MAX_URL_BYTES: usize = 4096;

/// Whether `url` may be fetched under `grants`, and if so the URL to fetch.
///
/// Allowed: an `https://` URL whose host a grant names (or `http://` to `localhost` or
/// `127.0.0.1` when granted, for development and tests), without credentials, on the grant's
/// port (a grant without a port allows only the scheme's default port, 443 or 80). The host
/// is the one the WHATWG parse yields (see [`ApprovedUrl`]): lower case, percent-decoded,
/// IDNA-mapped, an IPv4 address in any of its spellings made dotted-decimal. A host ending in
/// a dot, an IPv6 address and a URL with control characters or whitespace are refused
/// outright, and a wildcard grant (`*.example.com`) matches domain names only, never an
/// address. Hosts enforce this before every `host.fetch` and fetch [`ApprovedUrl::as_str`].
pub fn check_url(url: &str, grants: &Grants) -> Result<ApprovedUrl, Denied> {
    if url.len() > MAX_URL_BYTES {
        return Err(Denied(format!(
            "the URL is longer than {MAX_URL_BYTES} bytes"
        )));
    }
    // WHATWG parsing drops tabs and newlines anywhere and trims controls and spaces at the
    // ends; a URL that needs that is refused rather than repaired.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Denied(
            "malformed URL: whitespace or control characters".into(),
        ));
    }
    let mut parsed = url::Url::parse(url).map_err(|e| Denied(format!("malformed URL: {e}")))?;
    let secure = match parsed.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(Denied("only https:// URLs may be fetched".into())),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Denied("URLs with credentials are refused".into()));
    }
    let (host, is_domain) = match parsed.host() {
        Some(url::Host::Domain(name)) => (name.to_owned(), true),
        Some(url::Host::Ipv4(address)) => (address.to_string(), false),
        Some(url::Host::Ipv6(_)) => {
            return Err(Denied("IPv6 addresses are refused".into()));
        }
        None => return Err(Denied("the URL has no host".into())),
    };
    if host.is_empty() {
        return Err(Denied("the URL has no host".into()));
    }
    if host.ends_with('.') {
        return Err(Denied(format!(
            "{host} refused: a host name may not end in a dot"
        )));
    }
    let loopback = host == "localhost" || host == "127.0.0.1";
    if !secure && !loopback {
        return Err(Denied(format!(
            "http://{host} refused: plain http is only for localhost"
        )));
    }
    // `port_or_known_default` is `Some` for both schemes allowed above.
    let port = parsed.port_or_known_default().unwrap_or(443);
    let default_port = if secure { 443 } else { 80 };
    let granted = grants.hosts.iter().any(|g| {
        let (g_host, g_port) = match g.rsplit_once(':') {
            // A port no URL can have (`:99999`) grants nothing.
            Some((h, p)) => match p.parse::<u16>() {
                Ok(p) => (h, p),
                Err(_) => return false,
            },
            None => (g.as_str(), default_port),
        };
        let port_ok = g_port == port;
        let host_ok = match g_host.strip_prefix("*.") {
            Some(domain) => {
                is_domain
                    && host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
            }
            None => host == g_host,
        };
        port_ok && host_ok
    });
    if !granted {
        let shown = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        return Err(Denied(format!(
            "{shown} is not a host this plugin was granted"
        )));
    }
    // A fragment is never sent; dropping it keeps the approved string the request's own.
    parsed.set_fragment(None);
    Ok(ApprovedUrl { url: parsed })
}

/// The storage key of a plugin's key `key` in a tenant, or why the key is refused. Keys of
/// different tenants and plugin ids never collide (both are slugs, `/` separates them).
pub fn kv_key(tenant: &str, plugin_id: &str, key: &str) -> Result<String, &'static str> {
    if key.is_empty() || key.len() > MAX_KV_KEY_BYTES {
        return Err("too-large");
    }
    Ok(format!("plugin/{tenant}/{plugin_id}/{key}"))
}

/// Cuts a plugin's log line to its limit on a character boundary.
pub fn log_line(message: &str) -> &str {
    if message.len() <= MAX_LOG_LINE_BYTES {
        return message;
    }
    let mut end = MAX_LOG_LINE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}
