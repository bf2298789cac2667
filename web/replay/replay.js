// Kefu replay/debug console: pick a conversation, see each visitor turn's record (the rule
// that matched, business hours, the knowledge chunks with their scores, the exact prompt,
// every provider attempt, plugin calls, state changes), replay the conversation under
// another model or configuration with the old and new replies side by side, and export it.
// Hand-written, no framework, no build step; a client of the API in docs/api.md.
//
// Everything a visitor, an agent, a model or a knowledge source wrote (messages, prompts,
// chunk titles, error messages) reaches the page through `textContent` or an attribute,
// never as HTML: `h()` below is the only way this file builds elements.

"use strict";

(() => {
  const API = location.origin;
  const CRED_KEY = "kefu.replay.credential"; // sessionStorage: gone when the tab closes
  // Signed in to the agent console or the admin pages in this tab: the same credential.
  const SHARED_KEYS = ["kefu.agent.token", "kefu.admin.key"];

  /** Creates an element. Attributes are set with setAttribute (`on…` ones become
   * listeners); children are nodes or strings, and strings become text nodes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c == null || c === false) continue;
      el.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return el;
  }

  const $ = (id) => document.getElementById(id);
  const ui = {};
  for (const id of [
    "signin", "signin-form", "cred-input", "signin-error", "app", "signout", "errors", "open-form", "conv-input",
    "recent", "recent-empty", "empty", "view", "v-title", "v-meta", "in-console", "export", "replay-form", "model-field",
    "config-field", "model-input", "config-input", "turns-input", "replay-error", "replay-run", "replay-result", "timeline",
  ]) {
    ui[id.replace(/-(.)/g, (_, c) => c.toUpperCase())] = $(id);
  }

  const state = { cred: null, id: null, conversation: null, turns: [] };

  // ---- Storage and the API ------------------------------------------------------------

  function store(key, value) {
    try {
      if (value == null) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, value);
    } catch (_) {
      /* no storage: signed in for this page only */
    }
  }
  function stored(key) {
    try {
      return sessionStorage.getItem(key);
    } catch (_) {
      return null;
    }
  }

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      Object.assign(this, { status, code, field });
    }
  }

  async function api(path, { method = "GET", body, raw = false } = {}) {
    const headers = { authorization: `Bearer ${state.cred}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    let resp;
    try {
      resp = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, "network", `Kefu could not be reached (${e.message}).`);
    }
    if (resp.ok && raw) return resp;
    let json = null;
    try {
      json = await resp.json();
    } catch (_) {
      /* not JSON */
    }
    if (!resp.ok) {
      const e = json?.error || {};
      throw new ApiError(resp.status, e.code || "http_" + resp.status, e.message || resp.statusText, e.field);
    }
    return json;
  }

  function showError(e) {
    ui.errors.replaceChildren();
    if (!e) return;
    const p = h("p", {}, e.code ? h("code", {}, e.code) : null, " ", e.message || String(e));
    ui.errors.append(h("div", { class: "error" }, p, h("button", { type: "button", class: "btn ghost small", onclick: () => showError(null) }, "Dismiss")));
  }

  // ---- Signing in ---------------------------------------------------------------------

  function showSignin(message) {
    ui.app.hidden = true;
    ui.signin.hidden = false;
    ui.signinError.textContent = message || "";
    ui.credInput.focus();
  }

  async function signIn(cred, { fromStorage = false } = {}) {
    state.cred = cred.trim();
    if (!/^(kfa\.|kf-)/.test(state.cred)) {
      state.cred = null;
      return showSignin("That is neither an agent token (kfa.…) nor a tenant key (kf-…).");
    }
    try {
      const list = await api("/api/v1/conversations?limit=50");
      store(CRED_KEY, state.cred);
      ui.signin.hidden = true;
      ui.app.hidden = false;
      renderRecent(list.conversations || []);
      const wanted = new URLSearchParams(location.hash.slice(1)).get("id");
      if (wanted) openConversation(wanted);
    } catch (e) {
      state.cred = null;
      if (fromStorage) store(CRED_KEY, null);
      showSignin(e.status === 401 || e.status === 403 ? "Kefu did not accept that credential." : e.message);
    }
  }

  ui.signinForm.addEventListener("submit", (e) => {
    e.preventDefault();
    signIn(ui.credInput.value);
  });
  ui.signout.addEventListener("click", () => {
    store(CRED_KEY, null);
    Object.assign(state, { cred: null, id: null, conversation: null, turns: [] });
    ui.timeline.replaceChildren();
    ui.replayResult.replaceChildren();
    ui.recent.replaceChildren();
    ui.view.hidden = true;
    ui.empty.hidden = false;
    ui.credInput.value = "";
    showError(null);
    showSignin("");
  });

  // ---- Picking a conversation -----------------------------------------------------------

  const STATUS = { bot: "With the bot", waiting_for_agent: "Waiting", with_agent: "With an agent", resolved: "Resolved" };
  const when = (iso) => (iso ? new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) : "");
  const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "");

  function renderRecent(entries) {
    ui.recent.replaceChildren(
      ...entries.map((c) =>
        h("li", {},
          h("button", { type: "button", class: "recent-item", "data-id": c.id, "aria-current": c.id === state.id ? "true" : null, onclick: () => openConversation(c.id) },
            h("span", { class: "recent-top" }, h("span", { class: `pill ${c.status}` }, STATUS[c.status] || c.status), h("span", { class: "muted small" }, when(c.updated_at))),
            h("span", { class: "recent-preview" }, c.last_message?.preview || "(no messages)"),
            h("span", { class: "mono muted" }, c.id.slice(0, 12) + "…"))),
      ),
    );
    ui.recentEmpty.hidden = entries.length > 0;
  }

  ui.openForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const id = ui.convInput.value.trim();
    if (id) openConversation(id);
  });
  window.addEventListener("hashchange", () => {
    const id = new URLSearchParams(location.hash.slice(1)).get("id");
    if (state.cred && id && id !== state.id) openConversation(id);
  });

  async function openConversation(id) {
    showError(null);
    state.id = id;
    history.replaceState(null, "", `#id=${encodeURIComponent(id)}`);
    for (const b of ui.recent.querySelectorAll(".recent-item")) b.setAttribute("aria-current", b.dataset.id === id ? "true" : "false");
    ui.timeline.setAttribute("aria-busy", "true");
    try {
      const enc = encodeURIComponent(id);
      const [conversation, traces] = await Promise.all([api(`/api/v1/conversations/${enc}`), api(`/api/v1/conversations/${enc}/traces`)]);
      if (state.id !== id) return;
      state.conversation = conversation;
      state.turns = traces.turns || [];
      ui.replayResult.replaceChildren();
      ui.replayError.textContent = "";
      renderConversation();
    } catch (e) {
      showError(e.code === "conversation_not_found" ? new ApiError(404, e.code, `No conversation ${id} for this tenant.`) : e);
    } finally {
      ui.timeline.removeAttribute("aria-busy");
    }
  }

  // ---- The timeline -----------------------------------------------------------------------

  const ROLE = { visitor: "Visitor", bot: "Bot", agent: "Agent", system: "System", note: "Internal note" };

  function messageText(m) {
    const parts = (m.parts || []).map((p) => (p.type === "text" ? p.text : `[${p.type}${p.name ? ": " + p.name : ""}]`));
    return parts.join("\n");
  }

  function bubble(m) {
    const who = m.role === "agent" && m.author?.name ? m.author.name : ROLE[m.role] || m.role;
    return h("div", { class: `bubble ${m.role}` },
      h("div", { class: "bubble-head" }, h("span", { class: "bubble-who" }, who), h("span", { class: "muted small" }, `#${m.seq} · ${clock(m.created_at)}`)),
      h("div", { class: "bubble-text" }, messageText(m)),
      sourcesList(m.citations));
  }

  /** The knowledge-base sources a reply cites: `[n]` as the reply shows it, the title
   * (linked only to an absolute http(s) URL), the section and the chunk. */
  function sourcesList(citations) {
    if (!Array.isArray(citations) || !citations.length) return null;
    return h("ul", { class: "sources", "aria-label": "Sources cited" },
      citations.map((c) => {
        const title = String(c.title || c.source_id || "");
        const href = sourceUrl(c.url);
        return h("li", {},
          h("span", { class: "src-n" }, `[${Number(c.number) || ""}]`),
          href ? h("a", { href, target: "_blank", rel: "noopener noreferrer nofollow" }, title) : h("span", { class: "src-t" }, title),
          c.heading ? h("span", { class: "src-h" }, String(c.heading)) : null,
          h("code", { class: "src-id" }, String(c.chunk_id || c.source_id || "")));
      }));
  }
  function sourceUrl(u) {
    try {
      const url = new URL(String(u || ""));
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  function renderConversation() {
    const c = state.conversation;
    ui.empty.hidden = true;
    ui.view.hidden = false;
    ui.vTitle.textContent = c.visitor?.id ? `Conversation with ${c.visitor.id}` : "Conversation";
    ui.vMeta.replaceChildren(
      h("span", { class: `pill ${c.status}` }, STATUS[c.status] || c.status), " ",
      h("span", { class: "mono" }, c.id), ` · started ${when(c.created_at)} · ${c.messages.length} messages`);
    ui.inConsole.href = `/agent/#conversation=${encodeURIComponent(c.id)}`;
    const records = new Map(state.turns.map((t) => [t.seq, t]));
    const items = [];
    let current = null;
    for (const m of c.messages) {
      if (m.role === "visitor") {
        current = { visitor: m, after: [], record: records.get(m.seq) };
        items.push(current);
      } else if (current) {
        current.after.push(m);
      } else {
        items.push({ visitor: null, after: [m], record: null });
      }
    }
    ui.timeline.replaceChildren(...items.map(turnItem));
    if (!items.length) ui.timeline.append(h("li", { class: "muted" }, "No messages yet."));
  }

  const ms = (v) => (v == null ? "—" : `${v} ms`);
  const usd = (micros) => (micros == null ? "—" : `$${(micros / 1e6).toFixed(micros < 10_000 ? 6 : 4)}`);
  // Scores are bm25's (negative: lower is better) or fused ranks: shown as they are, with
  // enough digits to tell them apart.
  const score = (s) => (typeof s === "number" ? (Math.abs(s) >= 0.01 ? s.toFixed(3) : s.toPrecision(3)) : "—");
  const tokens = (u) => (u ? `${u.prompt_tokens} → ${u.completion_tokens}` : "—");

  function outcomeText(o) {
    if (!o) return "";
    if (o.kind === "reply") return o.target ? `${o.responder} · ${o.target}` : o.responder;
    if (o.kind === "error") return `error · ${o.code}`;
    return o.kind;
  }

  function chips(record) {
    if (!record) return [h("span", { class: "chip muted" }, "no record")];
    const out = [];
    if (record.decision) out.push(h("span", { class: `chip decision-${record.decision}` }, record.decision));
    const attempts = (record.attempts || []).filter((a) => a.outcome?.kind !== "skipped_open_breaker");
    if (attempts.length) {
      out.push(h("span", { class: "chip" }, `${attempts.length} attempt${attempts.length === 1 ? "" : "s"}`));
      const moved = attempts.find((a) => a.outcome?.next === "fallback" || a.outcome?.next === "retry");
      if (moved) out.push(h("span", { class: "chip warn" }, moved.outcome.next));
      const total = attempts.reduce((s, a) => Math.max(s, (a.started_ms || 0) + (a.latency_ms || 0)), 0);
      out.push(h("span", { class: "chip" }, ms(total)));
    }
    if (record.knowledge?.length) out.push(h("span", { class: "chip" }, `${record.knowledge.length} chunk${record.knowledge.length === 1 ? "" : "s"}`));
    if (record.outcome) out.push(h("span", { class: `chip outcome-${record.outcome.kind}` }, outcomeText(record.outcome)));
    return out;
  }

  function turnItem(item) {
    const r = item.record;
    const head = h("div", { class: "turn-head" },
      h("span", { class: "turn-seq" }, item.visitor ? `Turn · #${item.visitor.seq}` : "Before the first message"),
      h("span", { class: "turn-chips" }, item.visitor ? chips(r) : []));
    const li = h("li", { class: "turn", "data-seq": item.visitor?.seq ?? "" }, head,
      h("div", { class: "bubbles" }, item.visitor ? bubble(item.visitor) : null, item.after.map(bubble)));
    if (r) li.append(recordDetails(r, `Details of turn #${r.seq}`));
    return li;
  }

  /** A turn record, expandable: decision and hours, the rule, the attempts, the knowledge
   * chunks, state changes, the prompt, plugin calls. */
  function recordDetails(r, label) {
    const sections = [];
    const facts = [["Decision", r.decision || "— (recorded before decisions were)"], ["Outcome", outcomeText(r.outcome) || "—"]];
    if (r.outcome?.kind === "error") facts.push(["Error", r.outcome.message]);
    if (r.hours) facts.push(["Business hours", `${r.hours.open ? "open" : "closed"} · ${r.hours.local_time}`]);
    else facts.push(["Business hours", "none configured"]);
    sections.push(section("Decision", h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))));
    sections.push(section("Rules matched", r.rules?.length
      ? table(["Rule", "Priority", "Matched", "Did"], r.rules.map((x) => [h("code", {}, x.id), String(x.priority), x.matched.join(", "), x.actions.join(", ")]))
      : h("p", { class: "muted" }, "No rule matched.")));
    sections.push(section("Attempts", attemptsTable(r.attempts || [])));
    sections.push(section("Knowledge", r.knowledge?.length
      ? table(["Chunk", "Source", "Score", "In the prompt", "Cited"], r.knowledge.map((k, i) => [h("code", {}, k.chunk_id), k.title || k.source_id, score(k.score), k.in_prompt ? "yes" : "no",
          (r.citations || []).some((c) => c.chunk_id === k.chunk_id && c.number === i + 1) ? `[${i + 1}]` : ""]), "knowledge")
      : h("p", { class: "muted" }, "No knowledge chunks.")));
    sections.push(section("State changes", r.state?.length
      ? table(["Field", "Before", "After"], r.state.map((s) => [s.field, show(s.before), show(s.after)]))
      : h("p", { class: "muted" }, "Nothing changed.")));
    sections.push(section("Prompt", promptView(r.prompt)));
    sections.push(section("Plugins", r.plugins?.length
      ? table(["Plugin", "Hook", "Outcome", "Time"], r.plugins.map((p) => [
          `${p.plugin_id} (${p.plugin})`,
          p.tool ? `${p.hook}: ${p.tool}` : p.hook,
          p.outcome?.kind === "ok" ? (p.outcome.effect || "ok") : `${p.outcome?.failure}: ${p.outcome?.message}`,
          ms(p.duration_ms),
        ]))
      : h("p", { class: "muted" }, "No plugin calls.")));
    return h("details", { class: "turn-details" }, h("summary", {}, label), h("div", { class: "record" }, sections));
  }

  const show = (v) => (v == null ? "—" : Array.isArray(v) ? (v.length ? v.join(", ") : "(none)") : String(v));

  function section(title, body) {
    return h("section", { class: "record-section" }, h("h3", {}, title), body);
  }

  function table(headers, rows, cls) {
    return h("div", { class: "table-wrap" },
      h("table", { class: cls ? `grid ${cls}` : "grid" },
        h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell) => h("td", {}, cell)))))));
  }

  function attemptsTable(attempts) {
    if (!attempts.length) return h("p", { class: "muted" }, "No provider was called.");
    return table(["#", "Target", "Route", "Status", "Latency", "TTFT", "Tokens", "Cost", "Outcome"], attempts.map((a, i) => {
      const o = a.outcome || {};
      const outcome = o.kind === "failure" ? `${o.code} → ${o.next}` : o.kind === "skipped_open_breaker" ? "skipped: breaker open" : o.kind || "";
      const row = [String(i + 1), h("code", {}, a.target), a.route || "", a.status == null ? "—" : String(a.status), ms(a.latency_ms), ms(a.ttft_ms), tokens(a.usage), usd(a.cost_micros), outcome];
      if (o.kind === "failure" && o.message) row[8] = h("span", { title: o.message }, outcome);
      return row;
    }), "attempts");
  }

  /** The exact request body: its messages one by one when it parses, the raw body below. */
  function promptView(p) {
    if (!p) return h("p", { class: "muted" }, "No model was asked.");
    const out = [h("p", { class: "muted small" }, `Sent to `, h("code", {}, p.target), ` · ${p.bytes} bytes`,
      p.truncated ? ` · stored cut at ${p.body.length} bytes` : "")];
    let parsed = null;
    try {
      parsed = JSON.parse(p.body);
    } catch (_) {
      /* cut, or not JSON: shown raw */
    }
    const messages = parsed && (parsed.messages || parsed.contents);
    if (Array.isArray(messages)) {
      const system = typeof parsed.system === "string" ? [{ role: "system", content: parsed.system }] : [];
      out.push(h("ol", { class: "prompt" }, [...system, ...messages].map((m) =>
        h("li", { class: `prompt-msg ${m.role}` }, h("span", { class: "prompt-role" }, m.role || ""), h("pre", {}, contentText(m))))));
    }
    out.push(h("details", { class: "raw" }, h("summary", {}, "Raw request body"), h("pre", {}, parsed ? JSON.stringify(parsed, null, 2) : p.body)));
    return out;
  }

  function contentText(m) {
    const c = m.content ?? m.parts;
    if (typeof c === "string") return c;
    if (Array.isArray(c)) return c.map((x) => (typeof x === "string" ? x : x.text ?? `[${x.type || "part"}]`)).join("\n");
    if (m.tool_calls) return m.tool_calls.map((t) => `${t.function?.name}(${t.function?.arguments})`).join("\n");
    return c == null ? "" : JSON.stringify(c);
  }

  // ---- Replay ---------------------------------------------------------------------------

  for (const radio of ui.replayForm.querySelectorAll('input[name="under"]')) {
    radio.addEventListener("change", () => {
      const config = ui.replayForm.querySelector('input[name="under"]:checked').value === "config";
      ui.modelField.hidden = config;
      ui.configField.hidden = !config;
      (config ? ui.configInput : ui.modelInput).focus();
    });
  }

  ui.replayForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    ui.replayError.textContent = "";
    const under = ui.replayForm.querySelector('input[name="under"]:checked').value;
    const body = { max_turns: Number(ui.turnsInput.value) || 20 };
    if (under === "model") {
      const model = ui.modelInput.value.trim();
      if (!model) {
        ui.replayError.textContent = "Name the model as provider/model.";
        return ui.modelInput.focus();
      }
      body.model = model;
    } else {
      try {
        body.config = JSON.parse(ui.configInput.value);
      } catch (err) {
        ui.replayError.textContent = `The configuration is not valid JSON: ${err.message}`;
        return ui.configInput.focus();
      }
    }
    const id = state.id;
    ui.replayRun.disabled = true;
    ui.replayRun.textContent = "Replaying…";
    ui.replayResult.setAttribute("aria-busy", "true");
    try {
      const result = await api(`/api/v1/conversations/${encodeURIComponent(id)}/replay`, { method: "POST", body });
      if (state.id === id) renderReplay(result, body.model || "another configuration");
    } catch (err) {
      ui.replayError.textContent = `${err.code}: ${err.message}${err.field ? ` (${err.field})` : ""}`;
    } finally {
      ui.replayRun.disabled = false;
      ui.replayRun.textContent = "Replay";
      ui.replayResult.removeAttribute("aria-busy");
    }
  });

  function renderReplay(result, under) {
    const head = h("p", { class: "muted small" },
      `Replayed ${result.turns.length} of ${result.total_turns} turns under `, h("strong", {}, under),
      result.truncated ? " (the rest are past the cap)" : "", ".");
    const stopped = result.stopped ? h("p", { class: "form-error" }, `Stopped at #${result.stopped.seq}: ${result.stopped.error.code} — ${result.stopped.error.message}`) : null;
    const rows = result.turns.map((t) => {
      const n = t.new;
      const changed = (t.old.reply ?? "") !== (n.reply ?? "");
      return h("li", { class: "replay-turn", "data-seq": t.seq },
        h("div", { class: "replay-visitor" }, h("span", { class: "muted small" }, `#${t.seq} · Visitor`), h("div", { class: "bubble-text" }, t.visitor)),
        h("div", { class: "side-by-side" },
          h("div", { class: "side old" }, h("h4", {}, "Recorded"), h("div", { class: "bubble-text" }, t.old.reply ?? "(nothing said)")),
          h("div", { class: `side new${changed ? " changed" : ""}` },
            h("h4", {}, "Replayed ", h("span", { class: "chip" }, n.responder), changed ? h("span", { class: "chip warn" }, "differs") : h("span", { class: "chip" }, "same")),
            h("div", { class: "bubble-text" }, n.reply ?? (n.record?.outcome?.kind === "error" ? `(error: ${n.record.outcome.code})` : "(nothing said)")),
            sourcesList(n.record?.citations))),
        n.record?.attempts?.length ? attemptsTable(n.record.attempts) : null,
        n.record ? recordDetails(n.record, "Details of the replayed turn") : null);
    });
    ui.replayResult.replaceChildren(head, stopped || "", h("ol", { class: "replay-turns" }, rows));
  }

  // ---- Export -----------------------------------------------------------------------------

  ui.export.addEventListener("click", async () => {
    const id = state.id;
    try {
      const resp = await api(`/api/v1/conversations/${encodeURIComponent(id)}/export`, { raw: true });
      const name = /filename="([^"]+)"/.exec(resp.headers.get("content-disposition") || "")?.[1] || `kefu-conversation-${id}.json`;
      const url = URL.createObjectURL(await resp.blob());
      const a = h("a", { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      showError(e);
    }
  });

  // ---- Start ------------------------------------------------------------------------------

  // A token handed over in the fragment (`/replay/#token=kfa.…`) is moved to the tab's
  // storage and taken out of the address bar at once.
  const fragment = new URLSearchParams(location.hash.slice(1));
  const handed = fragment.get("token");
  if (handed) {
    fragment.delete("token");
    history.replaceState(null, "", location.pathname + (fragment.size ? `#${fragment}` : ""));
  }
  const saved = stored(CRED_KEY) || SHARED_KEYS.map(stored).find(Boolean);
  if (handed) signIn(handed);
  else if (saved) signIn(saved, { fromStorage: true });
  else showSignin("");
})();
