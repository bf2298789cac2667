//! Tenant API keys for the OpenAI-compatible API.
//!
//! A key looks like `kf-<tenant>.<secret>`: the tenant part says whose configuration to
//! load, the secret part is random. Configurations store only the key's SHA-256 (hex), and
//! the comparison takes the same time whether the first or the last byte differs.
//!
//! Agents sign in with expiring tokens instead: `kfa.<claims>.<signature>`, where the claims
//! (tenant, agent, display name, expiry) are base64url JSON and the signature is
//! HMAC-SHA256 under the deployment's token secret. The tenant's own sign-in (SSO, its
//! staff directory) mints them through Kefu's API with the tenant key; Kefu never stores
//! agent passwords.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::Timestamp;

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

/// What an agent token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentClaims {
    /// The tenant the agent works for.
    #[serde(rename = "t")]
    pub tenant: String,
    /// The agent's id.
    #[serde(rename = "a")]
    pub agent: String,
    /// The name visitors see.
    #[serde(rename = "n")]
    pub name: String,
    /// When the token stops working (ms since the epoch).
    #[serde(rename = "e")]
    pub expires: u64,
}

/// Why an agent token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a Kefu agent token at all.
    #[error("not an agent token")]
    Malformed,
    /// The signature does not match (forged, or signed with another secret).
    #[error("the token's signature is not valid")]
    BadSignature,
    /// It was valid, and has expired.
    #[error("the token has expired")]
    Expired,
}

/// The longest an agent token may live (7 days).
pub const MAX_AGENT_TOKEN_MS: u64 = 7 * 24 * 3_600_000;

fn mac(secret: &[u8], signed: &str) -> Vec<u8> {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(signed.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Mints an agent token.
pub fn sign_agent_token(secret: &[u8], claims: &AgentClaims) -> String {
    let body = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signed = format!("kfa.{body}");
    let signature = B64.encode(mac(secret, &signed));
    format!("{signed}.{signature}")
}

/// Checks an agent token: its signature (in constant time), then its expiry.
pub fn verify_agent_token(
    secret: &[u8],
    token: &str,
    now: Timestamp,
) -> Result<AgentClaims, TokenError> {
    let (signed, signature) = token.trim().rsplit_once('.').ok_or(TokenError::Malformed)?;
    let body = signed.strip_prefix("kfa.").ok_or(TokenError::Malformed)?;
    let given = B64.decode(signature).map_err(|_| TokenError::Malformed)?;
    if !constant_time_eq(&mac(secret, signed), &given) {
        return Err(TokenError::BadSignature);
    }
    let claims: AgentClaims =
        serde_json::from_slice(&B64.decode(body).map_err(|_| TokenError::Malformed)?)
            .map_err(|_| TokenError::Malformed)?;
    if now.as_millis() >= claims.expires {
        return Err(TokenError::Expired);
    }
    Ok(claims)
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

    #[test]
    fn agent_tokens_sign_verify_and_expire() {
        let secret = b"deployment-token-secret-0123456789";
        let claims = AgentClaims {
            tenant: "acme".into(),
            agent: "alex".into(),
            name: "Alex".into(),
            expires: 10_000,
        };
        let token = sign_agent_token(secret, &claims);
        assert!(token.starts_with("kfa."));
        assert_eq!(
            verify_agent_token(secret, &token, Timestamp::from_millis(9_999)),
            Ok(claims.clone())
        );
        assert_eq!(
            verify_agent_token(secret, &token, Timestamp::from_millis(10_000)),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify_agent_token(b"another-secret", &token, Timestamp::from_millis(1)),
            Err(TokenError::BadSignature)
        );
        // Changing the claims (say, the agent) breaks the signature.
        let forged_claims = AgentClaims {
            agent: "boss".into(),
            ..claims
        };
        let forged = sign_agent_token(b"guess", &forged_claims);
        let (body, _) = forged.rsplit_once('.').unwrap();
        let (_, sig) = token.rsplit_once('.').unwrap();
        assert_eq!(
            verify_agent_token(secret, &format!("{body}.{sig}"), Timestamp::from_millis(1)),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_agent_token(secret, "kf-acme.abc", Timestamp::from_millis(1)),
            Err(TokenError::Malformed)
        );
    }
}
