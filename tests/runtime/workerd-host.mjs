// Runs Kefu's built Worker directly on workerd through Miniflare, for the runtime tests and
// benchmarks: the same runtime and bindings `wrangler dev` uses (read from wrangler.toml),
// without wrangler's extra Node proxy hop in front of workerd (which adds latency and drops
// POSTs on reused keep-alive connections now and then). The static assets of wrangler.toml's
// `[assets]` (web/: the widget, the demo page, `_headers` with the CSP) come along with the
// other options, so the browser tests load the widget from this host as visitors would.
//
// Usage: node tests/runtime/workerd-host.mjs PORT [TENANTS_JSON_FILE]
// Extra plain-text bindings (e.g. test API keys the tenants' `api_key_secret` names) come from
// the environment variable KEFU_EXTRA_BINDINGS as a JSON object. With KEFU_FAKE_AI_UPSTREAM
// set (an origin), the Worker also gets an `AI` binding: a stand-in for the Workers AI
// binding (which needs Cloudflare's network) with the same `run(model, input)` contract
// (a ReadableStream of SSE for `stream: true`, else the result object; a thrown
// `AiError: <code>: <message>` on failure), answering from the mock's Workers AI endpoint.
// Seeds KV `CONFIG` with `tenant:<id>` documents from the file ({"id": {...config}}), prints
// "ready http://127.0.0.1:PORT" once it serves, and runs until SIGTERM or SIGINT.
// KEFU_WORKER_SCRIPT names another build of the Worker (the runtime tests' copy, which also
// bundles the test plugins). With PORT "auto" (or 0) a free port is chosen. Storage lives in memory and goes with it.

import { readFileSync } from "node:fs";
import { Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";

const [portArg = "0", tenantsFile] = process.argv.slice(2);
const { workerOptions } = unstable_getMiniflareWorkerOptions("wrangler.toml");

const extra = JSON.parse(process.env.KEFU_EXTRA_BINDINGS || "{}");
// KEFU_VISITOR_LIMIT replaces the per-visitor message limit (messages a minute): the suites
// send thousands of messages from one loopback address, the limit's own test very few.
const visitorLimit = Number(process.env.KEFU_VISITOR_LIMIT || 0);
if (visitorLimit > 0 && workerOptions.ratelimits?.VISITOR_LIMITER) {
  workerOptions.ratelimits.VISITOR_LIMITER.simple.limit = visitorLimit;
}
// KEFU_ADDRESS_LIMIT replaces the per-address limit (every site together); it follows
// KEFU_VISITOR_LIMIT when unset.
const addressLimit = Number(process.env.KEFU_ADDRESS_LIMIT) || visitorLimit;
if (addressLimit > 0 && workerOptions.ratelimits?.ADDRESS_LIMITER) {
  workerOptions.ratelimits.ADDRESS_LIMITER.simple.limit = addressLimit;
}
// KEFU_NO_ASSETS=1: the Worker alone, without Miniflare's asset router in front of it (a
// JavaScript Worker that sees every request first). On Cloudflare that router is Cloudflare's
// own and costs the Worker nothing; `make bench` measures Kefu both ways.
if (process.env.KEFU_NO_ASSETS === "1") delete workerOptions.assets;
const fakeAi = process.env.KEFU_FAKE_AI_UPSTREAM;
const kefu = {
  ...workerOptions,
  name: "kefu",
  bindings: { ...(workerOptions.bindings || {}), ...extra },
  modules: true,
  scriptPath: process.env.KEFU_WORKER_SCRIPT || "workers/build/index.js",
  modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
  ...(fakeAi ? { wrappedBindings: { AI: { scriptName: "fake-ai", bindings: { UPSTREAM: fakeAi } } } } : {}),
};
const fakeAiWorker = {
  name: "fake-ai",
  modules: true,
  script: `
    class Ai {
      constructor(upstream) { this.upstream = upstream; }
      async run(model, input) {
        const resp = await fetch(this.upstream + "/client/v4/accounts/binding/ai/run/" + model, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: "Bearer binding" },
          body: JSON.stringify(input),
        });
        if (input.stream && resp.ok) return resp.body;
        const body = await resp.json();
        if (!body.success) {
          const e = (body.errors || [])[0] || {};
          throw new Error("AiError: " + e.code + ": " + e.message);
        }
        return body.result;
      }
    }
    export default function (env) { return new Ai(env.UPSTREAM); }
  `,
};
// KEFU_RUNTIME_GC_MS: every that many ms, a full garbage collection in Miniflare's own workers
// (its entry worker, the static assets' router, the bindings' simulators: every isolate but
// Kefu's), through the V8 inspector. Every request passes through some of them, and what their
// garbage holds (the runtime's request and response objects) is not collected otherwise until
// workerd's resident memory has grown by hundreds of MiB (docs/benchmarks.md, "the soak's
// memory"); the soak sets it so that workerd's memory shows Kefu's. Kefu's own isolate is left
// to V8, so a leak of Kefu's still shows.
const runtimeGcMs = Number(process.env.KEFU_RUNTIME_GC_MS || 0);

// For the cold-start benchmark: when the runtime starts, after Node loaded the host's modules.
console.log(`starting ${Date.now()}`);
const mf = new Miniflare({
  host: "127.0.0.1",
  // The V8 inspector on this port (tests/bench/memory-probe.mjs reads the heap through it),
  // or on any free one for the runtime's garbage collection below.
  ...(process.env.KEFU_INSPECTOR_PORT || runtimeGcMs > 0 ? { inspectorPort: Number(process.env.KEFU_INSPECTOR_PORT || 0) } : {}),
  port: portArg === "auto" ? 0 : Number(portArg),
  workers: fakeAi ? [kefu, fakeAiWorker] : [kefu],
});

const url = await mf.ready;
if (tenantsFile) {
  const kv = await mf.getKVNamespace("CONFIG");
  const tenants = JSON.parse(readFileSync(tenantsFile, "utf8"));
  for (const [id, config] of Object.entries(tenants)) {
    await kv.put(`tenant:${id}`, JSON.stringify(config));
  }
}
if (runtimeGcMs > 0) await collectRuntimeGarbage(new URL(await mf.getInspectorURL()).port, runtimeGcMs);
console.log(`ready ${url.origin}`);

/** Every `ms`, `HeapProfiler.collectGarbage` in each of Miniflare's isolates (not Kefu's). */
async function collectRuntimeGarbage(port, ms) {
  const { default: WebSocket } = await import("ws");
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const sessions = [];
  for (const t of targets.filter((t) => !t.title?.includes("core:user:"))) {
    const ws = new WebSocket(t.webSocketDebuggerUrl);
    await new Promise((ok, fail) => ws.once("open", ok).once("error", fail));
    sessions.push(ws);
  }
  let id = 0;
  setInterval(() => {
    for (const ws of sessions) ws.send(JSON.stringify({ id: ++id, method: "HeapProfiler.collectGarbage" }));
  }, ms);
}

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
