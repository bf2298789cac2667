//! Tenant configuration: a JSON document in KV under `tenant:<id>`, or the built-in default
//! from the deployment's variables. The engine parses and validates it.

use std::collections::BTreeMap;
use std::rc::Rc;

use kefu_engine::api::ApiError;
use kefu_engine::config_history::{self, ConfigMeta, KvOp};
use kefu_engine::deployment::Deployment;
use kefu_engine::{ReplyMode, TenantConfig, TenantId, TurnOptions};
use worker::Env;

/// The KV namespace binding that holds tenant configurations.
const CONFIG_KV: &str = "CONFIG";

fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .filter(|v| !v.trim().is_empty())
}

/// A Worker secret, else (for local development) a plain, non-empty variable of that name.
fn secret_or_var(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .ok()
        .map(|s| s.to_string())
        .or_else(|| var(env, name))
}

/// How long an isolate reuses a tenant configuration it read (and parsed and validated)
/// before reading KV again. KV itself propagates a change to other locations within about a
/// minute; two more seconds here cost nothing in freshness and save a KV read and a parse
/// on almost every request.
const CACHE_MS: u64 = 2_000;

/// A configuration read at a time (ms), or the validation error it produced. Shared, not
/// copied: every request of the isolate reads the same parsed document.
type Cached = (u64, Result<Rc<TenantConfig>, ApiError>);

thread_local! {
    static CACHE: std::cell::RefCell<std::collections::HashMap<String, Cached>> = std::cell::RefCell::default();
}

/// The tenant's configuration. A stored document that fails validation is an error that
/// names the field, never a silent fall-back to another provider.
pub(crate) async fn load(env: &Env, tenant: &TenantId) -> Result<Rc<TenantConfig>, ApiError> {
    let now = crate::provider::now().as_millis();
    let cached = CACHE.with(|c| {
        c.borrow()
            .get(tenant.as_str())
            .filter(|(at, _)| now.saturating_sub(*at) < CACHE_MS)
            .map(|(_, r)| r.clone())
    });
    if let Some(result) = cached {
        return result;
    }
    let result = read(env, tenant).await.map(Rc::new);
    // Storage failures are not cached: the next request tries again.
    if !matches!(&result, Err(e) if e.code == "internal_error") {
        CACHE.with(|c| {
            c.borrow_mut()
                .insert(tenant.as_str().to_owned(), (now, result.clone()))
        });
    }
    result
}

async fn read(env: &Env, tenant: &TenantId) -> Result<TenantConfig, ApiError> {
    let stored = match env.kv(CONFIG_KV) {
        Ok(kv) => kv
            .get(&config_history::document_key(tenant))
            .text()
            .await
            .map_err(|e| ApiError::internal(format!("reading the tenant configuration: {e}")))?,
        // A deployment without the namespace simply has no stored configurations.
        Err(_) => None,
    };
    match stored {
        Some(json) => kefu_engine::api::stored_config(tenant, &json),
        // No stored document: the built-in configuration, for the tenants the deployment
        // opens (`404 tenant_not_found` for any other name).
        None => deployment(env)
            .builtin_config(tenant)
            .map_err(ApiError::from),
    }
}

thread_local! {
    /// The deployment's rules, read once per isolate (its variables cannot change under it).
    static DEPLOYMENT: std::cell::OnceCell<Rc<Deployment>> = const { std::cell::OnceCell::new() };
}

/// What the deployment gives its tenants ([`kefu_engine::deployment`]), from its variables
/// and secrets (`KEFU_TENANT_SECRETS`, `KEFU_OPEN_TENANTS`, …). Shared, not copied: every
/// request of the isolate reads the same rules.
pub(crate) fn deployment(env: &Env) -> Rc<Deployment> {
    DEPLOYMENT.with(|d| {
        d.get_or_init(|| {
            let deployment = Deployment::from_lookup(|name| secret_or_var(env, name));
            for warning in &deployment.warnings {
                crate::log(
                    "warn",
                    serde_json::json!({"msg": "deployment setting ignored", "warning": warning}),
                );
            }
            Rc::new(deployment)
        })
        .clone()
    })
}

/// The secrets a configuration of `tenant` may use, from the Worker's secrets (or, for
/// local development, plain variables of those names): only those the deployment gave the
/// tenant ([`Deployment::resolve_secrets`]). Missing ones are simply absent: the turn then
/// treats that target as failing authentication and falls back.
pub(crate) fn secrets(
    env: &Env,
    tenant: &TenantId,
    config: &TenantConfig,
) -> BTreeMap<String, String> {
    deployment(env).resolve_secrets(tenant, config, |name| secret_or_var(env, name))
}

/// Options for a turn: the secrets it may need and a fresh random seed.
pub(crate) fn turn_options(
    env: &Env,
    tenant: &TenantId,
    config: &TenantConfig,
    mode: ReplyMode,
) -> TurnOptions {
    let mut options = TurnOptions::new(mode);
    options.secrets = secrets(env, tenant, config);
    options.seed = random_u64();
    options
}

/// 64 random bits from the platform (the engine has no randomness of its own).
pub(crate) fn random_u64() -> u64 {
    let hi = (worker::js_sys::Math::random() * 4_294_967_296.0) as u64;
    let lo = (worker::js_sys::Math::random() * 4_294_967_296.0) as u64;
    (hi << 32) | lo
}

fn kv(env: &Env) -> Result<worker::KvStore, ApiError> {
    env.kv(CONFIG_KV)
        .map_err(|e| ApiError::internal(format!("the CONFIG namespace: {e}")))
}

/// The version history (the engine's layout: [`config_history`]).
pub(crate) async fn meta(env: &Env, tenant: &TenantId) -> Result<ConfigMeta, ApiError> {
    let text = kv(env)?
        .get(&config_history::meta_key(tenant))
        .text()
        .await
        .map_err(|e| ApiError::internal(format!("reading the history: {e}")))?;
    Ok(ConfigMeta::from_json(text.as_deref()))
}

/// The configuration a draft's knowledge sources are staged, searched and published under:
/// the draft configuration while it validates, else the live one
/// ([`kefu_engine::draft::draft_config`]).
pub(crate) async fn draft_config(
    env: &Env,
    tenant: &TenantId,
) -> Result<Rc<TenantConfig>, ApiError> {
    let stored = get_text(env, &kefu_engine::draft::draft_key(tenant)).await?;
    match kefu_engine::draft::draft_config(tenant, stored.as_deref(), &deployment(env)) {
        Some(config) => Ok(Rc::new(config)),
        None => load(env, tenant).await,
    }
}

/// The current document as stored (not the built-in default).
pub(crate) async fn current_document(
    env: &Env,
    tenant: &TenantId,
) -> Result<Option<String>, ApiError> {
    kv(env)?
        .get(&config_history::document_key(tenant))
        .text()
        .await
        .map_err(|e| ApiError::internal(format!("reading the configuration: {e}")))
}

/// A document the configuration's storage keeps beside it (the draft, the test cases).
pub(crate) async fn get_text(env: &Env, key: &str) -> Result<Option<String>, ApiError> {
    kv(env)?
        .get(key)
        .text()
        .await
        .map_err(|e| ApiError::internal(format!("reading {key}: {e}")))
}

/// Applies the engine's writes in order.
async fn apply(store: &worker::KvStore, ops: Vec<KvOp>) -> Result<(), ApiError> {
    for op in ops {
        match op {
            KvOp::Put(key, value) => store
                .put(&key, value)
                .map_err(|e| ApiError::internal(format!("writing {key}: {e}")))?
                .execute()
                .await
                .map_err(|e| ApiError::internal(format!("writing {key}: {e}")))?,
            // Only frees space: a failure is harmless.
            KvOp::Delete(key) => {
                let _ = store.delete(&key).await;
            }
        }
    }
    Ok(())
}

/// Carries out one of the engine's writes to the configuration's storage.
pub(crate) async fn write(env: &Env, op: KvOp) -> Result<(), ApiError> {
    apply(&kv(env)?, vec![op]).await
}

/// Makes `document` (a draft, already validated) the next version, its history entry
/// keeping how its test suite did ([`config_history::publish_version`]).
pub(crate) async fn publish_version(
    env: &Env,
    tenant: &TenantId,
    document: &str,
    publication: config_history::Publication,
) -> Result<u64, ApiError> {
    let store = kv(env)?;
    let meta = meta(env, tenant).await?;
    let (version, ops) = config_history::publish_version(
        &meta,
        tenant,
        document,
        publication,
        crate::provider::now(),
    );
    apply(&store, ops).await?;
    CACHE.with(|c| c.borrow_mut().remove(tenant.as_str()));
    Ok(version)
}

/// Stores `document` (already validated) as the next version and makes it current; returns
/// the new version. The isolate's cache forgets the tenant at once; other isolates see the
/// change within their cache time and KV's propagation.
pub(crate) async fn store_version(
    env: &Env,
    tenant: &TenantId,
    document: &str,
    change: String,
) -> Result<u64, ApiError> {
    let store = kv(env)?;
    let meta = meta(env, tenant).await?;
    let (version, ops) =
        config_history::store_version(&meta, tenant, document, change, crate::provider::now());
    apply(&store, ops).await?;
    CACHE.with(|c| c.borrow_mut().remove(tenant.as_str()));
    Ok(version)
}

/// The document of an earlier version, if the history still has it.
pub(crate) async fn version_document(
    env: &Env,
    tenant: &TenantId,
    version: u64,
) -> Result<Option<String>, ApiError> {
    kv(env)?
        .get(&config_history::version_key(tenant, version))
        .text()
        .await
        .map_err(|e| ApiError::internal(format!("reading version {version}: {e}")))
}
