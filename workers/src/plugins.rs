//! Plugins on Workers: runs a hook call of a tenant's plugin and keeps every rule here, in
//! Rust, with the engine's functions.
//!
//! `make worker` transpiles each plugin component (`target/plugins/<name>.wasm`) with jco into
//! `workers/build/plugins/` (workers/plugins/bundle.mjs): one JS module, `index.mjs`, holding
//! the runner (workers/plugins/runner.js) and every plugin's instantiate function, beside the
//! plugins' core wasm modules, which the Worker imports as compiled modules. [`call`] hands
//! the runner a hook call as the engine's JSON ([`HookCall`]) and a `host` object of Rust
//! closures, which are the plugin's only way out: `log` (cut with [`plugin::log_line`], at
//! most [`plugin::MAX_LOG_LINES`] a call), `setting`, a key-value space in the `CONFIG` KV
//! namespace under [`plugin::kv_key`] (only with `grants.kv`), and outbound `fetch` to the
//! hosts [`plugin::check_url`] admits (redirects not followed, bodies bounded). Each call
//! gets a fresh instance, runs against the plugin's wall-clock budget, and ends in an
//! [`Answer`] parsed by [`plugin::parse_answer`] or a [`PluginFailure`]: a trap, the CPU
//! allowance's divide-by-zero trap (components/plugin-meter) or the budget as `Timeout`, an
//! answer over its limit as `TooLarge`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use futures::future::{Either, select};
use kefu_engine::TenantId;
use kefu_engine::plugin::{
    self, Answer, FailureKind, Grants, HookCall, Manifest, PluginFailure, PluginSpec,
};
use serde_json::{Value, json};
use wasm_bindgen::JsValue;
use wasm_bindgen::closure::Closure;
use worker::js_sys::{Object, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen_futures::{JsFuture, future_to_promise};
use worker::{
    AbortController, Delay, Env, Fetch, Headers, Method, Request, RequestInit, RequestRedirect,
};

use crate::provider::now;

/// The generated module of the installed plugins (workers/plugins/bundle.mjs). worker-build's
/// esbuild leaves the import alone (workers/esbuild-external-plugins.sh), so it stays a
/// module of its own beside the plugins' core wasm modules.
mod runner {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen(raw_module = "./plugins/index.mjs")]
    extern "C" {
        /// Runs one hook call; resolves to `{answer}` or `{failure: {kind, message}}`, never
        /// rejects.
        pub fn run(name: &str, call_json: &str, host: &JsValue) -> worker::js_sys::Promise;
        /// The installed plugins' names.
        pub fn installed() -> worker::js_sys::Array;
    }
}

/// The KV namespace plugins' key-value spaces live in (under `plugin/<tenant>/<id>/`, which
/// no tenant configuration key can collide with).
const PLUGIN_KV: &str = "CONFIG";

/// The installed plugins' names.
pub(crate) fn installed() -> Vec<String> {
    runner::installed()
        .iter()
        .filter_map(|v| v.as_string())
        .collect()
}

/// Runs `call` on the tenant's plugin `spec` within its budget; its answer parsed (and held
/// to the output limit) with [`plugin::parse_answer`].
pub(crate) async fn call(
    env: &Env,
    tenant: &TenantId,
    spec: &PluginSpec,
    call: &HookCall,
) -> Result<Answer, PluginFailure> {
    let json = call_json(env, tenant.as_str(), spec, call).await?;
    plugin::parse_answer(call.hook(), &json, spec.max_output_bytes())
}

/// The tenant's enabled plugins with their manifests, in configuration order, for a turn. A
/// plugin that cannot describe itself is left out (and logged): the turn goes on without it.
pub(crate) async fn active(
    env: &Env,
    tenant: &TenantId,
    config: &kefu_engine::TenantConfig,
) -> Vec<kefu_engine::chat::ActivePlugin> {
    let mut active = Vec::new();
    for spec in config.plugins.iter().filter(|s| s.enabled) {
        match describe(env, tenant, &spec.plugin).await {
            Ok(manifest) => active.push(kefu_engine::chat::ActivePlugin {
                spec: spec.clone(),
                manifest,
            }),
            Err(e) => crate::log(
                "error",
                json!({"msg": "plugin unavailable", "tenant": tenant.as_str(), "plugin_id": spec.id,
                    "plugin": spec.plugin, "failure": e}),
            ),
        }
    }
    active
}

/// The tenant a hook call runs for (its `ctx`; `describe` has none and needs no host).
pub(crate) fn tenant_of(call: &HookCall) -> &str {
    match call {
        HookCall::Describe => "",
        HookCall::OnEvent { ctx, .. }
        | HookCall::BeforeModel { ctx, .. }
        | HookCall::AfterReply { ctx, .. }
        | HookCall::CallTool { ctx, .. } => &ctx.tenant,
    }
}

/// Runs `call` on the plugin `spec` within its budget: the answer as the engine's JSON (not
/// yet parsed: the turn parses it with the engine's rules), or how the call failed.
pub(crate) async fn call_json(
    env: &Env,
    tenant: &str,
    spec: &PluginSpec,
    call: &HookCall,
) -> Result<Vec<u8>, PluginFailure> {
    let budget = Duration::from_millis(spec.budget_ms().into());
    let call_json = serde_json::to_string(call)
        .map_err(|e| PluginFailure::new(FailureKind::Unavailable, e.to_string()))?;
    let host = Rc::new(Host {
        env: env.clone(),
        tenant: tenant.to_owned(),
        plugin_id: spec.id.clone(),
        plugin: spec.plugin.clone(),
        settings: spec.settings.clone(),
        grants: spec.grants.clone(),
        deadline_ms: now().as_millis() + budget.as_millis() as u64,
        log_lines: Cell::new(0),
    });
    let host_object = host_object(&host);
    let run = JsFuture::from(runner::run(&spec.plugin, &call_json, &host_object));
    // A plugin stuck in a loop never yields to this timer: its metering allowance stops it
    // (components/plugin-meter). The timer bounds the time it waits on the host.
    let outcome = match select(pin!(run), pin!(Delay::from(budget))).await {
        Either::Left((outcome, _)) => outcome,
        Either::Right(((), _)) => {
            return Err(PluginFailure::new(
                FailureKind::Timeout,
                format!("no answer within its budget of {} ms", spec.budget_ms()),
            ));
        }
    };
    let outcome = outcome.map_err(|e| {
        PluginFailure::new(
            FailureKind::Unavailable,
            format!("the plugin runner failed: {e:?}"),
        )
    })?;
    let field = |name: &str| Reflect::get(&outcome, &JsValue::from_str(name)).ok();
    if let Some(answer) = field("answer").and_then(|a| a.as_string()) {
        return Ok(answer.into_bytes());
    }
    let failure = field("failure").unwrap_or(JsValue::UNDEFINED);
    let text = |name: &str| {
        Reflect::get(&failure, &JsValue::from_str(name))
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default()
    };
    let kind = match text("kind").as_str() {
        "trap" => FailureKind::Trap,
        "timeout" => FailureKind::Timeout,
        _ => FailureKind::Unavailable,
    };
    Err(PluginFailure::new(kind, text("message")))
}

thread_local! {
    /// Installed plugins' manifests (or why describing one failed), for the isolate's
    /// lifetime: the installed plugins are part of the deployment and cannot change under it.
    static MANIFESTS: RefCell<BTreeMap<String, Result<Manifest, PluginFailure>>> = RefCell::default();
}

/// The manifest of the installed plugin `name`, from its `describe` (once per isolate).
pub(crate) async fn describe(
    env: &Env,
    tenant: &TenantId,
    name: &str,
) -> Result<Manifest, PluginFailure> {
    if let Some(known) = MANIFESTS.with(|m| m.borrow().get(name).cloned()) {
        return known;
    }
    // Describing needs nothing from the host: no settings, no grants, the default budget.
    let spec = PluginSpec {
        id: name.to_owned(),
        plugin: name.to_owned(),
        enabled: true,
        settings: BTreeMap::new(),
        grants: Grants::default(),
        budget_ms: None,
        max_output_bytes: None,
    };
    let result = match call(env, tenant, &spec, &HookCall::Describe).await {
        Ok(Answer::Manifest(m)) if m.name == name => Ok(m),
        Ok(Answer::Manifest(m)) => Err(PluginFailure::new(
            FailureKind::Invalid,
            format!("installed as {name:?} but describes itself as {:?}", m.name),
        )),
        Ok(_) => Err(PluginFailure::new(FailureKind::Invalid, "not a manifest")),
        Err(e) => Err(e),
    };
    // A timeout may be the isolate's load, not the plugin: it is tried again next time.
    if !matches!(&result, Err(e) if e.kind == FailureKind::Timeout) {
        MANIFESTS.with(|m| m.borrow_mut().insert(name.to_owned(), result.clone()));
    }
    result
}

/// What one hook call may reach, for the closures the runner calls.
struct Host {
    env: Env,
    tenant: String,
    plugin_id: String,
    plugin: String,
    settings: BTreeMap<String, String>,
    grants: Grants,
    /// When the call's budget ends (ms since the epoch): outbound requests end there too.
    deadline_ms: u64,
    log_lines: Cell<u32>,
}

/// An `{ok: value}` answer for the runner.
fn ok(value: &JsValue) -> JsValue {
    let o = Object::new();
    let _ = Reflect::set(&o, &"ok".into(), value);
    o.into()
}

/// An `{err: variant}` answer for the runner: a WIT error variant in the engine's JSON
/// shape (`"denied"`, `{"failed": "…"}`), which the runner turns into jco's `{tag, val}`.
fn err(variant: Value) -> JsValue {
    let o = Object::new();
    let value = worker::js_sys::JSON::parse(&variant.to_string()).unwrap_or(JsValue::NULL);
    let _ = Reflect::set(&o, &"err".into(), &value);
    o.into()
}

/// The `host` object the runner calls: `log`, `setting`, `kv` and `fetch`. The closures are
/// handed to JS (`into_js_value`), which frees them when the plugin's instance is gone.
fn host_object(host: &Rc<Host>) -> JsValue {
    let o = Object::new();
    let h = host.clone();
    let log = Closure::<dyn Fn(String, String)>::new(move |level: String, message: String| {
        h.log(&level, &message)
    });
    let h = host.clone();
    let setting = Closure::<dyn Fn(String) -> Option<String>>::new(move |name: String| {
        h.settings.get(&name).cloned()
    });
    let h = host.clone();
    let kv = Closure::<dyn Fn(String, String, JsValue) -> Promise>::new(
        move |op: String, key: String, value: JsValue| {
            let h = h.clone();
            future_to_promise(async move { Ok(h.kv(&op, &key, value).await) })
        },
    );
    let h = host.clone();
    let fetch = Closure::<dyn Fn(String, String, String, JsValue) -> Promise>::new(
        move |method: String, url: String, headers: String, body: JsValue| {
            let h = h.clone();
            future_to_promise(async move { Ok(h.fetch(&method, &url, &headers, body).await) })
        },
    );
    for (name, f) in [
        ("log", log.into_js_value()),
        ("setting", setting.into_js_value()),
        ("kv", kv.into_js_value()),
        ("fetch", fetch.into_js_value()),
    ] {
        let _ = Reflect::set(&o, &name.into(), &f);
    }
    o.into()
}

impl Host {
    fn log(&self, level: &str, message: &str) {
        let n = self.log_lines.get() + 1;
        self.log_lines.set(n);
        if n > plugin::MAX_LOG_LINES {
            if n == plugin::MAX_LOG_LINES + 1 {
                crate::log(
                    "warn",
                    json!({"msg": "plugin log limit reached; further lines of this call dropped",
                        "tenant": self.tenant, "plugin_id": self.plugin_id, "plugin": self.plugin}),
                );
            }
            return;
        }
        let level = match level {
            "debug" | "info" | "warn" | "error" => level,
            _ => "info",
        };
        crate::log(
            level,
            json!({"msg": plugin::log_line(message), "source": "plugin",
                "tenant": self.tenant, "plugin_id": self.plugin_id, "plugin": self.plugin}),
        );
    }

    async fn kv(&self, op: &str, key: &str, value: JsValue) -> JsValue {
        if !self.grants.kv {
            return err(json!("denied"));
        }
        let Ok(key) = plugin::kv_key(&self.tenant, &self.plugin_id, key) else {
            return err(json!("too_large"));
        };
        let store = match self.env.kv(PLUGIN_KV) {
            Ok(store) => store,
            Err(e) => return err(json!({"failed": format!("no key-value store: {e}")})),
        };
        let failed = |e: worker::kv::KvError| err(json!({"failed": e.to_string()}));
        match op {
            "get" => match store.get(&key).bytes().await {
                Ok(Some(bytes)) => ok(&Uint8Array::from(bytes.as_slice()).into()),
                Ok(None) => ok(&JsValue::UNDEFINED),
                Err(e) => failed(e),
            },
            "set" => {
                let bytes = Uint8Array::new(&value).to_vec();
                if bytes.len() > plugin::MAX_KV_VALUE_BYTES {
                    return err(json!("too_large"));
                }
                match store.put_bytes(&key, &bytes) {
                    Ok(put) => match put.execute().await {
                        Ok(()) => ok(&JsValue::UNDEFINED),
                        Err(e) => failed(e),
                    },
                    Err(e) => failed(e),
                }
            }
            "delete" => match store.delete(&key).await {
                Ok(()) => ok(&JsValue::UNDEFINED),
                Err(e) => failed(e),
            },
            _ => err(json!({"failed": format!("unknown key-value operation {op}")})),
        }
    }

    async fn fetch(&self, method: &str, url: &str, headers: &str, body: JsValue) -> JsValue {
        // From here on only the approved serialization is used: the check judged its host,
        // and fetch must not read the plugin's own spelling some other way.
        let url = match plugin::check_url(url, &self.grants) {
            Ok(approved) => approved,
            Err(denied) => return err(json!({"denied": denied.0})),
        };
        if !matches!(method, "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
            return err(json!({"failed": format!("method {method} is not allowed")}));
        }
        let body = (!body.is_undefined() && !body.is_null()).then(|| Uint8Array::new(&body));
        if body
            .as_ref()
            .is_some_and(|b| b.length() as usize > plugin::MAX_HTTP_BODY_BYTES)
        {
            return err(json!("too_large"));
        }
        let pairs: Vec<(String, String)> = match serde_json::from_slice(headers.as_bytes()) {
            Ok(p) => p,
            Err(e) => return err(json!({"failed": format!("headers: {e}")})),
        };
        let left = self.deadline_ms.saturating_sub(now().as_millis());
        if left == 0 {
            return err(json!("timeout"));
        }
        let controller = AbortController::default();
        let request = (|| -> worker::Result<Request> {
            let h = Headers::new();
            // The request goes to the approved URL's host; a plugin's `Host` header is dropped
            // (as on Spin) so it cannot name another.
            for (name, value) in pairs
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
            {
                h.append(name, value)?;
            }
            let mut init = RequestInit::new();
            init.with_method(Method::from(method.to_owned()))
                .with_headers(h)
                // A redirect could lead to a host the plugin was not granted: the plugin sees
                // the 3xx and may ask for the new location, which is checked like any URL.
                .with_redirect(RequestRedirect::Manual)
                .with_body(body.map(Into::into));
            Request::new_with_init(url.as_str(), &init)
        })();
        let request = match request {
            Ok(r) => r,
            Err(e) => return err(json!({"failed": e.to_string()})),
        };
        let signal = controller.signal();
        let exchange = async {
            let mut resp = Fetch::Request(request).send_with_signal(&signal).await?;
            let declared = resp
                .headers()
                .get("content-length")?
                .and_then(|v| v.parse::<usize>().ok());
            if declared.is_some_and(|n| n > plugin::MAX_HTTP_BODY_BYTES) {
                return Ok(None);
            }
            let bytes = resp.bytes().await?;
            if bytes.len() > plugin::MAX_HTTP_BODY_BYTES {
                return Ok(None);
            }
            let headers: Vec<(String, String)> = resp.headers().entries().collect();
            Ok::<_, worker::Error>(Some((resp.status_code(), headers, bytes)))
        };
        let timer = Delay::from(Duration::from_millis(left));
        let answer = match select(pin!(exchange), pin!(timer)).await {
            Either::Left((answer, _)) => answer,
            Either::Right(((), _)) => {
                controller.abort();
                return err(json!("timeout"));
            }
        };
        match answer {
            Ok(Some((status, headers, bytes))) => {
                let response = Object::new();
                let headers = worker::js_sys::JSON::parse(&json!(headers).to_string())
                    .unwrap_or(JsValue::NULL);
                let _ = Reflect::set(&response, &"status".into(), &status.into());
                let _ = Reflect::set(&response, &"headers".into(), &headers);
                let _ = Reflect::set(
                    &response,
                    &"body".into(),
                    &Uint8Array::from(bytes.as_slice()).into(),
                );
                ok(&response.into())
            }
            Ok(None) => {
                controller.abort();
                err(json!("too_large"))
            }
            Err(e) => err(json!({"failed": e.to_string()})),
        }
    }
}
