//! Verified visitor identity: anonymous by default; a tenant that knows who its signed-in
//! users are proves it to Kefu with an HMAC the tenant's own server computes, so a visitor
//! cannot claim to be someone else — and a conversation started by a verified visitor
//! stays theirs.
//!
//! The tenant's server computes `hex(HMAC-SHA256(identity.secret, user_id))` and its page
//! hands the widget both; the widget sends `"visitor": {"id": …, "hash": …}` with each
//! message. This is the scheme the established chat widgets use (Intercom's "identity
//! verification", Crisp's "user verification").

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::auth::constant_time_eq;

/// The shortest identity secret accepted (characters).
pub const MIN_SECRET_CHARS: usize = 32;
/// The longest visitor id accepted (characters).
pub const MAX_ID_CHARS: usize = 128;

/// A tenant's identity verification settings (`identity` in its configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityPolicy {
    /// The secret shared with the tenant's server (at least 32 characters).
    pub secret: String,
    /// Refuse messages from visitors who do not prove an identity.
    #[serde(default)]
    pub required: bool,
}

/// What a visitor presents: an id and the tenant server's HMAC of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisitorIdentity {
    /// The tenant's id for the user.
    pub id: String,
    /// `hex(HMAC-SHA256(secret, id))`, lowercase or uppercase.
    pub hash: String,
}

/// Why a visitor may not go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityError {
    /// The site verifies no identities, yet one was presented.
    NotConfigured,
    /// The site requires an identity and none was presented.
    Required,
    /// The hash does not match the id.
    Invalid,
    /// The conversation belongs to another (or a verified) visitor.
    NotYours,
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotConfigured => {
                "this site does not verify visitor identities; remove `visitor` or set `identity` in the configuration"
            }
            Self::Required => {
                "this site only talks to signed-in visitors: send `visitor` with the id and hash from the site's server"
            }
            Self::Invalid => "`visitor.hash` does not match `visitor.id`",
            Self::NotYours => "this conversation belongs to another visitor",
        })
    }
}

/// `hex(HMAC-SHA256(secret, id))`: what the tenant's server computes.
pub fn visitor_hash(secret: &str, id: &str) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    m.update(id.as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks what a visitor presents against the tenant's policy: `Ok(Some(id))` for a verified
/// visitor, `Ok(None)` for an anonymous one the site accepts.
pub fn verify(
    policy: Option<&IdentityPolicy>,
    presented: Option<&VisitorIdentity>,
) -> Result<Option<String>, IdentityError> {
    match (policy, presented) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(IdentityError::NotConfigured),
        (Some(p), None) if p.required => Err(IdentityError::Required),
        (Some(_), None) => Ok(None),
        (Some(p), Some(v)) => {
            let expected = visitor_hash(&p.secret, &v.id);
            let given = v.hash.to_ascii_lowercase();
            if constant_time_eq(expected.as_bytes(), given.as_bytes()) {
                Ok(Some(v.id.clone()))
            } else {
                Err(IdentityError::Invalid)
            }
        }
    }
}

/// Whether `visitor` (verified, or `None` for anonymous) may write in a conversation that
/// `owner` started (`None`: an anonymous conversation). An anonymous conversation is
/// adopted by the first verified visitor who writes in it (a visitor who signs in mid-chat);
/// a verified visitor's conversation takes only that visitor.
pub fn may_continue(owner: Option<&str>, visitor: Option<&str>) -> Result<(), IdentityError> {
    match (owner, visitor) {
        (Some(owner), Some(v)) if owner == v => Ok(()),
        (Some(_), _) => Err(IdentityError::NotYours),
        (None, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-tenant-identity-secret-of-32-chars!";

    fn policy(required: bool) -> IdentityPolicy {
        IdentityPolicy {
            secret: SECRET.into(),
            required,
        }
    }

    fn visitor(id: &str, hash: String) -> VisitorIdentity {
        VisitorIdentity {
            id: id.into(),
            hash,
        }
    }

    #[test]
    fn the_hash_is_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            visitor_hash("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_matching_hash_verifies_in_either_case() {
        let hash = visitor_hash(SECRET, "user-42");
        let p = policy(false);
        assert_eq!(
            verify(Some(&p), Some(&visitor("user-42", hash.clone()))),
            Ok(Some("user-42".into()))
        );
        assert_eq!(
            verify(Some(&p), Some(&visitor("user-42", hash.to_uppercase()))),
            Ok(Some("user-42".into()))
        );
    }

    #[test]
    fn another_users_hash_or_a_wrong_one_is_refused() {
        let p = policy(false);
        let theirs = visitor_hash(SECRET, "user-43");
        assert_eq!(
            verify(Some(&p), Some(&visitor("user-42", theirs))),
            Err(IdentityError::Invalid)
        );
        assert_eq!(
            verify(Some(&p), Some(&visitor("user-42", "00".repeat(32)))),
            Err(IdentityError::Invalid)
        );
        assert_eq!(
            verify(Some(&p), Some(&visitor("user-42", "short".into()))),
            Err(IdentityError::Invalid)
        );
    }

    #[test]
    fn anonymous_visitors_unless_required() {
        assert_eq!(verify(None, None), Ok(None));
        assert_eq!(verify(Some(&policy(false)), None), Ok(None));
        assert_eq!(
            verify(Some(&policy(true)), None),
            Err(IdentityError::Required)
        );
        assert_eq!(
            verify(None, Some(&visitor("u", visitor_hash(SECRET, "u")))),
            Err(IdentityError::NotConfigured)
        );
    }

    #[test]
    fn a_verified_visitors_conversation_stays_theirs() {
        assert_eq!(may_continue(Some("u1"), Some("u1")), Ok(()));
        assert_eq!(
            may_continue(Some("u1"), Some("u2")),
            Err(IdentityError::NotYours)
        );
        assert_eq!(may_continue(Some("u1"), None), Err(IdentityError::NotYours));
        // Anonymous conversations take anyone (the id is the capability), and a visitor who
        // signs in mid-chat keeps the conversation.
        assert_eq!(may_continue(None, None), Ok(()));
        assert_eq!(may_continue(None, Some("u1")), Ok(()));
    }
}
