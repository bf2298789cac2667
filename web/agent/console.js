// Kefu agent console: sign in with an agent token, work the inbox, follow a conversation
// live and act on it (claim, reply with files and canned responses, internal notes,
// transfer, resolve). Hand-written, no framework, no build step; served as a static asset
// beside the API it calls (docs/api.md).
//
// Everything a visitor, an agent or a model wrote (messages, names, file names, previews,
// tags, error messages) reaches the page through `textContent` or an attribute, never as
// HTML: `h()` below is the only way this file builds elements.

"use strict";

(() => {
  const API = location.origin;
  const TOKEN_KEY = "kefu.agent.token"; // sessionStorage: gone when the tab closes
  const PREFS_KEY = "kefu.agent.prefs"; // localStorage: sound on/off
  const CANNED_KEY = "kefu.agent.canned"; // localStorage: the canned responses
  const POLL_MS = 4000; // the inbox has no push channel: it is polled
  const TYPING_EVERY_MS = 2500; // announce our typing at most this often
  const TYPING_MAX_MS = 6000; // the server's indicator lifetime (docs/api.md: 6 s)
  const MAX_FILES = 4;

  const STATUS_LABEL = {
    bot: "With the bot",
    waiting_for_agent: "Waiting",
    with_agent: "With an agent",
    resolved: "Resolved",
  };
  const DEFAULT_CANNED = [
    { shortcut: "hello", text: "Hi, thanks for waiting! I'm {agent} and I'll take it from here." },
    { shortcut: "moment", text: "Let me check that for you. One moment, please." },
    { shortcut: "order", text: "Could you share your order number so I can look it up?" },
    { shortcut: "else", text: "Is there anything else I can help you with today?" },
    { shortcut: "bye", text: "Thanks for chatting with us. Have a great day!" },
  ];

  // ---- Building the page, as text only --------------------------------------------------

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

  const ICONS = {
    back: "M15 18l-6-6 6-6",
    details: "M12 8v.01M11 12h1v4h1M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18z",
    file: "M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8zM14 3v5h5",
    lock: "M7 11V7a5 5 0 0 1 10 0v4M5 11h14v10H5z",
    clip: "M21 11l-8.5 8.5a5 5 0 0 1-7-7L14 4a3.5 3.5 0 0 1 5 5l-8.5 8.5a2 2 0 0 1-3-3L15 7",
  };
  function icon(name) {
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("fill", "none");
    svg.setAttribute("stroke", "currentColor");
    svg.setAttribute("stroke-width", "2");
    svg.setAttribute("stroke-linecap", "round");
    svg.setAttribute("stroke-linejoin", "round");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(NS, "path");
    path.setAttribute("d", ICONS[name]);
    svg.append(path);
    return svg;
  }

  const $ = (id) => document.getElementById(id);
  const ui = {};
  for (const id of [
    "signin", "signin-form", "token-input", "signin-error", "signin-button", "app", "cue", "sound-toggle", "canned-edit",
    "who-avatar", "who-name", "who-expiry", "signout", "errors", "queue-filter", "assignee-filter", "assignee-wrap", "list",
    "list-empty", "list-foot", "conversation", "empty-state", "conv", "back", "conv-name", "conv-status", "conv-meta",
    "live-state", "claim", "transfer", "resolve", "replay-link", "details-toggle", "transcript", "typing", "typing-text", "composer",
    "mode-reply", "mode-note", "composer-hint", "tray", "canned-menu", "input", "input-label", "attach", "file",
    "canned-open", "send", "details", "d-avatar", "d-visitor", "d-verified", "d-status", "d-queue", "d-assignee", "d-tags",
    "d-csat", "d-created", "d-updated", "d-count", "d-id", "d-summary", "d-summary-note", "d-summary-lines", "transfer-dialog", "transfer-form", "to-agent", "to-agent-name",
    "to-queue", "queue-names", "to-agent-fields", "to-queue-fields", "transfer-error", "transfer-cancel", "canned-dialog",
    "canned-form", "canned-rows", "canned-add", "canned-cancel",
  ]) {
    ui[id.replace(/-(.)/g, (_, c) => c.toUpperCase())] = $(id);
  }
  ui.tabs = [...document.querySelectorAll(".tab")];
  ui.back.append(icon("back"));
  ui.detailsToggle.append(icon("details"));
  ui.attach.prepend(icon("clip"));

  // ---- State --------------------------------------------------------------------------

  const state = {
    token: null,
    claims: null, // {t: tenant, a: agent id, n: name, e: expiry ms}
    filter: "waiting",
    entries: [], // the list on screen
    known: { queues: new Set(), assignees: new Set() },
    waitingIds: null, // ids waiting at the last poll (null before the first)
    fresh: new Set(), // waiting conversations that arrived while we watched, not opened yet
    seen: {}, // conversation id → the last seq this agent has seen
    pollTimer: 0,
    expiryTimer: 0,
    selected: null, // the open conversation's id
    conv: null, // its state (status, assignee, queue, tags, csat, visitor, …)
    messages: new Map(), // seq → message
    lastSeq: 0,
    mine: new Set(), // seqs this agent sent in this session ("You")
    live: null,
    liveKind: "ws",
    wsFailures: 0,
    backoff: 0,
    reconnectTimer: 0,
    visitorTypingTimer: 0,
    lastTypingSent: 0,
    note: false,
    files: [], // {key, file, name, status: "uploading"|"ready"|"error", id?, error?}
    sending: false,
    canned: loadCanned(),
    cannedMatches: [],
    cannedIndex: 0,
    cannedSlash: false,
    prefs: loadPrefs(),
    audio: null,
  };

  function loadPrefs() {
    try {
      return { sound: false, ...JSON.parse(localStorage.getItem(PREFS_KEY) || "{}") };
    } catch (_) {
      return { sound: false };
    }
  }
  function savePrefs() {
    try {
      localStorage.setItem(PREFS_KEY, JSON.stringify(state.prefs));
    } catch (_) {
      /* private mode: kept for this page only */
    }
  }
  function loadCanned() {
    try {
      const list = JSON.parse(localStorage.getItem(CANNED_KEY) || "null");
      if (Array.isArray(list)) return list.filter((c) => c && typeof c.text === "string").map((c) => ({ shortcut: String(c.shortcut || ""), text: c.text }));
    } catch (_) {
      /* fall through */
    }
    return DEFAULT_CANNED.map((c) => ({ ...c }));
  }
  function seenKey() {
    return `kefu.agent.seen.${state.claims.t}.${state.claims.a}`;
  }
  function loadSeen() {
    try {
      state.seen = JSON.parse(localStorage.getItem(seenKey()) || "{}") || {};
    } catch (_) {
      state.seen = {};
    }
  }
  function markSeen(id, seq) {
    if (!id || !(seq > (state.seen[id] || 0))) return;
    state.seen[id] = seq;
    try {
      localStorage.setItem(seenKey(), JSON.stringify(state.seen));
    } catch (_) {
      /* kept for this page only */
    }
  }

  // ---- Small helpers --------------------------------------------------------------------

  const me = () => state.claims?.a;
  const isMine = (c) => c && c.status === "with_agent" && c.assignee === me();
  const shortId = (id) => String(id || "").replace(/[^A-Za-z0-9]/g, "").slice(0, 6).toLowerCase();
  function visitorName(c) {
    if (c?.visitor?.id) return String(c.visitor.id);
    return `Visitor #${shortId(c?.id)}`;
  }
  function hue(text) {
    let n = 0;
    for (const ch of String(text)) n = (n * 31 + ch.codePointAt(0)) >>> 0;
    return String(n % 8);
  }
  function initials(text) {
    if (/^Visitor #/.test(text)) return "V";
    const words = String(text).replace(/#/g, "").trim().split(/[\s._@-]+/).filter(Boolean);
    const letters = words.length > 1 ? words[0][0] + words[1][0] : (words[0] || "?").slice(0, 2);
    return [...letters].slice(0, 2).join("");
  }
  function avatar(text, size) {
    return h("span", { class: `avatar ${size || ""}`, "data-hue": hue(text), "aria-hidden": "true" }, initials(text));
  }
  const clock = (d) => d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  function when(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const mins = Math.round((Date.now() - d.getTime()) / 60000);
    if (mins < 1) return "now";
    if (mins < 60) return `${mins} min`;
    if (d.toDateString() === new Date().toDateString()) return clock(d);
    return d.toLocaleDateString([], { month: "short", day: "numeric" });
  }
  const fullDate = (iso) => {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "—";
    const year = d.getFullYear() === new Date().getFullYear() ? undefined : "numeric";
    return d.toLocaleString([], { year, month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  };
  const textOf = (m) => (m.parts || []).filter((p) => p.type === "text").map((p) => p.text).join("\n");

  // ---- Errors, as text ----------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      Object.assign(this, { status, code });
    }
  }

  /** Shows an error from the API (or the network) in the bar under the top bar. */
  function showError(what, err) {
    const code = err instanceof ApiError ? err.code : null;
    const message = err instanceof Error ? err.message : String(err);
    const box = h(
      "div",
      { class: "error" },
      h("p", {}, `${what}: `, message, code ? " " : "", code ? h("code", {}, code) : null),
      h("button", { type: "button", "aria-label": "Dismiss", onclick: () => box.remove() }, "×"),
    );
    // One line per kind of failure: a repeated one replaces the last.
    for (const old of ui.errors.querySelectorAll(".error")) if (old.dataset.what === what) old.remove();
    box.dataset.what = what;
    ui.errors.append(box);
    setTimeout(() => box.remove(), 12000);
  }
  const clearError = (what) => {
    for (const old of ui.errors.querySelectorAll(".error")) if (old.dataset.what === what) old.remove();
  };

  /** Calls the API as the signed-in agent. Answers the JSON body, or throws an ApiError
   * with the API's code and message. A refused token signs the agent out. */
  async function api(path, { method = "GET", json, body, headers = {}, raw = false, token = state.token } = {}) {
    const init = { method, headers: { authorization: `Bearer ${token}`, ...headers } };
    if (json !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (body !== undefined) init.body = body;
    let resp;
    try {
      resp = await fetch(API + path, init);
    } catch (_) {
      throw new ApiError(0, "network", "Kefu could not be reached; check the connection");
    }
    if (resp.ok && raw) return resp;
    let data = null;
    try {
      data = await resp.json();
    } catch (_) {
      /* not JSON */
    }
    if (!resp.ok) {
      const e = data?.error || {};
      const err = new ApiError(resp.status, e.code || `http_${resp.status}`, e.message || resp.statusText || "request failed");
      if (resp.status === 401 && token === state.token && state.token) signOut(`Signed out: ${err.message}.`);
      throw err;
    }
    return data;
  }

  // ---- Signing in and out -----------------------------------------------------------------

  /** The claims inside an agent token (`kfa.<base64url JSON>.<signature>`), read to show
   * who is signed in and until when; the API checks the signature on every call. */
  function readClaims(token) {
    const parts = token.split(".");
    if (parts.length !== 3 || parts[0] !== "kfa") throw new Error("This is not an agent token (they start with kfa.)");
    let claims;
    try {
      const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      const bytes = Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
      claims = JSON.parse(new TextDecoder().decode(bytes));
    } catch (_) {
      throw new Error("This agent token is damaged; copy it again");
    }
    if (!claims || typeof claims.a !== "string" || typeof claims.e !== "number") throw new Error("This agent token is damaged; copy it again");
    if (claims.e <= Date.now()) throw new Error(`This token expired ${fullDate(new Date(claims.e).toISOString())}; ask for a new one`);
    return claims;
  }

  async function signIn(token, { fromStorage = false } = {}) {
    token = token.trim();
    ui.signinError.textContent = "";
    let claims;
    try {
      claims = readClaims(token);
    } catch (e) {
      if (fromStorage) sessionStorage.removeItem(TOKEN_KEY);
      return showSignin(e.message);
    }
    ui.signinButton.disabled = true;
    ui.signinButton.textContent = "Signing in…";
    try {
      // Proves the token to the API before the console opens.
      await api("/api/v1/conversations?limit=1", { token });
    } catch (e) {
      if (fromStorage) sessionStorage.removeItem(TOKEN_KEY);
      return showSignin(e.status === 401 ? `Kefu refused this token: ${e.message}` : `Could not sign in: ${e.message}`);
    } finally {
      ui.signinButton.disabled = false;
      ui.signinButton.textContent = "Sign in";
    }
    state.token = token;
    state.claims = claims;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) {
      /* kept for this page only */
    }
    loadSeen();
    startConsole();
  }

  function showSignin(message) {
    ui.app.hidden = true;
    ui.signin.hidden = false;
    ui.signinError.textContent = message || "";
    document.title = "Sign in · Kefu agent console";
    ui.tokenInput.focus();
  }

  function signOut(message) {
    clearTimeout(state.pollTimer);
    clearTimeout(state.expiryTimer);
    closeConversation();
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      /* nothing stored */
    }
    Object.assign(state, { token: null, claims: null, waitingIds: null, entries: [], known: { queues: new Set(), assignees: new Set() } });
    state.fresh.clear();
    ui.tokenInput.value = "";
    ui.list.replaceChildren();
    ui.errors.replaceChildren();
    showSignin(message || "You are signed out.");
  }

  ui.signinForm.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!ui.tokenInput.value.trim()) return showSignin("Paste your agent token first.");
    signIn(ui.tokenInput.value);
  });
  ui.tokenInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      ui.signinForm.requestSubmit();
    }
  });
  ui.signout.addEventListener("click", () => signOut("You are signed out."));

  function showWho() {
    const { n, a, e } = state.claims;
    const name = n || a;
    ui.whoAvatar.dataset.hue = hue(a);
    ui.whoAvatar.textContent = initials(name);
    ui.whoName.textContent = name === a ? name : `${name} (${a})`;
    const left = e - Date.now();
    const until = new Date(e);
    const sameDay = until.toDateString() === new Date().toDateString();
    ui.whoExpiry.textContent = left < 10 * 60000 ? `Session ends in ${Math.max(1, Math.round(left / 60000))} min` : `Signed in until ${sameDay ? clock(until) : fullDate(until.toISOString())}`;
    ui.whoExpiry.classList.toggle("soon", left < 10 * 60000);
    ui.whoExpiry.title = `The token expires ${fullDate(until.toISOString())}`;
  }

  function startConsole() {
    ui.signin.hidden = true;
    ui.app.hidden = false;
    showWho();
    clearTimeout(state.expiryTimer);
    const tick = () => {
      const left = state.claims.e - Date.now();
      if (left <= 0) return signOut("Your session ended (the agent token expired). Sign in again.");
      showWho();
      state.expiryTimer = setTimeout(tick, Math.min(left, 30000));
    };
    tick();
    renderSound();
    setFilter(state.filter, { focus: false });
    const wanted = new URLSearchParams(location.hash.slice(1)).get("conversation");
    if (wanted) openConversation(wanted);
  }

  // ---- Sound and the new-conversation cue --------------------------------------------------

  function renderSound() {
    ui.soundToggle.setAttribute("aria-pressed", String(!!state.prefs.sound));
    ui.soundToggle.textContent = state.prefs.sound ? "Sound on" : "Sound off";
  }
  ui.soundToggle.addEventListener("click", () => {
    state.prefs.sound = !state.prefs.sound;
    savePrefs();
    renderSound();
    // The click is the gesture that lets the page make sound; play one so the agent knows.
    if (state.prefs.sound) beep();
  });

  /** Two short soft tones (Web Audio; nothing to download). */
  function beep() {
    try {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      state.audio ||= new Ctx();
      const ctx = state.audio;
      if (ctx.state === "suspended") ctx.resume();
      const t = ctx.currentTime;
      for (const [freq, at] of [[880, 0], [1320, 0.16]]) {
        const osc = ctx.createOscillator();
        const gain = ctx.createGain();
        osc.type = "sine";
        osc.frequency.value = freq;
        gain.gain.setValueAtTime(0.0001, t + at);
        gain.gain.exponentialRampToValueAtTime(0.12, t + at + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, t + at + 0.25);
        osc.connect(gain).connect(ctx.destination);
        osc.start(t + at);
        osc.stop(t + at + 0.3);
      }
    } catch (_) {
      /* no audio: the visual cue remains */
    }
  }

  let cueTimer = 0;
  function cue(arrived) {
    for (const id of arrived) state.fresh.add(id);
    const n = arrived.length;
    const open = h("button", { type: "button", onclick: () => {
      hideCue();
      setFilter("waiting", { focus: false });
      openConversation(arrived[0]);
    } }, "Open");
    ui.cue.replaceChildren(h("span", { class: "dot", "aria-hidden": "true" }), n === 1 ? "New conversation waiting" : `${n} new conversations waiting`, open);
    ui.cue.hidden = false;
    const tab = ui.tabs.find((t) => t.dataset.filter === "waiting");
    tab.classList.remove("flash");
    void tab.offsetWidth; // restarts the animation
    tab.classList.add("flash");
    if (state.prefs.sound) beep();
    clearTimeout(cueTimer);
    cueTimer = setTimeout(hideCue, 15000);
  }
  function hideCue() {
    ui.cue.hidden = true;
    ui.cue.replaceChildren();
  }

  // ---- Inbox ----------------------------------------------------------------------------

  function setFilter(filter, { focus = true } = {}) {
    state.filter = filter;
    for (const t of ui.tabs) {
      const on = t.dataset.filter === filter;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      if (on && focus) t.focus();
    }
    ui.assigneeWrap.hidden = filter === "waiting" || filter === "mine";
    if (ui.assigneeWrap.hidden) ui.assigneeFilter.value = "";
    ui.list.setAttribute("aria-busy", "true");
    listShown = "";
    refreshInbox();
  }
  for (const t of ui.tabs) t.addEventListener("click", () => setFilter(t.dataset.filter));
  // Arrow keys move between tabs (the ARIA tabs pattern).
  ui.tabs[0].parentElement.addEventListener("keydown", (e) => {
    const i = ui.tabs.findIndex((t) => t.dataset.filter === state.filter);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: ui.tabs.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    setFilter(ui.tabs[(next + ui.tabs.length) % ui.tabs.length].dataset.filter);
  });
  ui.queueFilter.addEventListener("change", () => refreshInbox());
  ui.assigneeFilter.addEventListener("change", () => refreshInbox());

  function listQuery() {
    const q = { limit: "200" };
    const queue = ui.queueFilter.value;
    const assignee = ui.assigneeFilter.value;
    if (queue) q.queue = queue;
    if (state.filter === "waiting") q.status = "waiting_for_agent";
    else if (state.filter === "mine") Object.assign(q, { status: "with_agent", assignee: me() });
    else if (state.filter === "resolved") q.status = "resolved";
    if (assignee && (state.filter === "open" || state.filter === "resolved")) q.assignee = assignee;
    return q;
  }
  const inboxUrl = (q) => `/api/v1/conversations?${new URLSearchParams(q)}`;

  let polling = false;
  /** One poll: the waiting queue (for its count and the cue), this agent's own, and the
   * list on screen. The inbox has no push channel, so this runs every few seconds. */
  async function refreshInbox() {
    clearTimeout(state.pollTimer);
    if (!state.token) return;
    if (polling) {
      state.pollTimer = setTimeout(refreshInbox, 300);
      return;
    }
    polling = true;
    const filter = state.filter;
    const q = listQuery();
    try {
      const waitingQ = { status: "waiting_for_agent", limit: "200" };
      const mineQ = { status: "with_agent", assignee: me(), limit: "200" };
      const same = (a, b) => inboxUrl(a) === inboxUrl(b);
      const [waiting, mine, list] = await Promise.all([
        api(inboxUrl(waitingQ)),
        api(inboxUrl(mineQ)),
        same(q, waitingQ) || same(q, mineQ) ? null : api(inboxUrl(q)),
      ]);
      if (!state.token) return;
      clearError("Inbox");
      const shown = list ? list.conversations : same(q, waitingQ) ? waiting.conversations : mine.conversations;
      noticeArrivals(waiting.conversations);
      setCount("waiting", waiting.conversations.length);
      setCount("mine", mine.conversations.length);
      const entries = filter === "open" ? shown.filter((c) => c.status !== "resolved") : shown;
      for (const c of [...waiting.conversations, ...mine.conversations, ...entries]) {
        if (c.queue) state.known.queues.add(c.queue);
        if (c.assignee) state.known.assignees.add(c.assignee);
      }
      if (filter === state.filter) {
        state.entries = entries;
        renderFilters();
        renderList();
      }
      // The inbox also carries what has no live event (tags, rating) for the open one.
      const open = [...waiting.conversations, ...mine.conversations, ...entries].find((c) => c.id === state.selected);
      if (open && state.conv && (String(open.tags) !== String(state.conv.tags) || open.csat !== state.conv.csat)) {
        Object.assign(state.conv, { tags: open.tags, csat: open.csat });
        renderConversationState();
      } else if (!open && state.conv?.status === "resolved" && !state.conv.csat) {
        // Resolved and out of the lists on screen: look for the visitor's rating directly.
        const id = state.selected;
        const c = await api(`/api/v1/conversations/${encodeURIComponent(id)}`);
        if (state.selected === id && state.conv && c.csat !== state.conv.csat) {
          Object.assign(state.conv, { tags: c.tags, csat: c.csat });
          renderConversationState();
        }
      }
    } catch (e) {
      if (state.token) showError("Inbox", e);
    } finally {
      polling = false;
      ui.list.setAttribute("aria-busy", "false");
      if (state.token) state.pollTimer = setTimeout(refreshInbox, document.hidden ? POLL_MS * 3 : POLL_MS);
    }
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.token) refreshInbox();
  });

  /** Compares the waiting queue with the last poll's: newcomers get the cue. The first
   * poll only learns what is there. */
  function noticeArrivals(waiting) {
    const now = new Set(waiting.map((c) => c.id));
    if (state.waitingIds) {
      const arrived = waiting.filter((c) => !state.waitingIds.has(c.id) && c.id !== state.selected).map((c) => c.id);
      if (arrived.length) cue(arrived);
    }
    for (const id of state.fresh) if (!now.has(id)) state.fresh.delete(id);
    state.waitingIds = now;
    document.title = now.size ? `(${now.size}) Waiting · Kefu agent console` : "Kefu agent console";
  }

  function setCount(name, n) {
    const el = document.querySelector(`[data-count="${name}"]`);
    el.textContent = n ? String(n) : "";
    el.classList.toggle("hot", name === "waiting" && n > 0);
    el.closest(".tab").setAttribute("aria-label", `${el.closest(".tab").firstChild.textContent.trim()}${n ? ` (${n})` : ""}`);
  }

  function renderFilters() {
    const fill = (select, first, values, label = (v) => v) => {
      const current = select.value;
      const all = [...new Set([...values, ...(current ? [current] : [])])].sort();
      const have = [...select.options].slice(1).map((o) => o.value);
      if (String(have) === String(all)) return;
      select.replaceChildren(first, ...all.map((v) => h("option", { value: v }, label(v))));
      select.value = current;
    };
    fill(ui.queueFilter, h("option", { value: "" }, "All queues"), state.known.queues, (q) => `Queue: ${q}`);
    fill(ui.assigneeFilter, h("option", { value: "" }, "Anyone"), [me(), ...state.known.assignees], (a) => (a === me() ? "Assigned to me" : `Assigned to ${a}`));
    ui.queueNames.replaceChildren(...[...state.known.queues].sort().map((q) => h("option", { value: q })));
  }

  const unreadOf = (c) => (c.status === "resolved" || c.id === state.selected ? 0 : Math.max(0, (c.messages || 0) - (state.seen[c.id] || 0)));
  const ROLE_PREFIX = { visitor: "", bot: "Bot: ", agent: "Agent: ", system: "", note: "Note: " };

  let listShown = "";
  function renderList() {
    // Polls mostly bring nothing new: leave the rows alone then (no flicker under the
    // pointer, nothing re-announced to a screen reader), and only say when it was checked.
    const shown = JSON.stringify([state.entries, [...state.fresh], state.selected, state.entries.map(unreadOf), state.entries.map((c) => when(c.updated_at))]);
    ui.listFoot.textContent = `${state.entries.length} conversation${state.entries.length === 1 ? "" : "s"} · updated ${clock(new Date())}`;
    if (shown === listShown) return;
    listShown = shown;
    const focusedId = document.activeElement?.closest?.(".row")?.dataset.id;
    const rows = state.entries.map((c) => {
      const unread = unreadOf(c);
      const isNew = state.fresh.has(c.id);
      const name = visitorName(c);
      const last = c.last_message || {};
      const preview = (ROLE_PREFIX[last.role] ?? "") + (last.preview || "");
      const label = [name, STATUS_LABEL[c.status] || c.status, unread ? `${unread} unread` : "", isNew ? "new" : ""].filter(Boolean).join(", ");
      const button = h(
        "button",
        {
          type: "button",
          class: `row${unread ? " unread" : ""}${isNew ? " is-new" : ""}`,
          "data-id": c.id,
          "aria-current": c.id === state.selected ? "true" : "false",
          "aria-label": label,
          onclick: () => openConversation(c.id),
        },
        avatar(name),
        h("span", { class: "row-name" }, name),
        h("span", { class: "row-time", title: fullDate(c.updated_at) }, when(c.updated_at)),
        h("span", { class: "row-preview" }, preview || "No messages yet"),
        unread ? h("span", { class: "unread-badge", "aria-hidden": "true" }, unread > 99 ? "99+" : String(unread)) : null,
        h(
          "span",
          { class: "row-tags" },
          isNew ? h("span", { class: "new-label" }, "New") : null,
          h("span", { class: `pill ${c.status}` }, statusLabel(c)),
          c.queue ? h("span", { class: "chip", title: `Queue ${c.queue}` }, c.queue) : null,
          ...(c.tags || []).slice(0, 2).map((t) => h("span", { class: "chip" }, `#${t}`)),
        ),
      );
      return h("li", {}, button);
    });
    ui.list.replaceChildren(...rows);
    const empty = {
      waiting: "No one is waiting. New conversations appear here.",
      mine: "You have no open conversations.",
      open: "No open conversations.",
      resolved: "No resolved conversations yet.",
    }[state.filter];
    ui.listEmpty.textContent = empty;
    ui.listEmpty.hidden = rows.length > 0;
    if (focusedId) ui.list.querySelector(`.row[data-id="${CSS.escape(focusedId)}"]`)?.focus();
  }

  function statusLabel(c) {
    if (c.status === "with_agent") return c.assignee === me() ? "With you" : `With ${c.assignee || "an agent"}`;
    return STATUS_LABEL[c.status] || c.status;
  }

  // ---- A conversation -----------------------------------------------------------------------

  function closeConversation() {
    disconnectLive();
    clearTimeout(state.visitorTypingTimer);
    for (const pending of blobCache.values()) pending.then((url) => url && URL.revokeObjectURL(url));
    blobCache.clear();
    Object.assign(state, { selected: null, conv: null, lastSeq: 0, files: [] });
    state.messages.clear();
    state.mine.clear();
    ui.transcript.replaceChildren();
    ui.conv.hidden = true;
    ui.details.hidden = true;
    ui.emptyState.hidden = false;
    ui.typing.classList.remove("on");
    renderTray();
  }

  async function openConversation(id) {
    if (state.selected === id) return;
    closeConversation();
    state.selected = id;
    state.fresh.delete(id);
    history.replaceState(null, "", `#conversation=${encodeURIComponent(id)}`);
    ui.replayLink.href = `/replay/#id=${encodeURIComponent(id)}`;
    ui.app.dataset.view = "conversation";
    ui.emptyState.hidden = true;
    ui.conv.hidden = false;
    ui.details.hidden = false;
    ui.convName.textContent = "Loading…";
    ui.convMeta.textContent = "";
    ui.input.value = "";
    setNote(false);
    renderList();
    try {
      const c = await api(`/api/v1/conversations/${encodeURIComponent(id)}`);
      if (state.selected !== id) return;
      state.conv = c;
      for (const m of c.messages || []) addMessage(m, { history: true });
      renderConversationState();
      scrollToEnd(true);
      connectLive();
      // The keyboard lands where the work is: the reply box, or Claim before it opens.
      if (!ui.input.disabled) ui.input.focus({ preventScroll: true });
      else if (!ui.claim.hidden) ui.claim.focus({ preventScroll: true });
    } catch (e) {
      if (state.selected !== id) return;
      ui.convName.textContent = "This conversation could not be opened";
      showError("Opening the conversation", e);
    }
  }

  ui.back.addEventListener("click", () => {
    ui.app.dataset.view = "list";
    const id = state.selected;
    closeConversation();
    history.replaceState(null, "", location.pathname);
    renderList();
    ui.list.querySelector(`.row[data-id="${CSS.escape(id || "")}"]`)?.focus();
  });
  ui.detailsToggle.addEventListener("click", () => {
    const open = !ui.details.classList.contains("open");
    ui.details.classList.toggle("open", open);
    ui.detailsToggle.setAttribute("aria-expanded", String(open));
  });

  /** Header, details panel, action buttons and composer for the conversation's state. */
  function renderConversationState() {
    const c = state.conv;
    if (!c) return;
    const name = visitorName(c);
    ui.convName.textContent = name;
    ui.convStatus.className = `pill ${c.status}`;
    ui.convStatus.textContent = statusLabel(c);
    ui.convMeta.textContent = c.queue ? `Queue ${c.queue}` : "";
    const mine = isMine(c);
    ui.claim.hidden = c.status === "resolved" || mine;
    ui.claim.textContent = c.status === "with_agent" ? "Take over" : c.status === "bot" ? "Take over from the bot" : "Claim";
    ui.transfer.disabled = !mine;
    ui.transfer.title = mine ? "" : "Only the assigned agent can transfer";
    ui.resolve.disabled = c.status === "resolved" || (c.status === "with_agent" && !mine);
    ui.resolve.title = ui.resolve.disabled ? (c.status === "resolved" ? "Already resolved" : "Only the assigned agent can resolve") : "";

    ui.dAvatar.replaceWith((ui.dAvatar = avatar(name, "large")));
    ui.dVisitor.textContent = name;
    ui.dVisitor.title = name;
    ui.dVerified.replaceChildren(
      c.visitor?.verified ? h("span", { class: "verified" }, "✓ Verified visitor") : "Anonymous visitor (not signed in on the site)",
    );
    ui.dStatus.replaceChildren(h("span", { class: `pill ${c.status}` }, statusLabel(c)));
    ui.dQueue.textContent = c.queue || "—";
    ui.dAssignee.textContent = c.assignee ? (c.assignee === me() ? `${c.assignee} (you)` : c.assignee) : "—";
    ui.dTags.replaceChildren(...((c.tags || []).length ? c.tags.map((t) => h("span", { class: "chip" }, t)) : ["—"]));
    ui.dCsat.replaceChildren(
      c.csat ? h("span", { class: "stars", "aria-label": `${c.csat} out of 5` }, "★".repeat(c.csat) + "☆".repeat(5 - c.csat)) : "Not rated",
    );
    ui.dCreated.textContent = fullDate(c.created_at);
    ui.dUpdated.textContent = fullDate(c.updated_at);
    ui.dCount.textContent = String(state.messages.size);
    ui.dId.textContent = c.id;
    ui.dId.title = c.id;
    renderSummary(c.summary);
    renderComposer();
  }

  /** What the bot remembers of the messages that left its window (the engine's summary). */
  function renderSummary(summary) {
    // A model's lines are marked `Summary: ` for the bot; people read them as they are.
    const lines = (summary?.text || "")
      .split("\n")
      .filter((l) => l.trim())
      .map((l) => l.replace(/^Summary: /, ""));
    ui.dSummary.hidden = !lines.length;
    const n = summary?.messages || 0;
    ui.dSummaryNote.textContent = `What the bot remembers of the first ${n} message${n === 1 ? "" : "s"} (the transcript has them all).`;
    ui.dSummaryLines.replaceChildren(...lines.map((l) => h("li", {}, l)));
  }

  function renderComposer() {
    const c = state.conv;
    const canReply = isMine(c);
    const note = state.note;
    ui.composer.classList.toggle("note", note);
    ui.modeReply.setAttribute("aria-pressed", String(!note));
    ui.modeNote.setAttribute("aria-pressed", String(note));
    ui.inputLabel.textContent = note ? "Internal note" : "Reply";
    let hint = "";
    if (note) hint = "Only agents see notes";
    else if (!c) hint = "";
    else if (c.status === "resolved") hint = "Resolved. A new message from the visitor reopens it";
    else if (c.status === "with_agent" && !canReply) hint = `${c.assignee} is handling this one`;
    else if (!canReply) hint = "Claim the conversation to reply";
    ui.composerHint.textContent = hint;
    const enabled = note || canReply;
    ui.input.disabled = !enabled;
    ui.input.placeholder = note ? "Write a note for your team…" : canReply ? "Write a reply…" : "Claim the conversation to reply, or switch to an internal note";
    ui.attach.disabled = !enabled;
    ui.cannedOpen.disabled = !enabled;
    ui.send.textContent = note ? "Add note" : "Send";
    ui.send.disabled = !enabled || state.sending || state.files.some((f) => f.status === "uploading");
  }

  function setNote(on) {
    state.note = on;
    renderComposer();
  }
  ui.modeReply.addEventListener("click", () => {
    setNote(false);
    ui.input.focus();
  });
  ui.modeNote.addEventListener("click", () => {
    setNote(true);
    ui.input.focus();
  });

  // ---- The transcript -----------------------------------------------------------------------

  const nearBottom = () => ui.transcript.scrollHeight - ui.transcript.scrollTop - ui.transcript.clientHeight < 120;
  function scrollToEnd(force) {
    if (force || nearBottom()) ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  /** Adds a stored message once (by seq), in order. */
  function addMessage(m, { history = false } = {}) {
    if (!m || typeof m.seq !== "number" || state.messages.has(m.seq)) return;
    const stick = nearBottom();
    state.messages.set(m.seq, m);
    state.lastSeq = Math.max(state.lastSeq, m.seq);
    markSeen(state.selected, state.lastSeq);
    const el = renderMessage(m);
    const after = [...ui.transcript.children].find((li) => Number(li.dataset.seq) > m.seq);
    ui.transcript.insertBefore(el, after || null);
    if (m.role === "visitor" && !history) hideVisitorTyping();
    if (state.conv) ui.dCount.textContent = String(state.messages.size);
    if (stick || !history) scrollToEnd(stick);
  }

  function author(m) {
    const mine = state.mine.has(m.seq);
    switch (m.role) {
      case "visitor":
        return visitorName(state.conv || { id: state.selected });
      case "bot":
        return "Bot";
      case "agent":
        return mine ? "You" : "Agent";
      case "note":
        return mine ? "Internal note · you" : "Internal note";
      default:
        return "";
    }
  }

  function renderMessage(m) {
    const role = ["visitor", "bot", "agent", "system", "note"].includes(m.role) ? m.role : "system";
    const created = new Date(m.created_at);
    const files = (m.parts || []).filter((p) => p.type !== "text");
    return h(
      "li",
      { class: `msg ${role}`, "data-seq": m.seq },
      h("div", { class: "meta" }, h("b", {}, role === "note" ? icon("lock") : null, author(m)), Number.isNaN(created.getTime()) ? null : h("time", { datetime: m.created_at, title: fullDate(m.created_at) }, clock(created))),
      h("div", { class: "bubble" }, textOf(m)),
      files.length ? h("div", { class: "files" }, files.map(renderFile)) : null,
      sourcesList(m.citations),
    );
  }

  /** The knowledge-base sources a bot's reply cites: `[n]` as the reply shows it, the
   * title (linked only to an absolute http(s) URL) and the section. */
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

  /** A file in a message. Agents read files with their token in the Authorization header
   * (docs/api.md), so images and audio are fetched and shown from blob URLs, and documents
   * download the same way when clicked. */
  function renderFile(p) {
    const name = p.name || (p.type === "image" ? "Image" : p.type === "audio" ? "Voice message" : "File");
    const src = typeof p.url === "string" ? p.url : "";
    const stored = src.startsWith("/api/v1/attachments/");
    if (p.type === "image" && stored) {
      const img = h("img", { alt: name });
      const link = h("a", { class: "thumb", href: "#", title: `Open ${name}`, "aria-label": `Open ${name}` }, img);
      fileBlob(src).then((url) => {
        if (!url) return;
        // A picture that arrives at the end of the transcript keeps it scrolled to the end.
        const stick = nearBottom();
        img.addEventListener("load", () => stick && scrollToEnd(true), { once: true });
        img.src = url;
        link.href = url;
        link.target = "_blank";
        link.rel = "noopener";
      });
      return link;
    }
    if (p.type === "audio" && stored) {
      const audio = h("audio", { controls: true, preload: "none", "aria-label": name });
      fileBlob(src).then((url) => url && (audio.src = url));
      return audio;
    }
    const link = h("a", { class: "file-link", href: stored ? "#" : safeUrl(src), download: stored ? null : true, rel: "noopener" }, icon("file"), h("span", { class: "name" }, name));
    if (stored) {
      link.addEventListener("click", async (e) => {
        e.preventDefault();
        const url = await fileBlob(src);
        if (!url) return;
        const a = h("a", { href: url, download: name });
        document.body.append(a);
        a.click();
        a.remove();
      });
    }
    return link;
  }
  /** Only http(s) links leave the console (no `javascript:` from a stored URL). */
  function safeUrl(u) {
    try {
      const url = new URL(u, location.href);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : "#";
    } catch (_) {
      return "#";
    }
  }
  /** The open conversation's files as blob: URLs, by API path (revoked when it closes). */
  const blobCache = new Map();
  function fileBlob(path) {
    if (!blobCache.has(path)) {
      blobCache.set(
        path,
        api(path, { raw: true })
          .then((r) => r.blob())
          .then((b) => URL.createObjectURL(b))
          .catch((e) => {
            blobCache.delete(path);
            showError("Loading a file", e);
            return null;
          }),
      );
    }
    return blobCache.get(path);
  }

  // ---- Live updates -------------------------------------------------------------------------

  function liveUrl(ws) {
    const q = new URLSearchParams({ access_token: state.token, after: String(state.lastSeq) });
    const base = ws ? API.replace(/^http/, "ws") : API;
    return `${base}/api/v1/conversations/${encodeURIComponent(state.selected)}/events?${q}`;
  }

  function setLive(kind) {
    ui.liveState.className = `live ${kind ? "on" : "off"}`;
    ui.liveState.textContent = kind ? "Live" : "Reconnecting…";
    ui.liveState.title = kind === "ws" ? "Live over a WebSocket" : kind === "sse" ? "Live over Server-Sent Events" : "Connecting again; nothing is missed";
  }

  /** Follows the open conversation: a WebSocket, or Server-Sent Events where sockets fail.
   * Each (re)connection starts from the last seq we hold, so nothing is missed, and
   * `addMessage` drops what we already have, so nothing shows twice. */
  function connectLive() {
    if (!state.selected || state.live || !state.token) return;
    clearTimeout(state.reconnectTimer);
    const id = state.selected;
    const lost = (conn) => {
      if (state.live !== conn) return;
      state.live = null;
      if (state.selected !== id) return;
      setLive(null);
      state.backoff = Math.min(15000, state.backoff ? state.backoff * 2 : 500);
      state.reconnectTimer = setTimeout(connectLive, state.backoff + Math.random() * 300);
    };
    if (state.liveKind === "ws" && window.WebSocket) {
      const ws = new WebSocket(liveUrl(true));
      let opened = false;
      ws.onopen = () => {
        opened = true;
        state.wsFailures = 0;
        state.backoff = 0;
        setLive("ws");
      };
      ws.onmessage = (e) => {
        try {
          onUpdate(JSON.parse(e.data));
        } catch (err) {
          console.warn("Kefu: a live update could not be read", err);
        }
      };
      ws.onclose = () => {
        // A socket that never opened twice in a row (a proxy that drops upgrades): use SSE.
        if (!opened && ++state.wsFailures >= 2) state.liveKind = "sse";
        lost(ws);
      };
      state.live = ws;
    } else {
      const es = new EventSource(liveUrl(false));
      es.onopen = () => {
        state.backoff = 0;
        setLive("sse");
      };
      for (const name of ["message", "status", "typing"]) {
        es.addEventListener(name, (e) => {
          try {
            onUpdate({ event: name, data: JSON.parse(e.data) });
          } catch (err) {
            console.warn("Kefu: a live update could not be read", err);
          }
        });
      }
      // EventSource would reconnect from the URL's old cursor; reconnect ourselves instead.
      es.onerror = () => {
        es.close();
        lost(es);
      };
      state.live = es;
    }
  }

  function disconnectLive() {
    const conn = state.live;
    state.live = null;
    clearTimeout(state.reconnectTimer);
    state.backoff = 0;
    if (conn) conn.close();
  }

  function onUpdate(u) {
    if (u.event === "message") addMessage(u.data);
    else if (u.event === "status" && state.conv) {
      const { status, assignee, queue } = u.data || {};
      Object.assign(state.conv, { status, assignee: assignee ?? null, queue: queue ?? null, updated_at: new Date().toISOString() });
      renderConversationState();
      refreshInbox();
    } else if (u.event === "typing" && u.data?.who === "visitor") {
      const left = Number(u.data.until_ms) - Date.now();
      // The expiry is the server's clock; with a skewed clock keep the default lifetime.
      showVisitorTyping(left > 0 && left <= TYPING_MAX_MS ? left : TYPING_MAX_MS);
    } else if (u.event === "error") {
      console.warn("Kefu: the live channel refused a frame", u.data);
    }
  }

  function showVisitorTyping(ms) {
    ui.typingText.textContent = `${visitorName(state.conv || { id: state.selected })} is typing…`;
    ui.typing.classList.add("on");
    clearTimeout(state.visitorTypingTimer);
    state.visitorTypingTimer = setTimeout(hideVisitorTyping, ms);
  }
  function hideVisitorTyping() {
    clearTimeout(state.visitorTypingTimer);
    ui.typing.classList.remove("on");
  }

  window.addEventListener("online", () => {
    state.backoff = 0;
    disconnectLive();
    connectLive();
    refreshInbox();
  });

  // ---- Actions --------------------------------------------------------------------------

  /** Runs an agent action and takes the conversation it answers with. */
  async function act(action, body, what) {
    const id = state.selected;
    try {
      const c = await api(`/api/v1/conversations/${encodeURIComponent(id)}/${action}`, { method: "POST", json: body });
      if (state.selected !== id) return c;
      clearError(what);
      applyConversation(c);
      refreshInbox();
      return c;
    } catch (e) {
      showError(what, e);
      return null;
    }
  }

  function applyConversation(c) {
    const { messages, ...rest } = c;
    state.conv = { ...state.conv, ...rest };
    for (const m of messages || []) addMessage(m);
    renderConversationState();
  }

  ui.claim.addEventListener("click", async () => {
    ui.claim.disabled = true;
    await act("claim", { name: state.claims.n || state.claims.a }, "Claiming");
    ui.claim.disabled = false;
    if (isMine(state.conv)) {
      setNote(false);
      ui.input.focus();
    }
  });
  ui.resolve.addEventListener("click", async () => {
    ui.resolve.disabled = true;
    await act("resolve", {}, "Resolving");
    renderConversationState();
  });

  // Transfer: to an agent (id, and the name the visitor sees) or back to a queue.
  const transferTo = () => ui.transferForm.elements.to.value;
  function renderTransferChoice() {
    ui.toAgentFields.hidden = transferTo() !== "agent";
    ui.toQueueFields.hidden = transferTo() !== "queue";
  }
  ui.transferForm.addEventListener("change", renderTransferChoice);
  ui.transfer.addEventListener("click", () => {
    ui.transferError.textContent = "";
    renderTransferChoice();
    ui.transferDialog.showModal();
    (transferTo() === "agent" ? ui.toAgent : ui.toQueue).focus();
  });
  ui.transferCancel.addEventListener("click", () => ui.transferDialog.close());
  ui.transferForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {};
    if (transferTo() === "agent") {
      const agent = ui.toAgent.value.trim();
      if (!agent) return (ui.transferError.textContent = "Name the agent (their id).");
      if (agent === me()) return (ui.transferError.textContent = "It is already yours.");
      body.to_agent = agent;
      if (ui.toAgentName.value.trim()) body.to_agent_name = ui.toAgentName.value.trim();
    } else {
      const queue = ui.toQueue.value.trim();
      if (!queue) return (ui.transferError.textContent = "Name the queue.");
      body.to_queue = queue;
    }
    try {
      const c = await api(`/api/v1/conversations/${encodeURIComponent(state.selected)}/transfer`, { method: "POST", json: body });
      ui.transferDialog.close();
      applyConversation(c);
      refreshInbox();
    } catch (err) {
      ui.transferError.textContent = `${err.message}${err.code ? ` (${err.code})` : ""}`;
    }
  });

  // ---- Composing: reply or note, files, canned responses, typing --------------------------

  ui.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });

  async function send() {
    const text = ui.input.value.trim();
    const ready = state.files.filter((f) => f.status === "ready");
    if (state.sending || (!text && !ready.length) || !state.conv) return;
    if (state.files.some((f) => f.status === "uploading")) return;
    const note = state.note;
    if (!note && !isMine(state.conv)) return;
    state.sending = true;
    renderComposer();
    const body = { text, internal: note || undefined };
    if (ready.length) body.attachments = ready.map((f) => f.id);
    const id = state.selected;
    try {
      const c = await api(`/api/v1/conversations/${encodeURIComponent(id)}/messages`, { method: "POST", json: body });
      if (state.selected === id) {
        // The answer is the whole conversation; ours is its newest message of our role.
        const role = note ? "note" : "agent";
        const ours = (c.messages || []).filter((m) => m.role === role).pop();
        if (ours && !state.messages.has(ours.seq)) state.mine.add(ours.seq);
        else if (ours) {
          state.mine.add(ours.seq);
          ui.transcript.querySelector(`[data-seq="${ours.seq}"] .meta b`)?.replaceChildren(...(role === "note" ? [icon("lock")] : []), author(ours));
        }
        ui.input.value = "";
        state.files = state.files.filter((f) => f.status !== "ready");
        renderTray();
        applyConversation(c);
        clearError("Sending");
        scrollToEnd(true);
      }
    } catch (e) {
      showError(note ? "Adding the note" : "Sending", e);
    } finally {
      state.sending = false;
      renderComposer();
    }
  }

  ui.input.addEventListener("keydown", (e) => {
    if (!ui.cannedMenu.hidden && cannedKey(e)) return;
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  ui.input.addEventListener("input", () => {
    slashCanned();
    announceTyping();
  });

  /** Tells the visitor the agent is typing (over the socket when there is one), at most
   * every few seconds; never for notes. */
  function announceTyping() {
    const now = Date.now();
    if (state.note || !isMine(state.conv) || !ui.input.value.trim() || now - state.lastTypingSent < TYPING_EVERY_MS) return;
    state.lastTypingSent = now;
    const ws = state.live;
    if (window.WebSocket && ws instanceof window.WebSocket && ws.readyState === window.WebSocket.OPEN) ws.send('{"type":"typing"}');
    else api(`/api/v1/conversations/${encodeURIComponent(state.selected)}/typing`, { method: "POST", json: { who: "agent" } }).catch(() => {});
  }

  // Files: uploaded as soon as they are picked, sent by id with the message.
  ui.attach.addEventListener("click", () => ui.file.click());
  ui.file.addEventListener("change", () => {
    const picked = [...ui.file.files];
    ui.file.value = "";
    for (const file of picked) {
      if (state.files.length >= MAX_FILES) {
        showError("Attaching", new Error(`at most ${MAX_FILES} files a message; ${file.name} was left out`));
        continue;
      }
      const entry = { key: Math.random().toString(36).slice(2), file, name: file.name, status: "uploading" };
      state.files.push(entry);
      upload(entry);
    }
    renderTray();
    renderComposer();
  });

  async function upload(entry) {
    try {
      const headers = { "content-type": entry.file.type || "application/octet-stream" };
      const r = await api(`/api/v1/attachments?${new URLSearchParams({ name: entry.name })}`, { method: "POST", body: entry.file, headers });
      Object.assign(entry, { status: "ready", id: r.id });
    } catch (e) {
      Object.assign(entry, { status: "error", error: e.message });
    }
    renderTray();
    renderComposer();
  }

  function renderTray() {
    ui.tray.hidden = state.files.length === 0;
    ui.tray.replaceChildren(
      ...state.files.map((f) =>
        h(
          "li",
          { class: f.status === "error" ? "error" : "", title: f.error || f.name },
          h("span", { class: "name" }, f.name),
          h("span", { class: "state" }, f.status === "uploading" ? "uploading…" : f.status === "error" ? `not sent: ${f.error}` : "ready"),
          h("button", {
            type: "button",
            "aria-label": `Remove ${f.name}`,
            onclick: () => {
              state.files = state.files.filter((x) => x !== f);
              renderTray();
              renderComposer();
              ui.input.focus();
            },
          }, "×"),
        ),
      ),
    );
  }

  // Canned responses: typed "/" at the start of the box, or the Canned button.
  const fillCanned = (text) => text.replaceAll("{agent}", state.claims?.n || state.claims?.a || "");

  function slashCanned() {
    const m = /^\/(\S*)$/.exec(ui.input.value);
    if (m) openCanned(m[1], true);
    else if (state.cannedSlash) closeCanned();
  }

  function openCanned(query = "", slash = false) {
    const q = query.toLowerCase();
    state.cannedSlash = slash;
    state.cannedMatches = state.canned.filter((c) => !q || c.shortcut.toLowerCase().startsWith(q) || c.text.toLowerCase().includes(q));
    state.cannedIndex = 0;
    renderCanned();
    ui.cannedMenu.hidden = false;
    ui.cannedOpen.setAttribute("aria-expanded", "true");
  }
  function closeCanned() {
    ui.cannedMenu.hidden = true;
    state.cannedSlash = false;
    ui.cannedOpen.setAttribute("aria-expanded", "false");
    ui.input.removeAttribute("aria-activedescendant");
  }
  function renderCanned() {
    const items = state.cannedMatches.map((c, i) =>
      h(
        "div",
        {
          class: "canned-item",
          role: "option",
          id: `canned-${i}`,
          "aria-selected": String(i === state.cannedIndex),
          onmousedown: (e) => e.preventDefault(), // keeps the focus in the box
          onclick: () => insertCanned(c),
        },
        h("span", { class: "sc" }, `/${c.shortcut}`),
        h("span", { class: "tx" }, fillCanned(c.text)),
      ),
    );
    ui.cannedMenu.replaceChildren(
      ...(items.length ? items : [h("p", { class: "canned-none" }, "No canned response matches.")]),
      h("div", { class: "canned-foot" }, h("button", { type: "button", class: "btn ghost small", onmousedown: (e) => e.preventDefault(), onclick: () => {
        closeCanned();
        openCannedEditor();
      } }, "Edit canned responses…")),
    );
    if (items.length) ui.input.setAttribute("aria-activedescendant", `canned-${state.cannedIndex}`);
    ui.cannedMenu.querySelector('[aria-selected="true"]')?.scrollIntoView({ block: "nearest" });
  }
  /** Keys while the menu is open; true when the key was the menu's. */
  function cannedKey(e) {
    const n = state.cannedMatches.length;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (n) state.cannedIndex = (state.cannedIndex + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
      renderCanned();
      return true;
    }
    if ((e.key === "Enter" || e.key === "Tab") && n) {
      e.preventDefault();
      insertCanned(state.cannedMatches[state.cannedIndex]);
      return true;
    }
    if (e.key === "Escape") {
      e.preventDefault();
      closeCanned();
      return true;
    }
    return false;
  }
  function insertCanned(c) {
    const text = fillCanned(c.text);
    if (state.cannedSlash) ui.input.value = text;
    else {
      const { selectionStart: s, selectionEnd: t, value } = ui.input;
      ui.input.value = value.slice(0, s) + text + value.slice(t);
      ui.input.selectionStart = ui.input.selectionEnd = s + text.length;
    }
    closeCanned();
    ui.input.focus();
    announceTyping();
  }
  ui.cannedOpen.addEventListener("click", () => {
    if (!ui.cannedMenu.hidden) return closeCanned();
    openCanned("", false);
    ui.input.focus();
  });
  ui.input.addEventListener("blur", () => setTimeout(() => {
    if (!ui.composer.contains(document.activeElement)) closeCanned();
  }, 150));

  // The editor: a small list kept in localStorage.
  function cannedRow(c = { shortcut: "", text: "" }) {
    const i = Math.random().toString(36).slice(2, 8);
    return h(
      "li",
      {},
      h("label", { class: "visually-hidden", for: `sc-${i}` }, "Shortcut"),
      h("input", { id: `sc-${i}`, class: "sc", value: c.shortcut, placeholder: "shortcut", spellcheck: "false", autocomplete: "off" }),
      h("label", { class: "visually-hidden", for: `tx-${i}` }, "Text"),
      h("textarea", { id: `tx-${i}`, class: "tx", rows: "2", placeholder: "The response" }, c.text),
      h("button", { type: "button", class: "btn ghost icon", "aria-label": "Delete this response", onclick: (e) => e.currentTarget.closest("li").remove() }, "×"),
    );
  }
  function openCannedEditor() {
    ui.cannedRows.replaceChildren(...state.canned.map(cannedRow));
    ui.cannedDialog.showModal();
  }
  ui.cannedEdit.addEventListener("click", openCannedEditor);
  ui.cannedAdd.addEventListener("click", () => {
    const row = cannedRow();
    ui.cannedRows.append(row);
    row.querySelector("input").focus();
  });
  ui.cannedCancel.addEventListener("click", () => ui.cannedDialog.close());
  ui.cannedForm.addEventListener("submit", (e) => {
    e.preventDefault();
    state.canned = [...ui.cannedRows.children]
      .map((li) => ({ shortcut: li.querySelector(".sc").value.trim().replace(/^\/+/, "").replace(/\s+/g, "-"), text: li.querySelector(".tx").value.trim() }))
      .filter((c) => c.text);
    try {
      localStorage.setItem(CANNED_KEY, JSON.stringify(state.canned));
    } catch (_) {
      showError("Saving canned responses", new Error("this browser does not keep them; they last until the page closes"));
    }
    ui.cannedDialog.close();
  });

  // Escape closes the open overlay (dialogs close themselves).
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && ui.details.classList.contains("open")) {
      ui.details.classList.remove("open");
      ui.detailsToggle.setAttribute("aria-expanded", "false");
      ui.detailsToggle.focus();
    }
  });

  // ---- Start ----------------------------------------------------------------------------

  // A sign-in page of the tenant's own may hand the token over in the fragment
  // (`/agent/#token=kfa.…`: fragments never reach a server); it is moved to the tab's
  // storage and taken out of the address bar at once.
  function takeHandedToken() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const token = fragment.get("token");
    if (token) {
      fragment.delete("token");
      history.replaceState(null, "", location.pathname + (fragment.size ? `#${fragment}` : ""));
    }
    return token;
  }
  window.addEventListener("hashchange", () => {
    const token = takeHandedToken();
    if (token && token !== state.token) {
      if (state.token) signOut("");
      signIn(token);
    }
  });
  const handed = takeHandedToken();
  let stored = null;
  try {
    stored = sessionStorage.getItem(TOKEN_KEY);
  } catch (_) {
    /* no storage */
  }
  if (handed) signIn(handed);
  else if (stored) signIn(stored, { fromStorage: true });
  else showSignin("");
})();
