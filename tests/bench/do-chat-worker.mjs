// The chat turn's baseline Worker, a minimal Durable-Object chat: what it does and why is
// said in tests/bench/do-chat-host.mjs, which runs it (tests/bench/cpu-per-request.mjs too).
// Bindings: PROVIDER_BASE_URL, MODEL, and CHAT (class ChatObject, SQLite-backed).

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
    const m = url.pathname.match(/^\/api\/v1\/conversations\/([A-Za-z0-9-]{1,64})$/);
    if (m && request.method === "GET") {
      return env.CHAT.get(env.CHAT.idFromName(m[1])).messages(m[1]);
    }
    return json({ error: { code: "not_found" } }, 404);
  },
};
