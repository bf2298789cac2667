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
  script: `
    import { DurableObject } from "cloudflare:workers";

    const json = (value, status = 200) =>
      new Response(JSON.stringify(value), {
        status,
        headers: { "content-type": "application/json" },
      });

    export class ChatObject extends DurableObject {
      constructor(ctx, env) {
        super(ctx, env);
        this.sql = ctx.storage.sql;
        this.sql.exec(
          "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, " +
            "role TEXT NOT NULL, text TEXT NOT NULL, created_at INTEGER NOT NULL)",
        );
      }

      store(role, text) {
        const created_at = Date.now();
        const { seq } = this.sql
          .exec("INSERT INTO messages (role, text, created_at) VALUES (?, ?, ?) RETURNING seq",
            role, text, created_at)
          .one();
        return { seq, role, parts: [{ type: "text", text }], created_at };
      }

      async chat(id, text) {
        const message = this.store("visitor", text);
        const history = this.sql
          .exec("SELECT role, text FROM messages ORDER BY seq DESC LIMIT 20")
          .toArray()
          .reverse()
          .map((m) => ({ role: m.role === "visitor" ? "user" : "assistant", content: m.text }));
        const resp = await fetch(this.env.PROVIDER_BASE_URL + "/chat/completions", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: this.env.MODEL, messages: history }),
        });
        if (!resp.ok) return json({ error: { code: "provider_error", status: resp.status } }, 502);
        const body = await resp.json();
        const reply = this.store("bot", body.choices[0].message.content);
        return json({ conversation_id: id, message, reply, usage: body.usage ?? null });
      }

      messages(id) {
        const messages = this.sql.exec("SELECT seq, role, text, created_at FROM messages ORDER BY seq").toArray();
        return json({ id, messages });
      }
    }

    export default {
      async fetch(request, env) {
        const url = new URL(request.url);
        if (url.pathname === "/healthz") return json({ status: "ok" });
        if (url.pathname === "/api/v1/chat" && request.method === "POST") {
          let input;
          try {
            input = await request.json();
          } catch {
            return json({ error: { code: "invalid_json" } }, 400);
          }
          if (typeof input.message !== "string" || !input.message.trim()) {
            return json({ error: { code: "missing_field", field: "message" } }, 400);
          }
          const id = input.conversation_id || crypto.randomUUID();
          return env.CHAT.get(env.CHAT.idFromName(id)).chat(id, input.message);
        }
        const m = url.pathname.match(/^\\/api\\/v1\\/conversations\\/([A-Za-z0-9-]{1,64})$/);
        if (m && request.method === "GET") {
          return env.CHAT.get(env.CHAT.idFromName(m[1])).messages(m[1]);
        }
        return json({ error: { code: "not_found" } }, 404);
      },
    };
  `,
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
