//! Configuration documents: the tenant's stored document parsed and checked, a new one
//! validated for `PUT /api/v1/config` (and rollbacks and replays), and which configuration
//! an admin token or a tenant key manages.

use serde_json::Value;

use super::error::ApiError;
use super::route::{ConfigRoute, Route, body_limit};
use crate::vocab::TenantId;

/// The configuration the deployment's admin token manages: a tenant that does not exist
/// yet is managed with an empty configuration (the admin token is how tenants are
/// created); every other error stands.
pub fn config_for_admin<C: From<crate::TenantConfig>>(
    loaded: Result<C, ApiError>,
) -> Result<C, ApiError> {
    match loaded {
        Err(e) if e.code == "tenant_not_found" => Ok(crate::TenantConfig::default().into()),
        other => other,
    }
}

/// A tenant key's tenant must exist: an unknown one is the key's fault (`401`), so a
/// stranger cannot tell which tenants exist by trying keys.
pub fn config_for_key<C>(loaded: Result<C, ApiError>) -> Result<C, ApiError> {
    match loaded {
        Err(e) if e.code == "tenant_not_found" => {
            Err(ApiError::new(401, "unauthorized", "unknown key"))
        }
        other => other,
    }
}

/// The largest configuration document accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// Validates `tenant`'s configuration document for `PUT /api/v1/config` (and a rollback, and
/// a replay's configuration): `400 invalid_config` with the field at fault, or the parsed
/// configuration. Besides the document's own rules, it may name only the secrets the
/// deployment gave this tenant ([`crate::deployment::Deployment::check_config`]).
pub fn parse_config_document(
    body: &[u8],
    tenant: &TenantId,
    deployment: &crate::deployment::Deployment,
) -> Result<crate::TenantConfig, ApiError> {
    let limit = body_limit(&Route::Config(ConfigRoute::Put));
    if !limit.admits(body.len() as u64) {
        return Err(limit.refusal());
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(400, "invalid_json", "the body is not UTF-8"))?;
    let invalid = |e: crate::config::ConfigError| {
        let mut err = ApiError::new(400, "invalid_config", e.to_string());
        err.field = Some(e.field);
        err
    };
    let config = crate::TenantConfig::from_json(text).map_err(invalid)?;
    deployment.check_config(tenant, &config).map_err(invalid)?;
    Ok(config)
}

/// The version a rollback asks for.
pub fn parse_rollback(body: &[u8]) -> Result<u64, ApiError> {
    let v = super::json_body(body)?;
    v.get("version")
        .and_then(Value::as_u64)
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            ApiError::new(
                400,
                "invalid_field",
                "`version` must be a version number (1 or more)",
            )
            .field("version")
        })
}

/// The tenant's stored configuration document, parsed and validated: a stored document
/// that fails validation is `500 tenant_config_invalid` naming the field, never a silent
/// fall-back to another provider.
pub fn stored_config(tenant: &TenantId, json: &str) -> Result<crate::TenantConfig, ApiError> {
    crate::TenantConfig::from_json(json).map_err(|e| {
        ApiError::new(
            500,
            "tenant_config_invalid",
            format!(
                "the stored configuration of tenant {} is invalid: {e}",
                tenant.as_str()
            ),
        )
    })
}
