// Kefu's plugin runner on Workers: runs one hook call of a plugin transpiled by jco
// (`jco transpile --instantiation async --async-mode jspi`), in a fresh instance.
//
// The Rust side (workers/src/plugins.rs) calls `run(name, callJson, host)` and keeps every
// rule: `host` is made of Rust closures that check grants, scope keys and cut log lines.
// This file only translates between the engine's JSON (`kefu_engine::plugin::HookCall` and
// the answers `parse_answer` reads: snake_case names, serde's externally tagged enums) and
// jco's JS values (camelCase record fields, `{tag, val}` variants with kebab-case tags,
// enums as kebab-case strings, flags as objects of booleans, `option` as undefined, a
// `result` export as a returned value or a thrown `ComponentError`).
//
// `run` never rejects: it resolves to `{answer}` (the hook's answer as the engine's JSON
// text) or `{failure: {kind, message}}` with kind `trap`, `timeout` (the metering trap, see
// components/plugin-meter) or `unavailable`. A rejection or a WebAssembly.RuntimeError
// reaching workers-rs' glue would mark the whole Worker's instance as crashed.

const kebab = (s) => s.replaceAll("_", "-");
const snake = (s) => s.replaceAll("-", "_");

/** The engine's externally tagged enum value to a jco variant. */
function toVariant(v) {
  if (typeof v === "string") return { tag: kebab(v) };
  const [tag] = Object.keys(v);
  return { tag: kebab(tag), val: v[tag] };
}

/** A jco variant to the engine's externally tagged enum value. */
function fromVariant(v) {
  return v.val === undefined ? snake(v.tag) : { [snake(v.tag)]: v.val };
}

function context(ctx) {
  return {
    tenant: ctx.tenant,
    conversationId: ctx.conversation_id,
    pluginId: ctx.plugin_id,
    language: ctx.language ?? undefined,
  };
}

function manifest(m) {
  return {
    name: m.name,
    version: m.version,
    description: m.description,
    hooks: {
      on_event: !!m.hooks.onEvent,
      before_model: !!m.hooks.beforeModel,
      after_reply: !!m.hooks.afterReply,
    },
    tools: m.tools.map((t) => ({ name: t.name, description: t.description, parameters: t.parameters })),
  };
}

/** Calls the hook `call` names on the instance's `hooks` export; the engine's JSON back. */
async function callHook(hooks, call) {
  switch (call.hook) {
    case "describe":
      return manifest(await hooks.describe());
    case "on_event": {
      const e = call.event;
      const actions = await hooks.onEvent(context(call.ctx), {
        kind: kebab(e.kind),
        text: e.text ?? undefined,
        transcript: e.transcript.map((m) => ({ author: m.author, text: m.text })),
        tags: e.tags,
      });
      return actions.map(fromVariant);
    }
    case "before_model": {
      const r = call.request;
      const decision = await hooks.beforeModel(context(call.ctx), {
        target: r.target,
        messages: r.messages.map((m) => ({ role: m.role, text: m.text })),
      });
      return fromVariant(decision);
    }
    case "after_reply":
      return fromVariant(await hooks.afterReply(context(call.ctx), call.question, call.reply));
    case "call_tool":
      try {
        return { ok: await hooks.callTool(context(call.ctx), call.name, call.arguments) };
      } catch (e) {
        // jco throws the `err` case as a ComponentError carrying it; anything else is a trap.
        if (e && Object.prototype.hasOwnProperty.call(e, "payload") && typeof e.payload === "string") {
          return { err: e.payload };
        }
        throw e;
      }
    default:
      throw new TypeError(`unknown hook ${call.hook}`);
  }
}

/** Unwraps a host closure's `{ok}` / `{err}` answer; an `err` is thrown as the WIT error
 * variant (a plain object, which jco lowers as the `result`'s error case). */
async function settle(promise, errorVariant) {
  const r = await promise;
  if (r && r.err !== undefined) throw errorVariant(r.err);
  return r.ok;
}

/** The `kefu:extension/host` import, as jco expects it, over Rust's closures. */
function hostImport(host) {
  const storeError = (e) => toVariant(e);
  const httpError = (e) => toVariant(e);
  return {
    log: (level, message) => host.log(level, message),
    setting: (name) => host.setting(name) ?? undefined,
    kvGet: (key) => settle(host.kv("get", key, undefined), storeError).then((v) => v ?? undefined),
    kvSet: (key, value) => settle(host.kv("set", key, value), storeError).then(() => undefined),
    kvDelete: (key) => settle(host.kv("delete", key, undefined), storeError).then(() => undefined),
    fetch: (req) =>
      settle(
        host.fetch(req.method, req.url, JSON.stringify(req.headers), req.body ?? undefined),
        httpError,
      ),
  };
}

/** How a thrown error ends a call: the meter's divide-by-zero is the CPU allowance running
 * out (components/plugin-meter/README.md), any other wasm trap is a trap. */
function failure(e) {
  const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  if (e instanceof WebAssembly.RuntimeError && /divide by zero/i.test(e.message)) {
    return { kind: "timeout", message: `ran out of its CPU allowance (${message})` };
  }
  return { kind: "trap", message };
}

/**
 * Runs one hook call of plugin `name` in a fresh instance (state and CPU allowance start
 * clean). `plugins` maps names to `{instantiate, modules}` (the generated index);
 * `callJson` is a `HookCall`; `host` holds Rust's closures `log`, `setting`, `kv`, `fetch`.
 */
export async function runPlugin(plugins, name, callJson, host) {
  const plugin = plugins[name];
  if (!plugin) return { failure: { kind: "unavailable", message: `no plugin named ${name} is installed` } };
  let instance;
  try {
    const imports = hostImport(host);
    instance = await plugin.instantiate((path) => plugin.modules[path], {
      "kefu:extension/host": imports,
      "kefu:extension/host@0.1.0": imports,
    });
  } catch (e) {
    return { failure: { kind: "unavailable", message: `could not instantiate ${name}: ${e}` } };
  }
  try {
    const hooks = instance.hooks ?? instance["kefu:extension/hooks@0.1.0"];
    const answer = await callHook(hooks, JSON.parse(callJson));
    return { answer: JSON.stringify(answer) };
  } catch (e) {
    return { failure: failure(e) };
  }
}
