//! Visitor limits: how many messages (and uploads) one visitor may send, for hosts without
//! a platform rate limiter (Spin). The Worker uses Cloudflare's Rate Limiting binding with the
//! same two keys.
//!
//! Two token buckets, each refilled continuously over a minute: one per site and address
//! (a visitor of one site), and one per address over every site, so naming another tenant
//! does not reset a visitor's allowance. Both must admit a message; a refusal takes nothing
//! from the other bucket. The host stores each bucket under [`VisitorLimits::keys`] and
//! changes it with compare-and-swap, so concurrent instances count every message once.

use core::time::Duration;

use crate::gateway::quota::Bucket;
use crate::time::Timestamp;
use crate::vocab::TenantId;

/// Messages a minute, per site and address, when the deployment sets none.
pub const DEFAULT_PER_SITE: u32 = 30;
/// Messages a minute, per address over every site, when the deployment sets none.
pub const DEFAULT_PER_ADDRESS: u32 = 120;

/// The deployment's visitor limits (messages a minute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisitorLimits {
    /// Per site (tenant) and address.
    pub per_site: u32,
    /// Per address, every site together.
    pub per_address: u32,
}

impl Default for VisitorLimits {
    fn default() -> Self {
        Self {
            per_site: DEFAULT_PER_SITE,
            per_address: DEFAULT_PER_ADDRESS,
        }
    }
}

impl VisitorLimits {
    /// The limits from the deployment's settings (unset, empty or not a positive number:
    /// the default).
    pub fn from_settings(per_site: Option<&str>, per_address: Option<&str>) -> Self {
        let parse = |v: Option<&str>, default: u32| {
            v.and_then(|v| v.trim().parse::<u32>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        Self {
            per_site: parse(per_site, DEFAULT_PER_SITE),
            per_address: parse(per_address, DEFAULT_PER_ADDRESS),
        }
    }

    /// The two buckets' storage keys and capacities, in the order they are taken: the
    /// site's, then the address's. `address` is the client's IP address as the platform
    /// saw it (never a header the client sets).
    pub fn keys(&self, tenant: &TenantId, address: &str) -> [(String, u32); 2] {
        let address = client_ip(address);
        [
            (
                format!("visitor-limit:site:{}:{address}", tenant.as_str()),
                self.per_site,
            ),
            (format!("visitor-limit:address:{address}"), self.per_address),
        ]
    }
}

/// The IP address of a `host:port` or `[v6]:port` client address (as Spin's
/// `spin-client-addr` gives it).
pub fn client_ip(addr: &str) -> &str {
    let addr = addr.trim();
    if let Some(v6) = addr.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    match addr.rsplit_once(':') {
        // One colon: IPv4 with a port. More: a bare IPv6 address.
        Some((ip, _)) if !ip.contains(':') => ip,
        _ => addr,
    }
}

/// Takes one message from `bucket` (capacity `per_minute`) at `now`, or says how long until
/// one is there.
pub fn take(bucket: &mut Bucket, now: Timestamp, per_minute: u32) -> Result<(), Duration> {
    bucket.take(now, 1.0, f64::from(per_minute.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_limit_a_minute_and_refills() {
        let mut b = Bucket::default();
        let t = |ms| Timestamp::from_millis(ms);
        for _ in 0..3 {
            take(&mut b, t(1_000), 3).unwrap();
        }
        let wait = take(&mut b, t(1_000), 3).unwrap_err();
        assert!(
            wait.as_millis() > 0 && wait.as_millis() <= 20_000,
            "{wait:?}"
        );
        // A third of a minute later, one more.
        take(&mut b, t(21_000), 3).unwrap();
        assert!(take(&mut b, t(21_000), 3).is_err());
    }

    #[test]
    fn keys_separate_sites_but_not_addresses() {
        let l = VisitorLimits::default();
        let a = l.keys(&TenantId::parse("a").unwrap(), "203.0.113.9:5123");
        let b = l.keys(&TenantId::parse("b").unwrap(), "203.0.113.9:6000");
        assert_ne!(a[0].0, b[0].0);
        assert_eq!(a[1], b[1], "the address's bucket is shared by every site");
        assert_eq!(client_ip("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(client_ip("2001:db8::1"), "2001:db8::1");
        assert_eq!(
            VisitorLimits::from_settings(Some("0"), Some("x")),
            VisitorLimits::default()
        );
    }
}
