//! The operators' API on Spin: who is calling (the deployment's admin token, or a tenant
//! key), and the tenant configuration — validated on write, versioned and rolled back with
//! the engine's rules ([`kefu_engine::config_history`]), as on Workers.

use kefu_engine::api::{self, ApiError, ConfigRoute};
use kefu_engine::auth;
use kefu_engine::config_history::{self, ConfigMeta};
use kefu_engine::{TenantConfig, TenantId};
use serde_json::{Value, json};

use crate::http::{Incoming, Reply};
use crate::store::{self, Kv};
use crate::{log, now, variable};

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(401, "unauthorized", message.to_owned())
}

/// The tenant an operator manages: with the deployment's admin token (the `kefu_admin_token`
/// variable, 16+ characters) the `X-Kefu-Tenant` header names it; otherwise a tenant key
/// (`Authorization: Bearer kf-<tenant>.<secret>`) does, checked against the tenant's stored
/// key hashes.
pub fn operator(kv: &Kv, req: &Incoming) -> Result<(TenantId, TenantConfig), ApiError> {
    let given = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            unauthorized("send a tenant key: Authorization: Bearer kf-<tenant>.<secret>")
        })?;
    if let Some(token) = variable("kefu_admin_token").filter(|t| t.len() >= 16)
        && auth::constant_time_eq(
            auth::hash_key(given).as_bytes(),
            auth::hash_key(&token).as_bytes(),
        )
    {
        let tenant = api::tenant(req.header(api::TENANT_HEADER))?;
        let config = kefu_engine::api::config_for_admin(store::config(kv, &tenant))?;
        return Ok((tenant, config));
    }
    // An agent's sign-in token is for conversations: it may not configure the tenant or
    // mint tokens (for itself or anyone).
    if given.starts_with(auth::AGENT_TOKEN_PREFIX) {
        return Err(ApiError::operator_only());
    }
    tenant_key(kv, given)
}

/// The tenant (and its configuration) a tenant key belongs to, checked against the tenant's
/// stored key hashes.
fn tenant_key(kv: &Kv, given: &str) -> Result<(TenantId, TenantConfig), ApiError> {
    let tenant = auth::tenant_of_key(given).ok_or_else(|| unauthorized("not a Kefu key"))?;
    let config = kefu_engine::api::config_for_key(store::config(kv, &tenant))?;
    auth::verify(given, &config.api_keys).ok_or_else(|| unauthorized("unknown key"))?;
    Ok((tenant, config))
}

/// The deployment's agent-token secret (the `kefu_token_secret` variable, 16+ bytes).
fn token_secret() -> Option<Vec<u8>> {
    variable("kefu_token_secret")
        .filter(|s| s.len() >= 16)
        .map(String::into_bytes)
}

/// A caller on the agents' API: the tenant, its configuration, and the agent's claims when
/// they signed in with a `kfa.` token (`None` for the tenant key).
pub type Agent = (TenantId, TenantConfig, Option<auth::AgentClaims>);

/// Who is calling the agents' API: an agent with a `kfa.` token, or an operator's back end
/// with the tenant key.
pub fn agent(kv: &Kv, req: &Incoming) -> Result<Agent, ApiError> {
    let given = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            unauthorized("send an agent token or the tenant key: Authorization: Bearer …")
        })?;
    agent_by(kv, given)
}

/// The agent (or operator) `given` (an agent token or the tenant key) signs in.
pub fn agent_by(kv: &Kv, given: &str) -> Result<Agent, ApiError> {
    if given.starts_with(auth::AGENT_TOKEN_PREFIX) {
        let secret =
            token_secret().ok_or_else(|| unauthorized("agent tokens are not enabled here"))?;
        let claims = auth::verify_agent_token(&secret, given, now())
            .map_err(|e| api::agent_token_error(&e))?;
        let tenant = TenantId::parse(&claims.tenant)
            .ok_or_else(|| unauthorized("the token names no valid tenant"))?;
        let config = store::config(kv, &tenant)?;
        // The roster rules (disabled, removed, signed out everywhere) need the tenant's
        // configuration: the one of the tenant the token names.
        auth::admit_agent(&config.agents, &claims).map_err(|e| api::agent_token_error(&e))?;
        return Ok((tenant, config, Some(claims)));
    }
    let (tenant, config) = tenant_key(kv, given)?;
    Ok((tenant, config, None))
}

/// `POST /api/v1/agents/tokens`: the tenant's back end signs an agent in.
pub fn mint_token(kv: &Kv, req: &Incoming) -> Result<Reply, ApiError> {
    let (tenant, config) = operator(kv, req)?;
    let secret = token_secret().ok_or_else(|| {
        ApiError::new(
            503,
            "agent_tokens_unavailable",
            "set the kefu_token_secret variable (16 bytes or more) to issue agent tokens",
        )
    })?;
    let claims = api::mint_agent_claims(&config, &tenant, &req.body, now())?;
    let token = auth::sign_agent_token(&secret, &claims);
    Ok(Reply::json(
        200,
        &json!({"token": token, "agent": claims.agent,
                "expires_at": kefu_engine::Timestamp::from_millis(claims.expires).to_rfc3339()}),
    ))
}

/// `/api/v1/config…`.
pub fn config(kv: &Kv, req: &Incoming, route: ConfigRoute) -> Result<Reply, ApiError> {
    let (tenant, live) = operator(kv, req)?;
    if !matches!(
        route,
        ConfigRoute::Get | ConfigRoute::Put | ConfigRoute::Versions | ConfigRoute::Rollback
    ) {
        return crate::drafts::route(kv, req, &tenant, &live, route);
    }
    let meta = ConfigMeta::from_json(kv.get_text(&config_history::meta_key(&tenant))?.as_deref());
    match route {
        ConfigRoute::Get => {
            let document = kv.get_text(&config_history::document_key(&tenant))?;
            let current: Value = document
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or(Value::Null);
            Ok(Reply::json(
                200,
                &json!({"tenant": tenant.as_str(), "version": meta.version, "config": current,
                        "builtin_default": document.is_none(),
                        "server_time": now().to_rfc3339()}),
            ))
        }
        ConfigRoute::Put => {
            api::parse_config_document(&req.body, &tenant, &crate::deployment())?;
            let document = String::from_utf8_lossy(&req.body).into_owned();
            let version = store_version(kv, &tenant, &meta, &document, "put".into())?;
            Ok(Reply::json(
                200,
                &json!({"tenant": tenant.as_str(), "version": version}),
            ))
        }
        ConfigRoute::Versions => Ok(Reply::json(
            200,
            &json!({"version": meta.version, "history": meta.history}),
        )),
        ConfigRoute::Rollback => {
            let target = api::parse_rollback(&req.body)?;
            let document = kv
                .get_text(&config_history::version_key(&tenant, target))?
                .ok_or_else(|| {
                    let mut e = ApiError::new(
                        404,
                        "version_not_found",
                        format!("version {target} is not in the history"),
                    );
                    e.field = Some("version".into());
                    e
                })?;
            // What was valid then must still be valid now (limits may have changed).
            api::parse_config_document(document.as_bytes(), &tenant, &crate::deployment())?;
            let version = store_version(
                kv,
                &tenant,
                &meta,
                &document,
                format!("rollback to {target}"),
            )?;
            Ok(Reply::json(
                200,
                &json!({"tenant": tenant.as_str(), "version": version, "restored": target}),
            ))
        }
        _ => Err(ApiError::internal("a draft route")),
    }
}

fn store_version(
    kv: &Kv,
    tenant: &TenantId,
    meta: &ConfigMeta,
    document: &str,
    change: String,
) -> Result<u64, ApiError> {
    let (version, ops) = config_history::store_version(meta, tenant, document, change, now());
    kv.apply(ops)?;
    log(
        "info",
        json!({"msg": "config changed", "tenant": tenant.as_str(), "version": version}),
    );
    Ok(version)
}
