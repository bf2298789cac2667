// Where a request's CPU goes inside workerd: runs Kefu's Worker on workerd (Miniflare, the
// bindings of wrangler.toml) with the V8 inspector on, drives a fixed number of requests at
// it, and samples the isolate with the inspector's CPU profiler meanwhile. Prints the time by
// kind (Kefu's wasm, the JavaScript glue, the runtime's own work, idle) and the functions
// that cost the most themselves.
//
// Usage: node tests/bench/cpu-profile.mjs [--worker DIR] [--mock ORIGIN] [--path gateway|chat]
//                                         [--requests N] [--concurrency C] [--top N] [--out FILE]
// `make profile` builds what it needs and runs it for both paths.
// --worker: a build of the Worker whose wasm keeps its name section (functions are named
//   in the profile), target/profile-worker by default. --mock: the mock provider's origin;
//   without it, target/release/kefu-mock-provider is started on a free port (and stopped).
//   --out: also write the raw profile (open it in Chrome's DevTools, Performance tab).

import { writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";
import WebSocket from "ws";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith("--") ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const workerDir = args.worker || "target/profile-worker";
let mock = null;
let mockOrigin = args.mock;
if (!mockOrigin) {
  mock = spawn("target/release/kefu-mock-provider", ["--port", "0"], { stdio: ["ignore", "pipe", "ignore"] });
  const [first] = await createInterface({ input: mock.stdout })[Symbol.asyncIterator]().next().then((r) => [r.value]);
  mockOrigin = first.trim().replace(/\/v1$/, "");
}
process.on("exit", () => mock?.kill());
const path = args.path || "gateway";
const requests = Number(args.requests || 2000);
const concurrency = Number(args.concurrency || 8);
const top = Number(args.top || 25);
const KEY = "kf-prof.Kefu0Profile0Key000000001";

const { workerOptions } = unstable_getMiniflareWorkerOptions("wrangler.toml");
const inspectorPort = 9229 + Math.floor(Math.random() * 500);
const mf = new Miniflare({
  host: "127.0.0.1",
  port: 0,
  inspectorPort,
  workers: [
    {
      ...workerOptions,
      name: "kefu",
      modules: true,
      scriptPath: `${workerDir}/index.js`,
      modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
      // Every request is the same visitor: no per-visitor limit in a profile.
      ratelimits: {},
    },
  ],
});
const url = await mf.ready;
const kv = await mf.getKVNamespace("CONFIG");
const tenant = {
  providers: { mock: { kind: "openai_compatible", base_url: `${mockOrigin}/v1` } },
  routes: { default: { targets: [{ provider: "mock", model: "mock-gpt" }] } },
  api_keys: [{ id: "prof", sha256: createHash("sha256").update(KEY).digest("hex") }],
};
await kv.put("tenant:prof", JSON.stringify(tenant));

const conversations = new Map();
async function one(i) {
  if (path === "chat") {
    const lane = i % concurrency;
    const body = { message: `profile turn ${i}` };
    if (conversations.has(lane)) body.conversation_id = conversations.get(lane);
    const resp = await fetch(`${url.origin}/api/v1/chat`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-kefu-tenant": "prof" },
      body: JSON.stringify(body),
    });
    const json = await resp.json();
    if (!resp.ok) throw new Error(`chat ${resp.status}: ${JSON.stringify(json)}`);
    conversations.set(lane, json.conversation_id);
    return;
  }
  const resp = await fetch(`${url.origin}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ model: "kefu", messages: [{ role: "user", content: "profile question" }] }),
  });
  if (!resp.ok) throw new Error(`gateway ${resp.status}: ${await resp.text()}`);
  await resp.arrayBuffer();
}
async function drive(n) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) await one(next++);
    }),
  );
}

// The inspector lists one target per worker; the chat turn runs in the conversation's
// Durable Object, which is the same isolate (one script).
const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
const target = targets.find((t) => t.title?.includes("kefu")) || targets[0];
const ws = new WebSocket(target.webSocketDebuggerUrl);
await new Promise((ok, fail) => ws.once("open", ok).once("error", fail));
let nextId = 1;
const pending = new Map();
ws.on("message", (data) => {
  const msg = JSON.parse(data);
  if (msg.id && pending.has(msg.id)) {
    pending.get(msg.id)(msg);
    pending.delete(msg.id);
  }
});
const send = (method, params = {}) =>
  new Promise((ok) => {
    const id = nextId++;
    pending.set(id, ok);
    ws.send(JSON.stringify({ id, method, params }));
  });

await drive(Math.min(300, requests)); // warm: compiled wasm, cached configuration
await send("Profiler.enable");
await send("Profiler.setSamplingInterval", { interval: 100 });
const started = performance.now();
await send("Profiler.start");
await drive(requests);
const { result } = await send("Profiler.stop");
const wall = performance.now() - started;
ws.close();
await mf.dispose();

const profile = result.profile;
if (args.out) writeFileSync(args.out, JSON.stringify(profile));
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map();
for (let i = 0; i < profile.samples.length; i++) {
  const us = profile.timeDeltas[i] || 0;
  self.set(profile.samples[i], (self.get(profile.samples[i]) || 0) + us);
}
const kind = (f) => {
  if (f.functionName === "(idle)") return "idle";
  if (f.functionName === "(garbage collector)") return "garbage collector";
  if (f.functionName === "(program)" || f.functionName === "(root)") return "runtime (workerd, V8)";
  if (f.url.startsWith("wasm://")) return "Kefu wasm";
  if (f.url.includes("index.js")) return "JS glue (index.js)";
  if (f.url === "") return "runtime (workerd, V8)";
  return `other JS (${f.url.split("/").pop()})`;
};
const kinds = new Map();
const funcs = new Map();
let total = 0;
for (const [id, us] of self) {
  const f = byId.get(id).callFrame;
  total += us;
  const k = kind(f);
  kinds.set(k, (kinds.get(k) || 0) + us);
  const name = `${f.functionName || "(anonymous)"} [${k}]`;
  funcs.set(name, (funcs.get(name) || 0) + us);
}
const busy = total - (kinds.get("idle") || 0);
console.log(`# CPU profile: ${requests} ${path} requests at concurrency ${concurrency}, ${wall.toFixed(0)} ms wall`);
console.log(`sampled ${(total / 1000).toFixed(0)} ms, busy ${(busy / 1000).toFixed(0)} ms: ${(busy / requests).toFixed(0)} µs of isolate CPU per request\n`);
console.log("| kind | ms | share of busy | µs per request |\n|---|---:|---:|---:|");
for (const [k, us] of [...kinds].sort((a, b) => b[1] - a[1])) {
  if (k === "idle") continue;
  console.log(`| ${k} | ${(us / 1000).toFixed(1)} | ${((100 * us) / busy).toFixed(1)} % | ${(us / requests).toFixed(1)} |`);
}
console.log(`\n| function (self time) | ms | share of busy |\n|---|---:|---:|`);
for (const [name, us] of [...funcs].filter(([n]) => !n.startsWith("(idle)")).sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`| ${name.replaceAll("|", "\\|")} | ${(us / 1000).toFixed(1)} | ${((100 * us) / busy).toFixed(1)} % |`);
}
process.exit(0);
