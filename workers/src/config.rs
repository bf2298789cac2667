//! Tenant configuration: a JSON document in KV under `tenant:<id>`, or the built-in default
//! from the deployment's variables. The engine parses and validates it.

use kefu_engine::api::ApiError;
use kefu_engine::{TenantConfig, TenantId};
use worker::Env;

/// The KV namespace binding that holds tenant configurations.
const CONFIG_KV: &str = "CONFIG";

fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .filter(|v| !v.trim().is_empty())
}

/// The tenant's configuration. A stored document that fails validation is an error that
/// names the field, never a silent fall-back to another provider.
pub(crate) async fn load(env: &Env, tenant: &TenantId) -> Result<TenantConfig, ApiError> {
    let stored = match env.kv(CONFIG_KV) {
        Ok(kv) => kv
            .get(&format!("tenant:{}", tenant.as_str()))
            .text()
            .await
            .map_err(|e| ApiError::internal(format!("reading the tenant configuration: {e}")))?,
        // A deployment without the namespace simply has no stored configurations.
        Err(_) => None,
    };
    match stored {
        Some(json) => TenantConfig::from_json(&json).map_err(|e| ApiError {
            status: 500,
            code: "tenant_config_invalid",
            message: format!(
                "the stored configuration of tenant {} is invalid: {e}",
                tenant.as_str()
            ),
            field: None,
            allow: None,
        }),
        None => Ok(TenantConfig::builtin(
            var(env, "KEFU_PROVIDER_BASE_URL").as_deref(),
            var(env, "KEFU_MODEL").as_deref(),
        )),
    }
}

/// The API key a provider configuration names, from the Worker's secrets (or, for local
/// development, a plain variable of that name).
pub(crate) fn api_key(env: &Env, config: &TenantConfig) -> Option<String> {
    let name = config.provider.as_ref()?.api_key_secret.as_deref()?;
    env.secret(name)
        .ok()
        .map(|s| s.to_string())
        .or_else(|| var(env, name))
        .filter(|k| !k.is_empty())
}
