//! Agents' credentials: the token `POST /api/v1/agents/tokens` mints, whether an open session
//! goes on, and the short-lived token a live-update stream may carry in its URL.

use serde_json::Value;

use super::error::ApiError;
use crate::vocab::TenantId;

/// Whether an agent's open session goes on, given the tenant's configuration as the host
/// just loaded it ([`crate::auth::session_continues`] on its roster). A tenant that no
/// longer exists ends it; a storage failure keeps it (the host checks again soon).
pub fn session_on<C: core::borrow::Borrow<crate::TenantConfig>>(
    loaded: Result<C, ApiError>,
    claims: &crate::auth::AgentClaims,
    now: crate::Timestamp,
) -> Result<(), crate::auth::TokenError> {
    match loaded {
        Ok(config) => crate::auth::session_continues(&config.borrow().agents, claims, now),
        Err(e) if e.code == "tenant_not_found" => Err(crate::auth::TokenError::UnknownAgent),
        Err(_) => Ok(()),
    }
}

/// A validated `POST /api/v1/agents/tokens` body: `{"agent", "name"?, "ttl_secs"?}`
/// (default 8 hours, at most 7 days). Returns (agent, name if given, ttl in ms).
pub fn parse_agent_token_request(body: &[u8]) -> Result<(String, Option<String>, u64), ApiError> {
    let v = super::json_body(body)?;
    let agent = v
        .get("agent")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default();
    if !crate::auth::valid_agent_id(agent) {
        return Err(ApiError::new(
            400,
            "invalid_field",
            "`agent` is 1 to 64 characters of [A-Za-z0-9._@-]",
        )
        .field("agent"));
    }
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 80) {
        return Err(
            ApiError::new(400, "invalid_field", "`name` is at most 80 characters").field("name"),
        );
    }
    let ttl = match v.get("ttl_secs") {
        None | Some(Value::Null) => 8 * 3600,
        Some(t) => t
            .as_u64()
            .filter(|t| (60..=crate::auth::MAX_AGENT_TOKEN_MS / 1000).contains(t))
            .ok_or_else(|| {
                ApiError::new(400, "invalid_field", "`ttl_secs` is between 60 and 604800")
                    .field("ttl_secs")
            })?,
    };
    Ok((agent.to_owned(), name.map(str::to_owned), ttl * 1000))
}

/// The claims of the token `POST /api/v1/agents/tokens` mints for `tenant` at `now`: the
/// body's agent, which must be on the tenant's roster and enabled when the roster is not
/// empty (`400 unknown_agent`, `403 agent_disabled`); its name is the body's, else the
/// roster's, else the agent id.
pub fn mint_agent_claims(
    config: &crate::TenantConfig,
    tenant: &TenantId,
    body: &[u8],
    now: crate::Timestamp,
) -> Result<crate::auth::AgentClaims, ApiError> {
    let (agent, name, ttl_ms) = parse_agent_token_request(body)?;
    let listed = crate::auth::agent_for_minting(&config.agents, &agent).map_err(|e| {
        let status = if e == crate::auth::TokenError::AgentDisabled {
            403
        } else {
            400
        };
        ApiError::new(status, e.code(), format!("no token for `{agent}`: {e}")).field("agent")
    })?;
    let name = name
        .or_else(|| listed.map(|a| a.name.trim().to_owned()))
        .unwrap_or_else(|| agent.clone());
    Ok(crate::auth::AgentClaims {
        tenant: tenant.as_str().to_owned(),
        agent,
        name,
        expires: now.as_millis() + ttl_ms,
        issued: now.as_millis(),
    })
}

/// Checks a live-update stream's `access_token` (browsers' `EventSource` and `WebSocket`
/// cannot set headers): only a short-lived agent token (`kfa.…`), never the tenant key, may
/// travel in a URL.
pub fn check_access_token(token: &str) -> Result<(), ApiError> {
    if token.starts_with("kfa.") {
        Ok(())
    } else {
        Err(ApiError {
            status: 401,
            code: "unauthorized",
            message: "access_token takes an agent token (kfa.…); send the tenant key in the Authorization header".into(),
            field: Some("access_token".into()),
            allow: None,
            retry_after: None,
        })
    }
}
