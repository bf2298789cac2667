// The chat turn's baseline: the least a Worker can do and still be a chat API with state, on
// the same workerd (Miniflare) as Kefu. Kefu's `POST /api/v1/chat` is measured against it.
//
// Per request the Worker routes to one Durable Object per conversation (SQLite-backed), which
// stores the visitor's message in its SQLite, reads the last 20 messages back as the prompt,
// calls the provider (OpenAI chat completions, the mock), stores the reply and answers JSON
// in the shape of Kefu's reply (`conversation_id`, `message`, `reply`). No authentication,
// rules, quotas, breakers, plugins, records or events: what remains of Kefu's time above this
// is Kefu's own.
//
// Routes: `POST /api/v1/chat` {"message", "conversation_id"?}; `GET /api/v1/conversations/{id}`
// (the stored messages, so a load test can count what was kept); `GET /healthz`.
//
// Usage: node tests/bench/do-chat-host.mjs PORT PROVIDER_BASE_URL MODEL
// Prints "ready http://127.0.0.1:PORT" and runs until SIGTERM or SIGINT.

import { Miniflare } from "miniflare";

const [portArg = "0", baseUrl, model = "mock-gpt"] = process.argv.slice(2);
if (!baseUrl) {
  console.error("usage: do-chat-host.mjs PORT PROVIDER_BASE_URL [MODEL]");
  process.exit(2);
}

// For the cold-start benchmark: when the runtime starts, after Node loaded the host's modules.
console.log(`starting ${Date.now()}`);
const mf = new Miniflare({
  host: "127.0.0.1",
  // The V8 inspector on this port (tests/bench/memory-probe.mjs reads the heap through it).
  ...(process.env.KEFU_INSPECTOR_PORT ? { inspectorPort: Number(process.env.KEFU_INSPECTOR_PORT) } : {}),
  port: Number(portArg),
  modules: true,
  compatibilityDate: "2026-04-20",
  bindings: { PROVIDER_BASE_URL: baseUrl, MODEL: model },
  durableObjects: { CHAT: { className: "ChatObject", useSQLite: true } },
  scriptPath: new URL("./do-chat-worker.mjs", import.meta.url).pathname,
});

const url = await mf.ready;
console.log(`ready ${url.origin}`);
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
