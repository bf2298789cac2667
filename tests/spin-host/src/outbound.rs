//! Outbound HTTP, gated by the component's `allowed_outbound_hosts` as Spin gates it.
//!
//! An entry is `scheme://host[:port]`: the scheme is a name or `*`; the host a name, `*`,
//! `*.suffix` (any subdomain), an IP address or a CIDR range; the port a number, `*` or a
//! range `a..b` (end exclusive), and when omitted the scheme's well-known port (so
//! `https://api.example.com` allows port 443 only). `insecure:allow-all` allows anything.
//! A request to anything else fails with `wasi:http` error code `HTTP-request-denied`,
//! which is what Spin returns.

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Weak};

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// The parsed `allowed_outbound_hosts` of one component.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    allow_all: bool,
    patterns: Vec<HostPattern>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct HostPattern {
    scheme: Option<String>,
    host: HostMatch,
    port: PortMatch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`: any subdomain of `example.com` (not the domain itself).
    Subdomain(String),
    Cidr(IpAddr, u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PortMatch {
    Any,
    /// `start..end`, end exclusive; a single port is `p..p+1`.
    Range(u16, u32),
}

impl AllowedHosts {
    /// Parses manifest entries whose `{{ variable }}` templates are already expanded.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut allowed = Self::default();
        for entry in entries {
            if entry == "insecure:allow-all" {
                allowed.allow_all = true;
                continue;
            }
            allowed
                .patterns
                .push(HostPattern::parse(entry).map_err(|reason| format!("`{entry}`: {reason}"))?);
        }
        Ok(allowed)
    }

    /// Whether a request to `uri` may leave.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        if self.allow_all {
            return true;
        }
        let Some(scheme) = uri.scheme_str() else {
            return false;
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let Some(port) = uri.port_u16().or_else(|| well_known_port(scheme)) else {
            return false;
        };
        self.patterns
            .iter()
            .any(|p| p.allows(&scheme.to_ascii_lowercase(), &host, port))
    }
}

fn well_known_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "http" => 80,
        "https" => 443,
        "redis" => 6379,
        "mysql" => 3306,
        "postgres" => 5432,
        "mqtt" => 1883,
        _ => return None,
    })
}

impl HostPattern {
    fn parse(entry: &str) -> Result<Self, String> {
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or("must be `scheme://host[:port]` (for example `https://api.example.com`)")?;
        if scheme.is_empty() {
            return Err("the scheme is empty".into());
        }
        let scheme = (scheme != "*").then(|| scheme.to_ascii_lowercase());
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') && !looks_like_cidr(rest) {
            return Err("must not contain a path".into());
        }
        let (host, port) = split_host_port(rest)?;
        let host_match = if host == "*" {
            HostMatch::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            HostMatch::Subdomain(suffix.to_ascii_lowercase())
        } else if let Some((ip, bits)) = host.split_once('/') {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("`{ip}` is not an IP address"))?;
            let bits: u8 = bits
                .parse()
                .map_err(|_| format!("`{bits}` is not a prefix length"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if bits > max {
                return Err(format!("prefix length {bits} is longer than {max}"));
            }
            HostMatch::Cidr(ip, bits)
        } else if host == "self" {
            return Err("`self` (service chaining) is not supported by this host".into());
        } else if host.is_empty() {
            return Err("the host is empty".into());
        } else if host.contains('*') {
            return Err("`*` may stand only for the whole host or a leading `*.`".into());
        } else {
            HostMatch::Exact(host.to_ascii_lowercase())
        };
        let port_match = match port {
            Some("*") => PortMatch::Any,
            Some(p) => match p.split_once("..") {
                Some((a, b)) => {
                    let a: u16 = a.parse().map_err(|_| format!("`{a}` is not a port"))?;
                    let b: u16 = b.parse().map_err(|_| format!("`{b}` is not a port"))?;
                    if a >= b {
                        return Err(format!("port range {a}..{b} is empty"));
                    }
                    PortMatch::Range(a, u32::from(b))
                }
                None => {
                    let p: u16 = p.parse().map_err(|_| format!("`{p}` is not a port"))?;
                    PortMatch::Range(p, u32::from(p) + 1)
                }
            },
            None => {
                let scheme = scheme.as_deref().ok_or(
                    "a wildcard scheme needs an explicit port (for example `*://example.com:443`)",
                )?;
                let p = well_known_port(scheme).ok_or_else(|| {
                    format!("scheme `{scheme}` has no well-known port: give one explicitly")
                })?;
                PortMatch::Range(p, u32::from(p) + 1)
            }
        };
        Ok(Self {
            scheme,
            host: host_match,
            port: port_match,
        })
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let host_ok = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::Subdomain(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
            HostMatch::Cidr(net, bits) => host
                .parse::<IpAddr>()
                .is_ok_and(|ip| in_cidr(ip, *net, *bits)),
        };
        let port_ok = match self.port {
            PortMatch::Any => true,
            PortMatch::Range(start, end) => port >= start && u32::from(port) < end,
        };
        scheme_ok && host_ok && port_ok
    }
}

fn looks_like_cidr(rest: &str) -> bool {
    rest.split_once('/')
        .is_some_and(|(ip, tail)| ip.parse::<IpAddr>().is_ok() && !tail.contains('/'))
}

/// Splits `host[:port]`, with `[v6]:port` for IPv6 addresses.
fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or("an IPv6 address must be closed with `]`")?;
        return Ok(match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("unexpected `{after}` after the address")),
        });
    }
    // A CIDR range carries its port after the prefix length: `10.0.0.0/8:80`.
    Ok(match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    })
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The `wasi:http` hooks of one instance: every outgoing request is checked against the
/// component's allow-list before it is sent; a request to `http://<id>.spin.internal` goes,
/// as Spin's local service chaining does, to component `<id>` of the same application, in a
/// fresh instance of its own, without leaving the process.
pub(crate) struct OutboundHooks {
    pub(crate) component: Arc<str>,
    pub(crate) allowed: Arc<AllowedHosts>,
    pub(crate) chain: Weak<crate::server::SpinHost>,
}

/// The component a service-chaining URI names (`http://<id>.spin.internal/...`).
fn chained_component(uri: &http::Uri) -> Option<String> {
    let host = uri.host()?.to_ascii_lowercase();
    let id = host.strip_suffix(".spin.internal")?;
    (uri.scheme_str() == Some("http") && !id.is_empty() && !id.contains('.')).then(|| id.to_owned())
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        _ = fut;
        if !self.allowed.allows(request.uri()) {
            eprintln!(
                "kefu-spin-host: component `{}` may not send to {} (not in allowed_outbound_hosts): \
                 denied with HTTP-request-denied",
                self.component,
                request.uri()
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        if let Some(id) = chained_component(request.uri()) {
            let host = self.chain.upgrade();
            return Box::new(async move {
                let Some(host) = host else {
                    return Err(HttpError::DestinationNotFound);
                };
                let response = host.chain(&id, request).await.ok_or_else(|| {
                    eprintln!("kefu-spin-host: service chaining: no component `{id}`");
                    HttpError::DestinationNotFound
                })?;
                Ok((
                    response,
                    Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
                ))
            });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entries: &[&str], url: &str) -> bool {
        let entries: Vec<String> = entries.iter().map(|s| (*s).to_owned()).collect();
        AllowedHosts::parse(&entries)
            .unwrap()
            .allows(&url.parse().unwrap())
    }

    #[test]
    fn schemes_hosts_and_ports_match_like_spin() {
        assert!(allows(&["http://127.0.0.1:*"], "http://127.0.0.1:8080/x"));
        assert!(!allows(&["http://127.0.0.1:*"], "https://127.0.0.1:8080/x"));
        assert!(!allows(&["http://127.0.0.1:*"], "http://localhost:8080/x"));
        assert!(allows(
            &["https://api.openai.com"],
            "https://api.openai.com/v1"
        ));
        assert!(!allows(
            &["https://api.openai.com"],
            "https://api.openai.com:8443/v1"
        ));
        assert!(allows(&["*://example.com:80"], "http://example.com/"));
        assert!(allows(
            &["https://*.example.com"],
            "https://a.b.example.com/"
        ));
        assert!(!allows(&["https://*.example.com"], "https://example.com/"));
        assert!(!allows(
            &["https://*.example.com"],
            "https://badexample.com/"
        ));
        assert!(allows(
            &["http://127.0.0.1:8000..8010"],
            "http://127.0.0.1:8009/"
        ));
        assert!(!allows(
            &["http://127.0.0.1:8000..8010"],
            "http://127.0.0.1:8010/"
        ));
        assert!(allows(&["http://10.0.0.0/8:80"], "http://10.1.2.3/"));
        assert!(!allows(&["http://10.0.0.0/8:80"], "http://11.1.2.3/"));
        assert!(allows(&["*://*:*"], "mqtt://anything:1/"));
        assert!(allows(&["insecure:allow-all"], "http://anything:1/"));
        assert!(!allows(&[], "http://127.0.0.1/"));
    }

    #[test]
    fn service_chaining_uris_name_a_component() {
        let id = |u: &str| chained_component(&u.parse().unwrap());
        assert_eq!(
            id("http://plugin-x.spin.internal/"),
            Some("plugin-x".into())
        );
        assert_eq!(id("http://PLUGIN-X.spin.internal"), Some("plugin-x".into()));
        assert_eq!(id("https://plugin-x.spin.internal/"), None);
        assert_eq!(id("http://a.b.spin.internal/"), None);
        assert_eq!(id("http://spin.internal/"), None);
        assert_eq!(id("http://plugin-x.spin.internal.evil.com/"), None);
        // The allow-list still decides: a component must be granted the chaining host.
        assert!(allows(
            &["http://*.spin.internal"],
            "http://plugin-x.spin.internal/"
        ));
        assert!(!allows(
            &["https://api.openai.com"],
            "http://plugin-x.spin.internal/"
        ));
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in [
            "example.com",
            "*://example.com",
            "https://example.com/path",
            "https://ex*ample.com",
            "http://127.0.0.1:port",
            "http://127.0.0.1:9..3",
            "http://self",
        ] {
            assert!(
                AllowedHosts::parse(&[bad.to_owned()]).is_err(),
                "{bad} accepted"
            );
        }
    }
}
