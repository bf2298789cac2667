// CPU per request: how much CPU workerd spends on one request, read from /proc for each
// target's own workerd process while a fixed load runs against it. On a shared machine this
// holds steady where throughput does not (another process taking a core halves a target's
// requests per second, not the CPU each request costs), and it counts everything the request
// costs in the runtime, which the V8 profiler (`make profile`) does not: that profiler
// charges time to the JavaScript call that was running (`queueMicrotask`, `console.log`) and
// leaves out the runtime's own threads.
//
// Usage: node tests/bench/cpu-per-request.mjs [--rounds N] [--seconds S] [--concurrency C]
//                                             [--path gateway|chat] [--warm S] TARGET...
// TARGET is one of
//   js          the JavaScript pass-through (the floor of `make bench`)
//   rust        the Rust pass-through (tests/bench/rust-passthrough, built by `make bench`)
//   rust-steps  the Rust pass-through taking Kefu's platform steps (its STEPS=kefu)
//   do-chat     the minimal Durable-Object chat (tests/bench/do-chat-worker.mjs), for --path chat
//   DIR         a build of Kefu's Worker (index.js, index_bg.wasm and plugins/, e.g.
//               workers/build), alone, as Cloudflare runs it
//   DIR+router  the same behind Miniflare's asset router for web/, as `wrangler dev` runs it
// Each target gets its own Miniflare (its own workerd process). Rounds alternate the order.
// `--path chat` drives `POST /api/v1/chat` on Kefu targets (one conversation per lane).
// Needs target/release/kefu-mock-provider (`cargo build --release -p kefu-runtime-tests`).

import { createHash } from "node:crypto";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";

const flags = {};
const names = [];
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a.startsWith("--")) flags[a.slice(2)] = process.argv[++i];
  else names.push(a);
}
const rounds = Number(flags.rounds || 4);
const seconds = Number(flags.seconds || 5);
const concurrency = Number(flags.concurrency || 64);
const path = flags.path || "gateway";
const warm = Number(flags.warm || 20);
if (names.length === 0) {
  console.error("usage: cpu-per-request.mjs [--rounds N] [--seconds S] [--concurrency C] [--path gateway|chat] [--warm S] TARGET...");
  process.exit(2);
}

const mock = spawn("target/release/kefu-mock-provider", ["--port", "0"], { stdio: ["ignore", "pipe", "ignore"] });
const first = (await createInterface({ input: mock.stdout })[Symbol.asyncIterator]().next()).value;
const mockOrigin = first.trim().replace(/\/v1$/, "");
process.on("exit", () => mock.kill());

const KEY = "kf-cpu.Kefu0Cpu0Measure0Key000001";
const TICK_MS = 10; // /proc/PID/stat counts clock ticks of 10 ms (USER_HZ 100)
const workerds = () =>
  new Set(
    readdirSync("/proc")
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          return readFileSync(`/proc/${d}/comm`, "utf8").trim() === "workerd";
        } catch {
          return false;
        }
      }),
  );
// utime + stime of a process, in ms.
const cpuMs = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
};
let known = workerds();
function newWorkerd() {
  const now = workerds();
  const fresh = [...now].filter((p) => !known.has(p));
  known = now;
  if (fresh.length !== 1) throw new Error(`expected one new workerd process, found ${fresh.length}`);
  return fresh[0];
}

// What the Workers print (Kefu logs a line a request) is read and dropped: unread, it would
// fill the pipe and stall workerd.
const quiet = { handleRuntimeStdio: (out, err) => (out.resume(), err.resume()) };
const base = { ...quiet, host: "127.0.0.1", port: 0, modules: true, compatibilityDate: "2026-04-20" };
const wasmRules = [{ type: "CompiledWasm", include: ["**/*.wasm"] }];
async function start(name) {
  if (name === "js") {
    return new Miniflare({
      ...base,
      bindings: { UPSTREAM: mockOrigin },
      script: `export default { async fetch(request, env) {
        const url = new URL(request.url);
        return fetch(env.UPSTREAM + url.pathname + url.search,
          { method: request.method, headers: request.headers, body: request.body }); } };`,
    });
  }
  if (name === "do-chat") {
    return new Miniflare({
      ...base,
      bindings: { PROVIDER_BASE_URL: `${mockOrigin}/v1`, MODEL: "mock-gpt" },
      durableObjects: { CHAT: { className: "ChatObject", useSQLite: true } },
      scriptPath: "tests/bench/do-chat-worker.mjs",
    });
  }
  if (name === "rust" || name === "rust-steps") {
    return new Miniflare({
      ...base,
      bindings: { UPSTREAM: mockOrigin, ...(name === "rust-steps" ? { STEPS: "kefu" } : {}) },
      scriptPath: "target/bench-rust-passthrough/index.js",
      modulesRules: wasmRules,
    });
  }
  const router = name.endsWith("+router");
  const dir = router ? name.slice(0, -"+router".length) : name;
  const { workerOptions } = unstable_getMiniflareWorkerOptions("wrangler.toml");
  if (!router) delete workerOptions.assets;
  const mf = new Miniflare({
    ...quiet,
    host: "127.0.0.1",
    port: 0,
    workers: [
      {
        ...workerOptions,
        name: "kefu",
        modules: true,
        scriptPath: `${dir}/index.js`,
        modulesRules: wasmRules,
        ratelimits: {}, // one client sends everything: no per-visitor limit
      },
    ],
  });
  await mf.ready;
  const kv = await mf.getKVNamespace("CONFIG");
  await kv.put(
    "tenant:cpu",
    JSON.stringify({
      providers: { mock: { kind: "openai_compatible", base_url: `${mockOrigin}/v1` } },
      routes: { default: { targets: [{ provider: "mock", model: "mock-gpt" }] } },
      api_keys: [{ id: "cpu", sha256: createHash("sha256").update(KEY).digest("hex") }],
    }),
  );
  return mf;
}

const targets = [];
for (const name of names) {
  if (path === "chat" && ["js", "rust", "rust-steps"].includes(name)) {
    throw new Error(`${name} has no chat API`);
  }
  if (path !== "chat" && name === "do-chat") throw new Error("do-chat has only the chat API");
  const mf = await start(name);
  const origin = (await mf.ready).origin;
  targets.push({ name, origin, mf, pid: newWorkerd(), cpu: 0, requests: 0, rps: [] });
}

// A closed loop: `concurrency` lanes, each sending its next request when its last is answered.
async function load(target, ms) {
  const until = performance.now() + ms;
  let done = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, lane) => {
      let conversation = null;
      while (performance.now() < until) {
        let resp;
        if (path === "chat") {
          const body = { message: `cpu turn ${done}` };
          if (conversation) body.conversation_id = conversation;
          resp = await fetch(`${target.origin}/api/v1/chat`, {
            method: "POST",
            headers: { "content-type": "application/json", "x-kefu-tenant": "cpu" },
            body: JSON.stringify(body),
          });
          const json = await resp.json();
          if (resp.ok) conversation = json.conversation_id;
        } else {
          resp = await fetch(`${target.origin}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
            body: JSON.stringify({ model: "kefu", messages: [{ role: "user", content: `question ${lane}` }] }),
          });
          await resp.arrayBuffer();
        }
        if (!resp.ok) throw new Error(`${target.name}: ${resp.status}`);
        done++;
      }
    }),
  );
  return done;
}

// Warm: cached configuration, and compiled code. V8 runs wasm in its baseline compiler
// (Liftoff) first and moves each function to the optimising one (TurboFan) only once the
// function has run enough: a Worker with much wasm, like Kefu's, runs partly in Liftoff for
// tens of seconds of load (under perf, after 3 s of load Kefu's gateway spent 13 µs a request
// in Liftoff's frame setup alone; after 40 s, a seventh of that).
for (const t of targets) await load(t, warm * 1000);
for (let r = 0; r < rounds; r++) {
  const order = r % 2 ? [...targets].reverse() : targets;
  for (const t of order) {
    const before = cpuMs(t.pid);
    const started = performance.now();
    const n = await load(t, seconds * 1000);
    t.cpu += cpuMs(t.pid) - before;
    t.requests += n;
    t.rps.push((n * 1000) / (performance.now() - started));
  }
}

// The floor each ratio is taken against: the JS pass-through, or for chat turns the DO chat.
const floor = targets.find((t) => t.name === (path === "chat" ? "do-chat" : "js"));
const perRequest = (t) => (t.cpu * 1000) / t.requests;
console.log(`# CPU per request (${path}, ${concurrency} connections, ${rounds} rounds of ${seconds} s)\n`);
console.log(`| target | requests | workerd CPU per request | ${floor ? `${floor.name}'s CPU ÷ this | ` : ""}req/s (mean) |`);
console.log(`|---|---:|---:|${floor ? "---:|" : ""}---:|`);
for (const t of targets) {
  const rps = t.rps.reduce((a, b) => a + b, 0) / t.rps.length;
  const ratio = floor ? ` ${(perRequest(floor) / perRequest(t)).toFixed(2)}× |` : "";
  console.log(`| ${t.name} | ${t.requests} | ${perRequest(t).toFixed(0)} µs |${ratio} ${rps.toFixed(0)} |`);
}
for (const t of targets) await t.mf.dispose();
process.exit(0);
