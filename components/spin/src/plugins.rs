//! Plugins on Spin. Each installed plugin is its own component of the Spin application,
//! `plugin-<name>` on a private route, built by `make spin` from the plugin composed with
//! Kefu's Spin host adapter and entry (`components/spin-plugin`). Kefu reaches it over Spin's
//! local service chaining (`http://plugin-<name>.spin.internal/`).
//!
//! Why a component of its own rather than one composed into Kefu's: a trap in a component
//! ends its whole instance, and nothing inside the instance can catch it. In its own
//! instance, a plugin that traps (or runs out of its CPU allowance) fails *its* request, and
//! the turn goes on without it; its grants are enforced twice, by the host adapter under the
//! tenant's configuration and by Spin under the plugin component's manifest.

use kefu_engine::plugin::{FailureKind, HookCall, Manifest, PluginFailure, PluginSpec};
use kefu_engine::provider::Header;
use kefu_engine::turn::ActivePlugin;
use kefu_engine::{HttpRequest, TenantConfig};
use serde_json::json;

use crate::outbound::{FetchError, fetch};
use crate::store::Kv;
use crate::{log, now};

/// How long a plugin's `describe` may take.
const DESCRIBE_BUDGET_MS: u32 = 2_000;
/// How long a manifest read from a plugin is trusted before it is read again.
const MANIFEST_TTL_MS: u64 = 60_000;

/// The plugins this deployment installed (the `installed_plugins` variable, comma-separated
/// names), each served by the component `plugin-<name>`.
pub(crate) fn installed() -> Vec<String> {
    crate::variable("installed_plugins")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

fn url(name: &str) -> String {
    format!("http://plugin-{name}.spin.internal/")
}

/// Calls `hook` on the plugin `spec` enables, within its budget: the answer's JSON, or how
/// the call failed.
pub(crate) fn call(spec: &PluginSpec, hook: &HookCall) -> Result<Vec<u8>, PluginFailure> {
    call_within(spec, hook, spec.budget_ms())
}

fn call_within(
    spec: &PluginSpec,
    hook: &HookCall,
    budget_ms: u32,
) -> Result<Vec<u8>, PluginFailure> {
    if !installed().iter().any(|n| n == &spec.plugin) {
        return Err(PluginFailure::new(
            FailureKind::Unavailable,
            format!("no plugin named {:?} is installed", spec.plugin),
        ));
    }
    let started = now().as_millis();
    let deadline = started + u64::from(budget_ms);
    let envelope = json!({"spec": spec, "call": hook, "deadline_ms": deadline});
    let request = HttpRequest {
        method: "POST",
        url: url(&spec.plugin),
        headers: vec![Header {
            name: "content-type",
            value: "application/json".into(),
            sensitive: false,
        }],
        body: envelope.to_string().into_bytes(),
    };
    // One byte over the limit is enough to know it is over.
    let limit = spec.max_output_bytes() as usize + 1;
    match fetch(&request, deadline, limit) {
        Ok((200, body)) => Ok(body),
        Ok((status, body)) if status >= 500 => {
            // The plugin's instance died: a trap, or the CPU allowance ran out (the metering
            // traps). Which one cannot be told from outside; the time spent can hint.
            let spent = now().as_millis().saturating_sub(started);
            Err(PluginFailure::new(
                FailureKind::Trap,
                format!(
                    "the plugin's component failed ({status} after {spent} ms): a trap or its CPU allowance ran out{}",
                    detail(&body)
                ),
            ))
        }
        Ok((status, body)) => Err(PluginFailure::new(
            FailureKind::Unavailable,
            format!("the plugin's component answered {status}{}", detail(&body)),
        )),
        Err(FetchError::Timeout) => Err(PluginFailure::new(
            FailureKind::Timeout,
            format!("no answer within its budget of {budget_ms} ms"),
        )),
        Err(FetchError::TooLarge) => Err(PluginFailure::new(
            FailureKind::TooLarge,
            format!(
                "answered more than its limit of {} bytes",
                spec.max_output_bytes()
            ),
        )),
        Err(FetchError::Failed(reason)) => Err(PluginFailure::new(
            FailureKind::Unavailable,
            format!("cannot reach the plugin's component: {reason}"),
        )),
    }
}

fn detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {}", text.chars().take(200).collect::<String>())
    }
}

/// The manifest of plugin `spec.plugin`: from the store when read less than a minute ago,
/// else asked of the plugin (and stored).
pub(crate) fn manifest(kv: &Kv, spec: &PluginSpec) -> Result<Manifest, PluginFailure> {
    let key = format!("plugins:manifest:{}", spec.plugin);
    let now_ms = now().as_millis();
    if let Ok(Some(text)) = kv.get_text(&key)
        && let Ok((at, manifest)) = serde_json::from_str::<(u64, Manifest)>(&text)
        && now_ms.saturating_sub(at) < MANIFEST_TTL_MS
    {
        return Ok(manifest);
    }
    let json = call_within(spec, &HookCall::Describe, DESCRIBE_BUDGET_MS)?;
    let manifest = match kefu_engine::plugin::parse_answer(
        kefu_engine::plugin::Hook::Describe,
        &json,
        kefu_engine::plugin::MAX_OUTPUT_BYTES,
    )? {
        kefu_engine::plugin::Answer::Manifest(m) => m,
        _ => {
            return Err(PluginFailure::new(
                FailureKind::Invalid,
                "describe did not answer a manifest",
            ));
        }
    };
    if manifest.name != spec.plugin {
        return Err(PluginFailure::new(
            FailureKind::Invalid,
            format!(
                "the component for {:?} says it is {:?}",
                spec.plugin, manifest.name
            ),
        ));
    }
    if let Ok(text) = serde_json::to_string(&(now_ms, &manifest)) {
        kv.set_text(&key, &text);
    }
    Ok(manifest)
}

/// Refuses a tenant whose enabled plugins need what the Spin component does not do yet:
/// their turn hooks and tools run here, their `on-event` hooks do not (so a plugin that
/// observes events is refused, not silently deaf).
pub(crate) fn supported(kv: &Kv, config: &TenantConfig) -> Result<(), kefu_engine::api::ApiError> {
    for spec in config.plugins.iter().filter(|s| s.enabled) {
        if let Ok(manifest) = manifest(kv, spec)
            && manifest.hooks.on_event
        {
            return Err(crate::not_on_spin(
                &format!("plugin {:?}'s on-event hook", spec.id),
                "serve this tenant from the Worker, or disable the plugin",
            ));
        }
    }
    Ok(())
}

/// The tenant's enabled plugins with their manifests, in configuration order. A plugin that
/// cannot describe itself is left out of the turn (and logged): the turn goes on without it.
pub(crate) fn active(kv: &Kv, config: &TenantConfig) -> Vec<ActivePlugin> {
    config
        .plugins
        .iter()
        .filter(|spec| spec.enabled)
        .filter_map(|spec| match manifest(kv, spec) {
            Ok(manifest) => Some(ActivePlugin {
                spec: spec.clone(),
                manifest,
            }),
            Err(e) => {
                log(
                    "error",
                    json!({"msg": "plugin unavailable", "plugin_id": spec.id, "plugin": spec.plugin, "failure": e}),
                );
                None
            }
        })
        .collect()
}
