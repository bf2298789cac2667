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
//!
//! A tenant may keep a roster of its agents (the configuration's `agents`). With an empty
//! roster any agent id may be signed in (the behaviour before rosters, so existing tenants
//! keep working). Once the roster lists anyone, it is the list of who may sign in: tokens are
//! minted only for listed agents, and a token stops working when its agent is disabled or
//! removed, or when it was issued before the agent's `tokens_not_before` ("sign out
//! everywhere"). Tokens carry their issue time (`i`); tokens minted before that claim
//! existed have none, count as issued at the epoch, and so stop working once their agent is
//! signed out everywhere (they expire within 7 days anyway).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::Timestamp;

use crate::vocab::TenantId;

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
    /// When the token was minted (ms since the epoch); 0 for tokens minted before this
    /// claim existed.
    #[serde(rename = "i", default)]
    pub issued: u64,
}

/// What an agent does on the team. Recorded for people (the admin pages show it); Kefu
/// grants agents and supervisors the same rights today.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRole {
    /// Answers conversations.
    #[default]
    Agent,
    /// Leads a team.
    Supervisor,
}

/// One agent on the tenant's roster (the configuration's `agents`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    /// The agent's id, as in tokens and conversations (`[A-Za-z0-9._@-]`, 1 to 64).
    pub id: String,
    /// The name visitors see (the default for tokens minted for this agent).
    pub name: String,
    /// Where to reach the agent (for people; Kefu sends no mail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `agent` (the default) or `supervisor`.
    #[serde(default)]
    pub role: AgentRole,
    /// A disabled agent cannot be minted a token, and its tokens are refused.
    #[serde(default)]
    pub disabled: bool,
    /// Tokens issued before this instant (ms since the epoch) are refused: "sign out
    /// everywhere" sets it to now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_not_before: Option<Timestamp>,
}

/// Whether `id` is a valid agent id: 1 to 64 characters of `[A-Za-z0-9._@-]`.
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

/// Checks a roster field by field: valid, unique ids; a name of 1 to 80 characters; an
/// email that looks like one.
pub fn validate_roster(agents: &[AgentEntry]) -> Result<(), crate::error::ConfigError> {
    let invalid = |i: usize, field: &str, message: &str| crate::error::ConfigError {
        field: format!("agents[{i}].{field}"),
        message: message.to_owned(),
    };
    for (i, a) in agents.iter().enumerate() {
        if !valid_agent_id(&a.id) {
            return Err(invalid(
                i,
                "id",
                "must be 1 to 64 characters of [A-Za-z0-9._@-]",
            ));
        }
        if agents[..i].iter().any(|b| b.id == a.id) {
            return Err(invalid(i, "id", "another agent has this id"));
        }
        let name = a.name.trim();
        if name.is_empty() || name.chars().count() > 80 {
            return Err(invalid(i, "name", "must be 1 to 80 characters"));
        }
        if let Some(email) = &a.email {
            let ok = email.len() <= 254
                && !email.chars().any(char::is_whitespace)
                && email
                    .split_once('@')
                    .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'));
            if !ok {
                return Err(invalid(
                    i,
                    "email",
                    "must be an email address (name@example.com)",
                ));
            }
        }
    }
    Ok(())
}

/// The roster entry for `agent`, when a token may be minted for it: any agent while the
/// roster is empty (`Ok(None)`), otherwise a listed agent that is not disabled.
pub fn agent_for_minting<'a>(
    roster: &'a [AgentEntry],
    agent: &str,
) -> Result<Option<&'a AgentEntry>, TokenError> {
    if roster.is_empty() {
        return Ok(None);
    }
    let entry = roster
        .iter()
        .find(|a| a.id == agent)
        .ok_or(TokenError::UnknownAgent)?;
    if entry.disabled {
        return Err(TokenError::AgentDisabled);
    }
    Ok(Some(entry))
}

/// Checks a verified token against its tenant's roster: with a non-empty roster its agent
/// must be listed and enabled, and the token issued no earlier than the agent's
/// `tokens_not_before`.
pub fn admit_agent(roster: &[AgentEntry], claims: &AgentClaims) -> Result<(), TokenError> {
    admit_on_roster(roster, claims)
}

/// Whether an agent's open session (a live-update stream or socket opened with `claims`)
/// may go on at `now`: its token has not expired, and the tenant's roster as it is now
/// still admits it (not removed, disabled or signed out everywhere since). Hosts check it
/// while the session is open and close the session when it fails.
pub fn session_continues(
    roster: &[AgentEntry],
    claims: &AgentClaims,
    now: Timestamp,
) -> Result<(), TokenError> {
    if now.as_millis() >= claims.expires {
        return Err(TokenError::Expired);
    }
    admit_on_roster(roster, claims)
}

/// How often a host re-checks an open agent session against the roster, at most: a
/// disabled, removed or signed-out agent's stream ends within this.
pub const SESSION_RECHECK_MS: u64 = 15_000;

/// What every agent sign-in token starts with.
pub const AGENT_TOKEN_PREFIX: &str = "kfa.";

/// The agent token an `Authorization` header carries (`Bearer kfa.…`), if it carries one:
/// how every host tells an agent from an operator before checking either.
pub fn agent_bearer(authorization: Option<&str>) -> Option<&str> {
    authorization?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| t.starts_with(AGENT_TOKEN_PREFIX))
}

fn admit_on_roster(roster: &[AgentEntry], claims: &AgentClaims) -> Result<(), TokenError> {
    let Some(entry) = agent_for_minting(roster, &claims.agent)? else {
        return Ok(());
    };
    if entry
        .tokens_not_before
        .is_some_and(|nb| claims.issued < nb.as_millis())
    {
        return Err(TokenError::Revoked);
    }
    Ok(())
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
    /// The tenant keeps a roster and this agent is not on it.
    #[error("this agent is not on the tenant's roster")]
    UnknownAgent,
    /// The agent is on the roster, disabled.
    #[error("this agent is disabled")]
    AgentDisabled,
    /// The token was issued before the agent was signed out everywhere.
    #[error("this token was revoked (the agent was signed out everywhere); sign in again")]
    Revoked,
}

impl TokenError {
    /// The stable error code: `unauthorized` for a token that is not a valid one at all (or
    /// has expired), and a code of its own for each roster rule.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed | TokenError::BadSignature | TokenError::Expired => {
                "unauthorized"
            }
            TokenError::UnknownAgent => "unknown_agent",
            TokenError::AgentDisabled => "agent_disabled",
            TokenError::Revoked => "token_revoked",
        }
    }
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
    let signed = format!("{AGENT_TOKEN_PREFIX}{body}");
    let signature = B64.encode(mac(secret, &signed));
    format!("{signed}.{signature}")
}

/// Checks an agent token: its signature (in constant time), then its expiry. The roster
/// rules need the tenant's configuration: see [`admit_agent`].
pub fn verify_agent_token(
    secret: &[u8],
    token: &str,
    now: Timestamp,
) -> Result<AgentClaims, TokenError> {
    let (signed, signature) = token.trim().rsplit_once('.').ok_or(TokenError::Malformed)?;
    let body = signed
        .strip_prefix(AGENT_TOKEN_PREFIX)
        .ok_or(TokenError::Malformed)?;
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
    fn an_agent_bearer_is_told_from_an_operator_key() {
        assert_eq!(
            agent_bearer(Some("Bearer kfa.abc.def")),
            Some("kfa.abc.def")
        );
        assert_eq!(agent_bearer(Some("Bearer  kfa.abc ")), Some("kfa.abc"));
        assert_eq!(agent_bearer(Some("Bearer kf-acme.secret")), None);
        assert_eq!(agent_bearer(Some("kfa.abc")), None, "not a bearer header");
        assert_eq!(agent_bearer(Some("Basic kfa.abc")), None);
        assert_eq!(agent_bearer(None), None);
    }

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
            issued: 1_000,
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

    fn roster() -> Vec<AgentEntry> {
        serde_json::from_slice(
            br#"[{"id":"alex","name":"Alex","email":"alex@acme.example","role":"supervisor"},
                {"id":"kim","name":"Kim","disabled":true},
                {"id":"sam","name":"Sam","tokens_not_before":5000}]"#,
        )
        .unwrap()
    }

    fn claims_for(agent: &str, issued: u64) -> AgentClaims {
        AgentClaims {
            tenant: "acme".into(),
            agent: agent.into(),
            name: agent.into(),
            expires: 100_000,
            issued,
        }
    }

    #[test]
    fn an_open_session_ends_when_its_token_or_the_roster_says_so() {
        let r = roster();
        let at = |ms| Timestamp::from_millis(ms);
        assert_eq!(
            session_continues(&r, &claims_for("alex", 1), at(50_000)),
            Ok(())
        );
        // The token expired while the stream was open.
        assert_eq!(
            session_continues(&r, &claims_for("alex", 1), at(100_000)),
            Err(TokenError::Expired)
        );
        // The roster changed while it was open: disabled, signed out everywhere, removed.
        assert_eq!(
            session_continues(&r, &claims_for("kim", 1), at(1)),
            Err(TokenError::AgentDisabled)
        );
        assert_eq!(
            session_continues(&r, &claims_for("sam", 4_000), at(6_000)),
            Err(TokenError::Revoked)
        );
        assert_eq!(
            session_continues(&r, &claims_for("gone", 1), at(1)),
            Err(TokenError::UnknownAgent)
        );
    }

    #[test]
    fn an_empty_roster_admits_any_agent() {
        assert_eq!(agent_for_minting(&[], "anyone"), Ok(None));
        assert_eq!(admit_agent(&[], &claims_for("anyone", 0)), Ok(()));
    }

    #[test]
    fn minting_needs_a_listed_enabled_agent() {
        let r = roster();
        assert_eq!(agent_for_minting(&r, "alex").unwrap().unwrap().name, "Alex");
        assert_eq!(
            agent_for_minting(&r, "nobody"),
            Err(TokenError::UnknownAgent)
        );
        assert_eq!(agent_for_minting(&r, "kim"), Err(TokenError::AgentDisabled));
        assert_eq!(TokenError::UnknownAgent.code(), "unknown_agent");
        assert_eq!(TokenError::AgentDisabled.code(), "agent_disabled");
    }

    #[test]
    fn verifying_applies_the_roster() {
        let r = roster();
        assert_eq!(admit_agent(&r, &claims_for("alex", 1)), Ok(()));
        // Removed from a non-empty roster, or disabled: refused.
        assert_eq!(
            admit_agent(&r, &claims_for("gone", 1)),
            Err(TokenError::UnknownAgent)
        );
        assert_eq!(
            admit_agent(&r, &claims_for("kim", 9_000)),
            Err(TokenError::AgentDisabled)
        );
        // Signed out everywhere at 5000: earlier tokens are refused, later ones work.
        assert_eq!(
            admit_agent(&r, &claims_for("sam", 4_999)),
            Err(TokenError::Revoked)
        );
        assert_eq!(TokenError::Revoked.code(), "token_revoked");
        assert_eq!(admit_agent(&r, &claims_for("sam", 5_000)), Ok(()));
        assert_eq!(TokenError::Expired.code(), "unauthorized");
    }

    #[test]
    fn tokens_carry_their_issue_time_and_old_ones_count_as_issued_at_the_epoch() {
        let secret = b"deployment-token-secret-0123456789";
        let token = sign_agent_token(secret, &claims_for("sam", 6_000));
        let claims = verify_agent_token(secret, &token, Timestamp::from_millis(7_000)).unwrap();
        assert_eq!(claims.issued, 6_000);
        assert_eq!(admit_agent(&roster(), &claims), Ok(()));
        // A token from before the issue-time claim: `{t,a,n,e}` only.
        let body = B64.encode(br#"{"t":"acme","a":"sam","n":"Sam","e":100000}"#);
        let signed = format!("kfa.{body}");
        let old = format!("{signed}.{}", B64.encode(mac(secret, &signed)));
        let claims = verify_agent_token(secret, &old, Timestamp::from_millis(7_000)).unwrap();
        assert_eq!(claims.issued, 0);
        // It works for an agent never signed out everywhere, and not for one who was.
        assert_eq!(
            admit_agent(
                &roster(),
                &AgentClaims {
                    agent: "alex".into(),
                    ..claims.clone()
                }
            ),
            Ok(())
        );
        assert_eq!(admit_agent(&roster(), &claims), Err(TokenError::Revoked));
    }

    #[test]
    fn rosters_are_validated_field_by_field() {
        let check = |doc: &str| {
            let agents: Vec<AgentEntry> = serde_json::from_slice(doc.as_bytes()).unwrap();
            validate_roster(&agents).map_err(|e| e.field)
        };
        assert_eq!(check(r#"[{"id":"a.b@c-d_e","name":"A"}]"#), Ok(()));
        assert_eq!(
            check(r#"[{"id":"bad id","name":"A"}]"#),
            Err("agents[0].id".into())
        );
        assert_eq!(
            check(r#"[{"id":"","name":"A"}]"#),
            Err("agents[0].id".into())
        );
        assert_eq!(
            check(r#"[{"id":"a","name":"A"},{"id":"a","name":"B"}]"#),
            Err("agents[1].id".into())
        );
        assert_eq!(
            check(r#"[{"id":"a","name":"  "}]"#),
            Err("agents[0].name".into())
        );
        let long = "x".repeat(81);
        assert_eq!(
            check(&format!(r#"[{{"id":"a","name":"{long}"}}]"#)),
            Err("agents[0].name".into())
        );
        assert_eq!(
            check(r#"[{"id":"a","name":"A","email":"not-an-email"}]"#),
            Err("agents[0].email".into())
        );
        assert_eq!(
            check(r#"[{"id":"a","name":"A","email":"a @b.example"}]"#),
            Err("agents[0].email".into())
        );
        assert!(
            serde_json::from_slice::<Vec<AgentEntry>>(br#"[{"id":"a","name":"A","role":"boss"}]"#)
                .is_err()
        );
        assert!(
            serde_json::from_slice::<Vec<AgentEntry>>(br#"[{"id":"a","name":"A","pasword":"x"}]"#)
                .is_err()
        );
    }
}
