//! Tenant API keys for the OpenAI-compatible API.
//!
//! A key looks like `kf-<tenant>.<secret>`: the tenant part says whose configuration to
//! load, the secret part is random. Configurations store only the key's SHA-256 (hex), and
//! the comparison takes the same time whether the first or the last byte differs.

use sha2::{Digest, Sha256};

use crate::conversation::TenantId;

/// A stored API key: an id for people, and the key's SHA-256 in hex.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// A name for the key (shown in admin pages and logs, never the key).
    pub id: String,
    /// `sha256(key)` as 64 lower-case hex digits.
    pub sha256: String,
}

/// The key's SHA-256 as lower-case hex.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// The tenant a presented key claims to belong to, or `None` when it is not a Kefu key.
pub fn tenant_of_key(key: &str) -> Option<TenantId> {
    let rest = key.strip_prefix("kf-")?;
    let (tenant, secret) = rest.rsplit_once('.')?;
    if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    TenantId::parse(tenant)
}

/// Equality in time independent of where the inputs differ (lengths are not secret here:
/// both sides are 64-digit hashes).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The id of the stored entry `key` matches, if any. Every entry is compared, so the time
/// taken does not say which one matched.
pub fn verify<'a>(key: &str, entries: &'a [ApiKeyEntry]) -> Option<&'a str> {
    let presented = hash_key(key);
    let mut found = None;
    for e in entries {
        if constant_time_eq(
            presented.as_bytes(),
            e.sha256.to_ascii_lowercase().as_bytes(),
        ) {
            found = Some(e.id.as_str());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_and_verify() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let key = "kf-acme_1.3F9dK2mQ7xZ8pL4wR6tY";
        assert_eq!(tenant_of_key(key).unwrap().as_str(), "acme_1");
        assert!(tenant_of_key("sk-live-123").is_none());
        assert!(tenant_of_key("kf-acme.short").is_none());
        let entries = vec![
            ApiKeyEntry {
                id: "old".into(),
                sha256: hash_key("kf-acme_1.someotherkeyvalue123"),
            },
            ApiKeyEntry {
                id: "ci".into(),
                sha256: hash_key(key).to_uppercase(),
            },
        ];
        assert_eq!(verify(key, &entries), Some("ci"));
        assert_eq!(verify("kf-acme_1.3F9dK2mQ7xZ8pL4wR6tX", &entries), None);
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
