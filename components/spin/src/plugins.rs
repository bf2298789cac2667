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

use kefu_engine::Header;
use kefu_engine::chat::{ActivePlugin, EventPass};
use kefu_engine::plugin::{
    self as plugin, FailureKind, HookCall, Manifest, PluginFailure, PluginSpec,
};
use kefu_engine::{ConversationId, HttpRequest, TenantConfig};
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
        Ok((status, body)) if status >= 500 => Err(instance_died(status, &body, started)),
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

/// The plugin's instance died: Spin answered the chained request with an error status.
///
/// Spin answers a trapped component with a plain `500` and an empty body (real Spin 4 does,
/// and Kefu's Spin test host answers as it does): it does not say which trap. A panic (the
/// wasm `unreachable`), the CPU meter's trap (a division by zero, see
/// `components/plugin-meter`), the memory maximum and any other trap look the same from
/// here, so each is recorded as a trap that says its kind is not known — never guessed from
/// timing. What Spin does show is the time: an endless loop ends with this answer long
/// before its wall-clock budget, which only the meter can do. (On Workers the trap's message
/// names it, and there the meter's trap is a timeout.) A call that outlives its wall-clock
/// budget is a timeout on every runtime (the fetch's deadline).
fn instance_died(status: u16, body: &[u8], started: u64) -> PluginFailure {
    let spent = now().as_millis().saturating_sub(started);
    PluginFailure::new(
        FailureKind::Trap,
        format!(
            "the plugin's component failed after {spent} ms: Spin answered {status}{}, which \
             does not say how (a panic, its CPU allowance, its memory maximum or another trap)",
            detail(body)
        ),
    )
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

/// After the response: every event the request stored goes to the tenant's plugins that
/// observe events, and what they ask for (a tag, a message, a handoff) is applied to the
/// conversation like any change (its events reach the webhooks, which go out next). Events
/// of the plugins' own actions are not shown to plugins again, so plugins cannot loop. Each
/// call is logged with its outcome.
pub(crate) fn after_response(kv: &Kv) {
    for (tenant, config, events) in crate::webhooks::committed() {
        if !config.plugins.iter().any(|p| p.enabled) {
            continue;
        }
        // One pass per conversation, in the order its events were stored.
        let mut conversations: Vec<ConversationId> = Vec::new();
        for e in &events {
            if !conversations.contains(e.conversation()) {
                conversations.push(e.conversation().clone());
            }
        }
        for id in conversations {
            let mut pass = EventPass::new(
                now(),
                tenant.clone(),
                config.clone(),
                id.clone(),
                events.clone(),
            );
            let host = crate::outbound::Host {
                kv,
                tenant: &tenant,
                config: &config,
                conversation: Some(&id),
            };
            crate::outbound::drive(&host, &mut pass, |_| {});
        }
    }
}

/// `GET /api/v1/plugins` (operators): the installed plugins with their manifests (or why they
/// could not describe themselves) and the tenant's plugins as configured — the Worker's JSON.
pub(crate) fn list(
    kv: &Kv,
    req: &crate::http::Incoming,
) -> Result<crate::http::Reply, kefu_engine::api::ApiError> {
    let (_, config) = crate::admin::operator(kv, req)?;
    let installed: Vec<(String, Result<Manifest, PluginFailure>)> = installed()
        .into_iter()
        .map(|name| {
            let spec = PluginSpec {
                id: name.clone(),
                plugin: name.clone(),
                enabled: true,
                settings: Default::default(),
                grants: Default::default(),
                budget_ms: None,
                max_output_bytes: None,
            };
            let manifest = manifest(kv, &spec);
            (name, manifest)
        })
        .collect();
    Ok(crate::http::Reply::json(
        200,
        &kefu_engine::api::plugins_json(&installed, &config),
    ))
}

/// `POST /api/v1/plugins/{id}/test` (operators): one hook of one of the tenant's plugins,
/// with the operator's input, answered as a turn would check it, with the call's record.
pub(crate) fn test(
    kv: &Kv,
    req: &crate::http::Incoming,
    id: &str,
) -> Result<crate::http::Reply, kefu_engine::api::ApiError> {
    let (tenant, config) = crate::admin::operator(kv, req)?;
    let spec = kefu_engine::api::plugin_spec(&config, id)?;
    let hook = kefu_engine::api::parse_plugin_test(&req.body, &tenant, spec)?;
    let started = now();
    let result = call(spec, &hook)
        .and_then(|json| plugin::parse_answer(hook.hook(), &json, spec.max_output_bytes()));
    let took = now().since(started).as_millis() as u64;
    let record = kefu_engine::api::plugin_call_record(spec, &hook, took, &result);
    log(
        "info",
        json!({"msg": "plugin test", "tenant": tenant.as_str(), "record": record}),
    );
    Ok(crate::http::Reply::json(
        200,
        &kefu_engine::api::plugin_test_json(&result, &record),
    ))
}
