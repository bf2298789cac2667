// Where a Worker's memory goes under steady load: runs one of the benchmark's Workers on
// workerd (Miniflare, through its usual host script), drives requests at it in rounds, and
// after each round reads workerd's resident memory (VmRSS), the isolate's JavaScript heap and
// every WebAssembly memory in it (through the V8 inspector), so a growth can be placed: in
// the wasm's linear memory, the JS heap, or workerd outside both.
//
// Usage: node tests/bench/memory-probe.mjs [--target kefu|passthrough|do-chat] [--path gateway|chat]
//          [--requests N] [--rounds R] [--concurrency C] [--turns T] [--gc] [--snapshots]
//          [--no-inspector] [--worker DIR] [--mock ORIGIN]
// --requests: per round. --turns: chat turns per conversation (a new one after that many).
// --gc: collect garbage (HeapProfiler.collectGarbage) before each reading, so the JS heap
//   shows what is kept, not what waits for the collector. --snapshots: a heap snapshot after
//   the first and the last round, and the objects new in the last one that are still alive,
//   by constructor, with a retaining path for the largest groups. --no-inspector: workerd
//   without the inspector, VmRSS only (the soak's conditions). --worker: the Worker build's
//   directory (workers/build by default; the host's KEFU_WORKER_SCRIPT).
// Without --mock, target/release/kefu-mock-provider is started on a free port (and stopped).

import { readFileSync, readdirSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import WebSocket from "ws";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => {
    if (!a.startsWith("--")) return pairs;
    const next = all[i + 1];
    return [...pairs, [a.slice(2), next === undefined || next.startsWith("--") ? "true" : next]];
  }, []),
);
const target = args.target || "kefu";
const path = args.path || "gateway";
const perRound = Number(args.requests || 2000);
const rounds = Number(args.rounds || 5);
const concurrency = Number(args.concurrency || 8);
const turnsPerConversation = Number(args.turns || 50);
const inspect = args["no-inspector"] !== "true";
// --gc: every isolate; --gc user: the Worker's alone; --gc others: all but it; --gc NAME: the
// isolates whose inspector title contains NAME (e.g. core:entry, Miniflare's entry worker).
const gc = args.gc === undefined ? null : args.gc === "true" ? "all" : args.gc;
const snapshots = args.snapshots === "true";
const KEY = "kf-probe.Kefu0Probe0Key0000000001";
const TENANT = "probe";

const children = [];
const stopAll = () => {
  for (const c of children) {
    try {
      process.kill(-c.pid, "SIGTERM");
    } catch {}
  }
};
process.on("exit", stopAll);
process.on("SIGINT", () => process.exit(130));
process.on("SIGTERM", () => process.exit(143));

/** Starts `node script args` in its own process group; resolves with the first line matching `re`. */
async function start(cmd, argv, env, re) {
  const child = spawn(cmd, argv, { env: { ...process.env, ...env, NO_COLOR: "1" }, stdio: ["ignore", "pipe", "inherit"], detached: true });
  children.push(child);
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    const m = line.match(re);
    if (m) {
      lines.on("line", () => {}); // keep draining
      return { child, match: m };
    }
  }
  throw new Error(`${argv[0]} exited before it was ready`);
}

let mockOrigin = args.mock;
if (!mockOrigin) {
  const { match } = await start("target/release/kefu-mock-provider", ["--port", "0"], {}, /^(http:\/\/\S+)/);
  mockOrigin = match[1].replace(/\/v1$/, "");
}

const inspectorPort = 9229 + Math.floor(Math.random() * 500);
const env = inspect ? { KEFU_INSPECTOR_PORT: String(inspectorPort) } : {};
let host;
if (target === "kefu") {
  const dir = mkdtempSync(join(tmpdir(), "kefu-probe-"));
  const tenants = join(dir, "tenants.json");
  writeFileSync(
    tenants,
    JSON.stringify({
      [TENANT]: {
        providers: { mock: { kind: "openai_compatible", base_url: `${mockOrigin}/v1` } },
        routes: { default: { targets: [{ provider: "mock", model: "mock-gpt" }] } },
        api_keys: [{ id: "probe", sha256: createHash("sha256").update(KEY).digest("hex") }],
      },
    }),
  );
  if (args.worker) env.KEFU_WORKER_SCRIPT = `${args.worker}/index.js`;
  // Every request is the same visitor: no per-visitor limit in a probe.
  Object.assign(env, { KEFU_VISITOR_LIMIT: "100000000", KEFU_ADDRESS_LIMIT: "100000000" });
  host = await start("node", ["tests/runtime/workerd-host.mjs", "0", tenants], env, /^ready (\S+)/);
} else if (target === "passthrough") {
  host = await start("node", ["tests/bench/passthrough-host.mjs", "0", mockOrigin], env, /^ready (\S+)/);
} else if (target === "do-chat") {
  host = await start("node", ["tests/bench/do-chat-host.mjs", "0", `${mockOrigin}/v1`, "mock-gpt"], env, /^ready (\S+)/);
} else {
  throw new Error(`--target kefu, passthrough or do-chat, not ${target}`);
}
const origin = host.match[1];
if (target !== "kefu" && path === "chat" && target !== "do-chat") throw new Error("the pass-through has no chat API");

/** VmRSS (KiB) of the workerd processes in the host's process group. */
function workerdRssKib() {
  let total = 0;
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      const pgrp = Number(stat.slice(close + 2).split(" ")[2]);
      if (pgrp !== host.child.pid || !comm.startsWith("workerd")) continue;
      const rss = readFileSync(`/proc/${name}/status`, "utf8").match(/VmRSS:\s+(\d+)/);
      if (rss) total += Number(rss[1]);
    } catch {}
  }
  return total;
}

/** A session with one inspector target: `send(method, params)`, and events to `on.event`. */
async function connect(url) {
  const ws = new WebSocket(url, { maxPayload: 2 ** 31 });
  await new Promise((ok, fail) => ws.once("open", ok).once("error", fail));
  let nextId = 1;
  const pending = new Map();
  const on = { event: () => {} };
  ws.on("message", (data) => {
    const msg = JSON.parse(data);
    if (msg.id && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    } else if (msg.method) on.event(msg);
  });
  process.on("exit", () => ws.close());
  // An isolate that has not run yet answers nothing: give up on it after a while.
  const send = (method, params = {}, ms = 120_000) =>
    new Promise((ok) => {
      const id = nextId++;
      pending.set(id, ok);
      ws.send(JSON.stringify({ id, method, params }));
      setTimeout(() => pending.delete(id) && ok({ timedOut: true }), ms).unref();
    });
  return { send, on };
}

// The inspector: one target per worker (Miniflare's own too: its entry worker, the static
// assets' router, the bindings' simulators). Kefu's Durable Objects run in the same isolate as
// its fetch handler (one script). The others are read for their JS heaps only.
let send = null;
let on = null;
const others = [];
if (inspect) {
  const list = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
  const user = list.find((x) => x.title?.includes("core:user:")) || list[0];
  ({ send, on } = await connect(user.webSocketDebuggerUrl));
  for (const t of list) if (t !== user) others.push({ title: t.title, ...(await connect(t.webSocketDebuggerUrl)) });
}

/** Every WebAssembly.Memory alive in the isolate: its size in bytes, largest first. */
// Evaluating needs the isolate's context, which workerd announces on `Runtime.enable`; the
// Runtime domain is on only for the reading (while on, every console line comes through).
async function wasmMemories() {
  let context = null;
  on.event = (msg) => {
    if (msg.method === "Runtime.executionContextCreated") context ??= msg.params.context.uniqueId;
  };
  await send("Runtime.enable");
  on.event = () => {};
  try {
    return await memoriesIn(context);
  } finally {
    await send("Runtime.disable");
  }
}

async function memoriesIn(uniqueContextId) {
  const proto = await send("Runtime.evaluate", { expression: "WebAssembly.Memory.prototype", uniqueContextId });
  const protoId = proto.result?.result?.objectId;
  if (!protoId) return null;
  const found = await send("Runtime.queryObjects", { prototypeObjectId: protoId });
  const arr = found.result?.objects?.objectId;
  if (!arr) return null;
  const sizes = await send("Runtime.callFunctionOn", {
    objectId: arr,
    functionDeclaration: "function () { return this.map((m) => m.buffer.byteLength).sort((a, b) => b - a); }",
    returnByValue: true,
  });
  await send("Runtime.releaseObjectGroup", { objectGroup: "" });
  return sizes.result?.result?.value ?? null;
}

async function reading() {
  const out = {};
  if (inspect) {
    if (gc === "all" || gc === "user") await send("HeapProfiler.collectGarbage");
    const usage = await send("Runtime.getHeapUsage");
    out.heapUsed = usage.result?.usedSize;
    out.heapTotal = usage.result?.totalSize;
    out.wasm = await wasmMemories();
    out.othersUsed = 0;
    for (const o of others) {
      if (gc === "all" || gc === "others" || (gc !== "user" && gc && o.title.includes(gc))) await o.send("HeapProfiler.collectGarbage", {}, 2000);
      out.othersUsed += (await o.send("Runtime.getHeapUsage", {}, 2000)).result?.usedSize ?? 0;
    }
  }
  out.rss = workerdRssKib() * 1024;
  return out;
}

/** A heap snapshot, parsed (V8's format: flat arrays of nodes and edges). */
async function snapshot() {
  const chunks = [];
  on.event = (msg) => {
    if (msg.method === "HeapProfiler.addHeapSnapshotChunk") chunks.push(msg.params.chunk);
  };
  await send("HeapProfiler.takeHeapSnapshot", { reportProgress: false, captureNumericValue: false });
  on.event = () => {};
  return JSON.parse(chunks.join(""));
}

function nodesOf(snap) {
  const m = snap.snapshot.meta;
  const nf = m.node_fields.length;
  const types = m.node_fields.indexOf("type");
  const nameI = m.node_fields.indexOf("name");
  const idI = m.node_fields.indexOf("id");
  const sizeI = m.node_fields.indexOf("self_size");
  const edgesI = m.node_fields.indexOf("edge_count");
  const typeNames = m.node_types[0];
  const nodes = [];
  for (let i = 0, e = 0; i < snap.nodes.length; i += nf) {
    nodes.push({
      index: i / nf,
      type: typeNames[snap.nodes[i + types]],
      name: snap.strings[snap.nodes[i + nameI]],
      id: snap.nodes[i + idI],
      size: snap.nodes[i + sizeI],
      firstEdge: e,
      edges: snap.nodes[i + edgesI],
    });
    e += snap.nodes[i + edgesI];
  }
  return nodes;
}

/** The objects of `b` that `a` did not have, by kind; a retaining path for the largest kinds. */
function diff(a, b) {
  const before = new Set(nodesOf(a).map((n) => n.id));
  const nodes = nodesOf(b);
  const m = b.snapshot.meta;
  const ef = m.edge_fields.length;
  const edgeType = m.edge_types[0];
  const nf = m.node_fields.length;
  // Who retains each node (the first few non-weak edges pointing at it).
  const retainers = new Map();
  for (const n of nodes) {
    for (let k = 0; k < n.edges; k++) {
      const at = (n.firstEdge + k) * ef;
      const type = edgeType[b.edges[at]];
      if (type === "weak" || type === "shortcut") continue;
      const to = b.edges[at + 2] / nf;
      const nameOrIndex = b.edges[at + 1];
      const label = type === "element" || type === "hidden" ? `[${nameOrIndex}]` : b.strings[nameOrIndex];
      if (!retainers.has(to)) retainers.set(to, []);
      const list = retainers.get(to);
      if (list.length < 4) list.push({ from: n.index, label });
    }
  }
  const groups = new Map();
  for (const n of nodes) {
    if (before.has(n.id)) continue;
    const key = `${n.type}: ${n.name.slice(0, 80)}`;
    const g = groups.get(key) || { count: 0, size: 0, sample: n };
    g.count += 1;
    g.size += n.size;
    groups.set(key, g);
  }
  const rows = [...groups].sort((x, y) => y[1].size - x[1].size).slice(0, 25);
  console.log(`\n| new and still alive, by kind | count | bytes |\n|---|---:|---:|`);
  for (const [k, g] of rows) console.log(`| ${k.replaceAll("|", "\\|")} | ${g.count} | ${g.size} |`);
  console.log("\nretaining paths (the first retainer at each step):");
  for (const [k, g] of rows.slice(0, 8)) {
    const path = [];
    let at = g.sample.index;
    const seen = new Set();
    for (let depth = 0; depth < 12; depth++) {
      const r = (retainers.get(at) || []).find((x) => !seen.has(x.from));
      if (!r) break;
      seen.add(r.from);
      const from = nodes[r.from];
      path.push(`${from.type}:${from.name.slice(0, 40)} .${r.label}`);
      at = r.from;
    }
    console.log(`- ${k}\n    ← ${path.join("\n    ← ")}`);
  }
}

const conversations = new Map();
let sent = 0;
async function one(i) {
  if (path === "chat") {
    const lane = i % concurrency;
    const body = { message: `probe turn ${i}` };
    const c = conversations.get(lane);
    if (c && c.turns < turnsPerConversation) body.conversation_id = c.id;
    const headers = { "content-type": "application/json" };
    if (target === "kefu") headers["x-kefu-tenant"] = TENANT;
    const resp = await fetch(`${origin}/api/v1/chat`, { method: "POST", headers, body: JSON.stringify(body) });
    const json = await resp.json();
    if (!resp.ok) throw new Error(`chat ${resp.status}: ${JSON.stringify(json)}`);
    conversations.set(lane, { id: json.conversation_id, turns: body.conversation_id ? c.turns + 1 : 1 });
    return;
  }
  const headers = { "content-type": "application/json" };
  if (target === "kefu") headers.authorization = `Bearer ${KEY}`;
  const resp = await fetch(`${origin}/v1/chat/completions`, {
    method: "POST",
    headers,
    body: JSON.stringify({ model: "kefu", messages: [{ role: "user", content: "probe question" }] }),
  });
  if (!resp.ok) throw new Error(`gateway ${resp.status}: ${await resp.text()}`);
  await resp.arrayBuffer();
}
async function drive(n) {
  let left = n;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (left > 0) {
        left--;
        await one(sent++);
      }
    }),
  );
}

const mib = (b) => (b / 2 ** 20).toFixed(1);
console.log(`# memory probe: ${target} ${path}, ${rounds} rounds of ${perRound} requests at concurrency ${concurrency}${gc ? `, GC (${gc}) before each reading` : ""}${inspect ? "" : ", no inspector"}`);
await drive(Math.min(300, perRound)); // warm: compiled wasm, cached configuration
const first = await reading();
let snapA = null;
if (snapshots && inspect) snapA = await snapshot();
console.log("\n| after requests | workerd VmRSS (MiB) | JS heap used (MiB) | JS heap total (MiB) | wasm memories (MiB) | other isolates' JS heaps used (MiB) |\n|---:|---:|---:|---:|---|---:|");
const row = (r) =>
  console.log(
    `| ${sent} | ${mib(r.rss)} | ${r.heapUsed === undefined ? "" : mib(r.heapUsed)} | ${r.heapTotal === undefined ? "" : mib(r.heapTotal)} | ${r.wasm ? r.wasm.map(mib).join(", ") : ""} | ${r.othersUsed === undefined ? "" : mib(r.othersUsed)} |`,
  );
row(first);
const warm = sent;
let last = first;
for (let r = 0; r < rounds; r++) {
  await drive(perRound);
  last = await reading();
  row(last);
}
const n = sent - warm;
const per = (a, b) => (((b ?? 0) - (a ?? 0)) / n).toFixed(0);
console.log(
  `\nper request over ${n} requests: VmRSS ${per(first.rss, last.rss)} B` +
    (inspect ? `, JS heap used ${per(first.heapUsed, last.heapUsed)} B, largest wasm memory ${per(first.wasm?.[0], last.wasm?.[0])} B` : ""),
);
if (snapA) diff(snapA, await snapshot());
process.exit(0);
