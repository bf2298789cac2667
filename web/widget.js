/*! Kefu visitor widget (Apache-2.0)
 *
 * One tag puts a chat launcher on any page:
 *   <script src="https://<kefu>/widget.js" data-tenant="acme" async></script>
 *
 * Options (data-* attributes on that tag): data-tenant, data-lang (en | zh), data-position
 * (right | left), data-color (any CSS colour), data-theme (auto | light | dark), data-title.
 * Host page API: window.Kefu.open(), .close(), .toggle(), .identify({id, hash}),
 * .setAttributes({...}), .on(event, fn) / .off(event, fn) for open, close, message, status.
 *
 * Everything lives in a shadow root, so the page's CSS cannot reach in and ours cannot
 * leak out. Nothing a person typed (messages, names, file names) is ever parsed as HTML: the
 * DOM is built with createElement and text nodes only. The file is served as written (no build
 * step); `make size` reports its gzipped size.
 */
(() => {
  "use strict";

  if (window.Kefu && window.Kefu.version) return; // the tag was included twice

  const VERSION = "0.1.0";
  const script =
    document.currentScript || document.querySelector('script[src*="widget.js"][data-tenant]');
  const opts = (script && script.dataset) || {};
  // The API lives where this file came from, so the one tag is all a site needs.
  const API = new URL(script && script.src ? script.src : location.href).origin;
  const TENANT = opts.tenant || "default";
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(TENANT)) {
    console.error(`Kefu: data-tenant must be 1 to 64 characters of A-Z a-z 0-9 _ -; got ${JSON.stringify(TENANT)}`);
    return;
  }

  // Attachments (docs/api.md, "Attachments"): the types Kefu takes and their size limits in
  // MiB, checked here before uploading; the server checks again, by content.
  const FILE_KINDS = [
    [/^image\/(png|jpeg|gif|webp)$/, 5],
    [/^application\/pdf$/, 10],
    [/^(text\/(plain|markdown|csv)|application\/json)$/, 1],
    [/^audio\/(mpeg|wav|ogg|webm|mp4)$/, 10],
  ];
  // What a browser may leave without a type (the server decides by the extension too).
  const FILE_EXT = { md: "text/markdown", csv: "text/csv", txt: "text/plain", json: "application/json", pdf: "application/pdf" };
  const FILE_ACCEPT = "image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain,text/markdown,text/csv,application/json,audio/*,.md,.csv,.txt,.json";
  const MAX_FILES = 4; // per message
  const TYPING_EVERY_MS = 3000;
  const TYPING_MAX_MS = 6000;

  // ---- Strings ---------------------------------------------------------------------------

  const STRINGS = {
    en: {
      title: "Support",
      sub_bot: "We typically reply in a few seconds",
      sub_waiting: "Waiting for a person to join…",
      sub_agent: "You're chatting with our team",
      sub_resolved: "This conversation is closed",
      greeting: "Hi there! How can we help you today?",
      open: "Open chat",
      close: "Close chat",
      chat: "Chat with us",
      log: "Conversation",
      input: "Message",
      placeholder: "Write a message…",
      send: "Send",
      attach: "Attach a file",
      remove: "Remove {name}",
      human: "Talk to a person",
      you: "You",
      bot: "Assistant",
      agent: "Support agent",
      notice: "Notice",
      typing_agent: "An agent is typing…",
      thinking: "Assistant is writing…",
      reconnecting: "Connection lost. Reconnecting…",
      offline: "You're offline. We'll send your messages when you're back.",
      rate_limited: "You're sending messages quickly. We'll send this one in {s} s.",
      busy: "We're very busy right now. Please try again in {s} s.",
      failed: "Not sent.",
      retry: "Retry",
      interrupted: "The answer was interrupted. Please ask again.",
      error: "Something went wrong: {msg}",
      identity: "Please sign in to chat with us.",
      rate: "How did we do?",
      star: "{n} out of 5",
      thanks: "Thanks for your feedback!",
      too_big: "{name} is larger than {mb} MB.",
      bad_type: "{name}: only images, PDF, text and audio files can be sent.",
      files_off: "Files can't be sent in this chat.",
      too_many: "Up to {n} files at a time.",
      upload_failed: "{name} could not be uploaded: {msg}",
      image: "Image",
      unread: "{n} unread",
      powered: "Powered by Kefu",
      sources: "Sources",
    },
    zh: {
      title: "在线客服",
      sub_bot: "通常几秒内回复",
      sub_waiting: "正在为您转接人工客服…",
      sub_agent: "人工客服已接入",
      sub_resolved: "本次会话已结束",
      greeting: "您好！请问有什么可以帮您？",
      open: "打开聊天",
      close: "关闭聊天",
      chat: "联系我们",
      log: "会话记录",
      input: "消息",
      placeholder: "输入消息…",
      send: "发送",
      attach: "添加附件",
      remove: "移除 {name}",
      human: "转人工",
      you: "您",
      bot: "智能助手",
      agent: "人工客服",
      notice: "通知",
      typing_agent: "客服正在输入…",
      thinking: "助手正在回复…",
      reconnecting: "连接已断开，正在重新连接…",
      offline: "网络已断开，恢复后将自动发送消息。",
      rate_limited: "发送过于频繁，将在 {s} 秒后自动发送。",
      busy: "当前咨询人数较多，请 {s} 秒后再试。",
      failed: "未发送。",
      retry: "重试",
      interrupted: "回答被中断，请重新提问。",
      error: "出错了：{msg}",
      identity: "请先登录再咨询。",
      rate: "请为本次服务评分",
      star: "{n} 分（满分 5 分）",
      thanks: "感谢您的评价！",
      too_big: "{name} 超过 {mb} MB。",
      bad_type: "{name}：仅支持图片、PDF、文本和音频文件。",
      files_off: "本会话不支持发送文件。",
      too_many: "一次最多发送 {n} 个文件。",
      upload_failed: "{name} 上传失败：{msg}",
      image: "图片",
      unread: "{n} 条新消息",
      powered: "由 Kefu 提供支持",
      sources: "参考来源",
    },
  };
  const LANG = /^zh/i.test(opts.lang || navigator.language || "") ? "zh" : "en";
  const S = STRINGS[LANG];
  const t = (key, vars) =>
    S[key].replace(/\{(\w+)\}/g, (_, k) => (vars && k in vars ? String(vars[k]) : ""));

  // ---- Styles ----------------------------------------------------------------------------

  const STYLE = `
:host{all:initial}
*{box-sizing:border-box}
.k{--a:#4f46e5;--on-a:#fff;--bg:#fff;--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bub:#f3f4f6;
--note:#fff7ed;--note-fg:#9a3412;--shadow:0 12px 48px rgba(17,24,39,.18),0 2px 8px rgba(17,24,39,.08);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"PingFang SC","Microsoft YaHei","Noto Sans CJK SC",sans-serif;
color:var(--fg);-webkit-font-smoothing:antialiased}
.k[data-theme=dark]{--bg:#17181c;--fg:#f3f4f6;--muted:#9ca3af;--line:#2c2e35;--bub:#24262d;
--note:#2b2116;--note-fg:#fdba74;--shadow:0 12px 48px rgba(0,0,0,.55),0 2px 8px rgba(0,0,0,.4)}
button{font:inherit;color:inherit;cursor:pointer}
:focus-visible{outline:3px solid color-mix(in srgb,var(--a) 55%,transparent);outline-offset:2px}
.sr{position:absolute;width:1px;height:1px;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}
.launcher{position:fixed;bottom:20px;z-index:2147483000;width:60px;height:60px;border-radius:50%;border:0;
background:var(--a);color:var(--on-a);box-shadow:0 8px 24px rgba(17,24,39,.25);display:grid;place-items:center;
transition:transform .18s ease,box-shadow .18s ease}
.launcher:hover{transform:scale(1.06)}
.launcher svg{width:28px;height:28px;transition:transform .18s ease}
.open .launcher .i-chat,.launcher .i-down{display:none}.open .launcher .i-down{display:block}
.right .launcher,.right .panel{right:20px}.left .launcher,.left .panel{left:20px}
.badge{position:absolute;top:-2px;right:-2px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;
background:#ef4444;color:#fff;font-size:12px;font-weight:700;line-height:22px;text-align:center;border:2px solid #fff}
.badge[hidden]{display:none}
.panel{position:fixed;bottom:92px;z-index:2147483001;width:380px;height:min(620px,calc(100vh - 112px));
display:flex;flex-direction:column;background:var(--bg);border-radius:18px;box-shadow:var(--shadow);overflow:hidden;
transform-origin:bottom right;animation:pop .2s ease}
.left .panel{transform-origin:bottom left}
.panel[hidden]{display:none}
@keyframes pop{from{opacity:0;transform:translateY(12px) scale(.97)}to{opacity:1;transform:none}}
header{display:flex;align-items:center;gap:12px;padding:16px 14px 16px 18px;color:var(--on-a);
background:linear-gradient(135deg,var(--a),color-mix(in srgb,var(--a) 70%,#000))}
.avatar{flex:none;width:40px;height:40px;border-radius:50%;display:grid;place-items:center;
background:color-mix(in srgb,var(--on-a) 18%,transparent);font-weight:700}
.avatar svg{width:22px;height:22px}
.who{flex:1;min-width:0}
h2{margin:0;font-size:16px;font-weight:650;line-height:1.25;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.sub{margin:2px 0 0;font-size:13px;opacity:.88;display:flex;align-items:center;gap:6px;white-space:nowrap}
.sub span:last-child{overflow:hidden;text-overflow:ellipsis}
.dot{width:8px;height:8px;border-radius:50%;background:#34d399;flex:none}
.k[data-status=waiting_for_agent] .dot{background:#fbbf24}.k[data-status=resolved] .dot{background:#9ca3af}
.icon{flex:none;width:36px;height:36px;border-radius:10px;border:0;background:transparent;display:grid;place-items:center}
.icon:hover{background:color-mix(in srgb,currentColor 12%,transparent)}
.icon svg{width:20px;height:20px}
.actions{display:flex;justify-content:center;padding:0 14px 8px}
.actions:has(.human[hidden]){display:none}
.human{display:inline-flex;align-items:center;gap:6px;border:1px solid var(--line);background:var(--bg);color:var(--fg);
border-radius:999px;padding:6px 14px 6px 10px;font-size:13px;font-weight:600;white-space:nowrap;box-shadow:0 1px 2px rgba(17,24,39,.06)}
.human svg{width:16px;height:16px;color:var(--a)}
.human:hover{border-color:var(--a)}
.human[hidden]{display:none}
.banner{padding:9px 16px;font-size:13px;background:var(--note);color:var(--note-fg);border-bottom:1px solid var(--line)}
.banner:empty{display:none}
.log{flex:1;overflow-y:auto;margin:0;padding:18px 14px 8px;list-style:none;display:flex;flex-direction:column;gap:10px;
scroll-behavior:smooth;overscroll-behavior:contain}
.msg{display:flex;flex-direction:column;max-width:82%;align-self:flex-start}
.msg.visitor{align-self:flex-end;align-items:flex-end}
.name{font-size:12px;color:var(--muted);margin:0 4px 3px}
.bubble{padding:9px 13px;border-radius:16px 16px 16px 5px;background:var(--bub);white-space:pre-wrap;overflow-wrap:anywhere}
.visitor .bubble{background:var(--a);color:var(--on-a);border-radius:16px 16px 5px 16px}
.visitor .bubble a{color:inherit}
.bubble a{color:var(--a)}
.k[data-theme=dark] .bot .bubble a,.k[data-theme=dark] .agent .bubble a{color:color-mix(in srgb,var(--a) 55%,#fff)}
.agent .bubble{background:color-mix(in srgb,var(--a) 12%,var(--bg))}
.pending .bubble{opacity:.65}
.failed .bubble{opacity:1;box-shadow:0 0 0 2px #ef4444}
.state{font-size:12px;color:#dc2626;margin:3px 4px 0;display:flex;gap:8px;align-items:center}
.state button{border:0;background:none;padding:0;color:var(--a);font-weight:600;text-decoration:underline}
.system{align-self:center;max-width:92%;text-align:center}
.system .bubble{background:transparent;color:var(--muted);font-size:13px;padding:2px 8px;border-radius:8px}
.error .bubble{color:#dc2626}
.bubble img{display:block;max-width:220px;max-height:220px;border-radius:10px;margin:2px 0}
.doc{display:inline-flex;align-items:center;gap:6px;text-decoration:none;font-weight:600}
.doc svg{width:18px;height:18px;flex:none}
.sources{list-style:none;margin:4px 6px 0;padding:0;font-size:12px;line-height:1.4;color:var(--muted);display:flex;flex-direction:column;gap:2px}
.sources a{color:var(--a);font-weight:600;text-decoration:none}.sources a:hover{text-decoration:underline}
.k[data-theme=dark] .sources a{color:color-mix(in srgb,var(--a) 55%,#fff)}
.src-n{font-variant-numeric:tabular-nums;margin-right:4px}.src-h::before{content:" · "}
.streaming .bubble::after{content:"";display:inline-block;width:7px;height:15px;margin-left:2px;vertical-align:-2px;
background:currentColor;opacity:.55;animation:blink 1s steps(2) infinite}
@keyframes blink{50%{opacity:0}}
.typing{display:flex;align-items:center;gap:8px;padding:0 18px 6px;font-size:12px;color:var(--muted);min-height:22px}
.typing[hidden]{visibility:hidden;display:flex}
.dots{display:inline-flex;gap:3px}
.dots i{width:6px;height:6px;border-radius:50%;background:var(--muted);animation:bounce 1.2s infinite ease-in-out}
.dots i:nth-child(2){animation-delay:.15s}.dots i:nth-child(3){animation-delay:.3s}
@keyframes bounce{0%,80%,100%{transform:translateY(0);opacity:.5}40%{transform:translateY(-4px);opacity:1}}
.rating{margin:4px 14px 8px;padding:12px;border:1px solid var(--line);border-radius:14px;text-align:center;font-size:14px}
.rating[hidden]{display:none}
.stars{display:flex;justify-content:center;gap:4px;margin-top:6px}
.stars button{border:0;background:none;font-size:26px;line-height:1;padding:2px 4px;color:#d1d5db}
.stars button.on,.stars:hover button{color:#f59e0b}.stars button:hover~button{color:#d1d5db}
form{border-top:1px solid var(--line);padding:10px 12px 8px}
.files{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:8px}
.files:empty{display:none}
.file{position:relative;display:flex;align-items:center;gap:6px;max-width:160px;padding:4px 26px 4px 4px;
border:1px solid var(--line);border-radius:10px;font-size:12px}
.file img{width:40px;height:40px;object-fit:cover;border-radius:7px}
.file span{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.file button{position:absolute;top:2px;right:2px;width:20px;height:20px;border:0;border-radius:50%;background:var(--bub);
font-size:14px;line-height:20px;padding:0}
.ferr{color:#dc2626;font-size:12px;margin:0 2px 6px}
.ferr:empty{display:none}
.row{display:flex;align-items:flex-end;gap:6px}
textarea{flex:1;resize:none;border:1px solid var(--line);border-radius:14px;padding:9px 12px;max-height:120px;min-height:40px;
font:inherit;color:var(--fg);background:var(--bg);outline:none}
textarea:focus,textarea:focus-visible{outline:none;border-color:var(--a);box-shadow:0 0 0 3px color-mix(in srgb,var(--a) 22%,transparent)}
textarea::placeholder{color:var(--muted)}
.row .icon{color:var(--muted);width:40px;height:40px}
.attach[hidden]{display:none}
.send{flex:none;width:40px;height:40px;border-radius:12px;border:0;background:var(--a);color:var(--on-a);display:grid;place-items:center}
.send:disabled{opacity:.4;cursor:default}
.send svg{width:18px;height:18px}
.foot{text-align:center;font-size:11px;color:var(--muted);padding:4px 0 0}
@media (max-width:480px){
.panel{inset:0 !important;width:100%;height:100%;border-radius:0;bottom:0}
.launcher{bottom:16px}.right .launcher{right:16px}.left .launcher{left:16px}
.k.open .launcher{display:none}
textarea{font-size:16px}}
@media (prefers-reduced-motion:reduce){*{animation:none !important;transition:none !important}}
`;

  // ---- DOM helpers (text only: no HTML parsing anywhere) ------------------------------------

  /** Element `tag` with attributes (`on*` functions become listeners) and children. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c != null) el.append(c);
    return el;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  const ICONS = {
    chat: "M4 5.5A2.5 2.5 0 0 1 6.5 3h11A2.5 2.5 0 0 1 20 5.5v8a2.5 2.5 0 0 1-2.5 2.5H10l-4.2 3.4A.5.5 0 0 1 5 19v-3h.5A2.5 2.5 0 0 1 4 13.5z",
    close: "M6 6l12 12M18 6L6 18",
    down: "M6 9l6 6 6-6",
    send: "M4 12l16-8-6 16-2.5-6.5z",
    clip: "M20 11.5l-7.8 7.8a5 5 0 0 1-7.1-7.1l8.5-8.5a3.3 3.3 0 0 1 4.7 4.7l-8.5 8.5a1.7 1.7 0 0 1-2.4-2.4l7.8-7.8",
    doc: "M7 3h7l5 5v13H7zM14 3v5h5",
    agent: "M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm-7 8a7 7 0 0 1 14 0",
  };
  function icon(name, filled, cls) {
    const svg = document.createElementNS(SVG_NS, "svg");
    if (cls) svg.setAttribute("class", cls);
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const p = document.createElementNS(SVG_NS, "path");
    p.setAttribute("d", ICONS[name]);
    p.setAttribute("fill", filled ? "currentColor" : "none");
    p.setAttribute("stroke", filled ? "none" : "currentColor");
    p.setAttribute("stroke-width", "2");
    p.setAttribute("stroke-linecap", "round");
    p.setAttribute("stroke-linejoin", "round");
    svg.append(p);
    return svg;
  }

  /** URLs a message may link to or show: web, and data: images. Never javascript: and co. */
  function safeUrl(url, image) {
    try {
      const u = new URL(url, API);
      if (u.protocol === "https:" || u.protocol === "http:" || u.protocol === "blob:") return u.href;
      if (image && u.protocol === "data:" && /^data:image\/(png|jpeg|gif|webp);/i.test(url)) return url;
    } catch (_) {
      /* not a URL */
    }
    return null;
  }

  /** Text with its http(s) links made clickable, as text nodes and <a> elements. */
  function linkified(text) {
    const out = document.createDocumentFragment();
    const re = /\bhttps?:\/\/[^\s<>"')\]]+[^\s<>"')\].,;:!?，。]/g;
    let last = 0;
    for (const m of text.matchAll(re)) {
      out.append(text.slice(last, m.index));
      const href = safeUrl(m[0]);
      out.append(href ? h("a", { href, target: "_blank", rel: "noopener noreferrer nofollow", text: m[0] }) : m[0]);
      last = m.index + m[0].length;
    }
    out.append(text.slice(last));
    return out;
  }

  // ---- State -----------------------------------------------------------------------------

  const store = {
    get(k) {
      try {
        return localStorage.getItem(k);
      } catch (_) {
        return null; // storage blocked (third-party iframe, privacy mode): the chat still works
      }
    },
    set(k, v) {
      try {
        if (v == null) localStorage.removeItem(k);
        else localStorage.setItem(k, v);
      } catch (_) {
        /* see get */
      }
    },
  };

  const state = {
    open: false,
    identity: null, // {id, hash} from identify()
    attributes: {},
    conversation: null, // id
    status: "bot",
    lastSeq: 0,
    rendered: new Map(), // seq -> <li>
    outbox: [], // {text, el, after, tries}
    sending: false,
    stream: null, // {el, text, after} while a reply streams in
    live: null, // WebSocket or EventSource
    liveKind: "ws",
    wsFailures: 0,
    backoff: 0,
    reconnectTimer: 0,
    lastTyping: 0,
    typingTimer: 0,
    unread: 0,
    files: [], // {file, url}
    attachments: null, // null unknown, true/false after the probe
    listeners: { open: new Set(), close: new Set(), message: new Set(), status: new Set() },
  };

  const convKey = () => `kefu:${TENANT}:${state.identity ? "v:" + state.identity.id : "anon"}:conversation`;
  const ratedKey = (id) => `kefu:${TENANT}:rated:${id}`;

  function emit(event, detail) {
    for (const fn of state.listeners[event]) {
      try {
        fn(detail);
      } catch (e) {
        console.error("Kefu: a %s listener threw", event, e);
      }
    }
  }

  /** Headers every visitor request carries: the tenant, and the visitor's proof if any. */
  function headers(json) {
    const hd = { "X-Kefu-Tenant": TENANT };
    if (json) hd["Content-Type"] = "application/json";
    if (state.identity) {
      hd["X-Kefu-Visitor-Id"] = state.identity.id;
      hd["X-Kefu-Visitor-Hash"] = state.identity.hash;
    }
    return hd;
  }
  const convUrl = (suffix) =>
    `${API}/api/v1/conversations/${encodeURIComponent(state.conversation)}${suffix || ""}`;

  async function errorOf(resp) {
    try {
      const body = await resp.json();
      return { status: resp.status, code: body.error?.code || "http_" + resp.status, message: body.error?.message || resp.statusText, body };
    } catch (_) {
      return { status: resp.status, code: "http_" + resp.status, message: resp.statusText || "HTTP " + resp.status };
    }
  }

  // ---- UI --------------------------------------------------------------------------------

  // Its own element name, so the page's `div { … }` rules never match it, and every property
  // reset inline with !important, so not even `body > * { transform: … }` moves it.
  const host = h("kefu-widget", { "data-version": VERSION });
  host.style.setProperty("all", "initial", "important");
  // Open, not closed: the isolation that matters is CSS (which a shadow root gives either way);
  // a closed root would only hide the widget from accessibility tooling and tests.
  const shadow = host.attachShadow({ mode: "open" });
  // A constructed stylesheet is not an inline <style>, so a host page whose CSP forbids
  // inline styles still shows the widget styled.
  if ("adoptedStyleSheets" in shadow && typeof CSSStyleSheet.prototype.replaceSync === "function") {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(STYLE);
    shadow.adoptedStyleSheets = [sheet];
  } else {
    shadow.append(h("style", { text: STYLE }));
  }

  const position = opts.position === "left" ? "left" : "right";
  const ui = {};
  ui.badge = h("span", { class: "badge", hidden: true, "aria-hidden": "true" });
  ui.launcher = h(
    "button",
    {
      class: "launcher",
      type: "button",
      "aria-label": t("open"),
      "aria-expanded": "false",
      "aria-controls": "kefu-panel",
      "aria-haspopup": "dialog",
      onclick: () => (state.open ? close() : open()),
    },
    icon("chat", true, "i-chat"),
    icon("down", false, "i-down"),
    ui.badge,
  );
  ui.title = h("h2", { id: "kefu-title", text: opts.title || t("title") });
  ui.sub = h("span", { text: t("sub_bot") });
  ui.human = h("button", { class: "human", type: "button", hidden: true, onclick: askForPerson }, icon("agent"), t("human"));
  ui.banner = h("div", { class: "banner", role: "status" });
  ui.log = h("ol", { class: "log", role: "log", "aria-live": "polite", "aria-label": t("log"), tabindex: "0" });
  ui.typingText = h("span");
  ui.typing = h("div", { class: "typing", hidden: true }, h("span", { class: "dots", "aria-hidden": "true" }, h("i"), h("i"), h("i")), ui.typingText);
  ui.stars = h("div", { class: "stars", role: "group", "aria-label": t("rate") });
  for (let n = 1; n <= 5; n++) {
    ui.stars.append(h("button", { type: "button", "aria-label": t("star", { n }), onclick: () => rate(n), text: "★" }));
  }
  ui.rateText = h("div", { text: t("rate") });
  ui.rating = h("div", { class: "rating", hidden: true }, ui.rateText, ui.stars);
  ui.files = h("div", { class: "files" });
  ui.fileError = h("div", { class: "ferr", role: "alert" });
  ui.picker = h("input", { type: "file", accept: FILE_ACCEPT, multiple: true, hidden: true, tabindex: "-1", onchange: onPick });
  ui.attach = h("button", { class: "icon attach", type: "button", hidden: true, "aria-label": t("attach"), title: t("attach"), onclick: () => ui.picker.click() }, icon("clip"));
  ui.input = h("textarea", { rows: "1", "aria-label": t("input"), placeholder: t("placeholder"), maxlength: "16000", oninput: onInput, onkeydown: onInputKey });
  ui.send = h("button", { class: "send", type: "submit", "aria-label": t("send"), title: t("send"), disabled: true }, icon("send", true));
  ui.form = h("form", { onsubmit: onSubmit }, ui.files, ui.fileError, h("div", { class: "row" }, ui.attach, ui.picker, ui.input, ui.send), h("div", { class: "foot", text: t("powered") }));
  ui.panel = h(
    "div",
    { class: "panel", id: "kefu-panel", role: "dialog", "aria-modal": "false", "aria-labelledby": "kefu-title", hidden: true },
    h(
      "header",
      {},
      h("div", { class: "avatar" }, icon("agent")),
      h("div", { class: "who" }, ui.title, h("p", { class: "sub" }, h("span", { class: "dot" }), ui.sub)),
      h("button", { class: "icon", type: "button", "aria-label": t("close"), title: t("close"), onclick: () => close() }, icon("down")),
    ),
    ui.banner,
    ui.log,
    ui.typing,
    h("div", { class: "actions" }, ui.human),
    ui.rating,
    ui.form,
  );
  ui.root = h("div", { class: `k ${position}`, lang: LANG === "zh" ? "zh-CN" : "en", "data-status": "bot" }, ui.launcher, ui.panel);
  shadow.append(ui.root);
  // Escape closes, wherever the focus is in the widget (the panel or the launcher).
  ui.root.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.open && !e.isComposing) {
      e.preventDefault();
      e.stopPropagation();
      close();
    }
  });

  // Colours: the accent from data-color, with text on it that stays readable.
  function applyColor(color) {
    if (!color) return;
    if (!CSS_SUPPORTS("color", color)) {
      console.error(`Kefu: data-color ${JSON.stringify(color)} is not a CSS colour; using the default`);
      return;
    }
    ui.root.style.setProperty("--a", color);
    const probe = h("span");
    probe.style.color = color;
    ui.root.append(probe);
    const rgb = (getComputedStyle(probe).color.match(/[\d.]+/g) || []).map(Number);
    probe.remove();
    if (rgb.length >= 3) {
      const lum = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255;
      ui.root.style.setProperty("--on-a", lum > 0.6 ? "#111827" : "#fff");
    }
  }
  const CSS_SUPPORTS = (p, v) => (window.CSS && CSS.supports ? CSS.supports(p, v) : true);

  // Light or dark: data-theme wins, otherwise the visitor's system setting, followed live.
  const darkQuery = window.matchMedia ? matchMedia("(prefers-color-scheme: dark)") : null;
  function applyTheme() {
    const forced = opts.theme === "dark" || opts.theme === "light" ? opts.theme : null;
    ui.root.dataset.theme = forced || (darkQuery && darkQuery.matches ? "dark" : "light");
  }
  darkQuery && darkQuery.addEventListener && darkQuery.addEventListener("change", applyTheme);
  applyTheme();

  function scrollToEnd() {
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  function setBanner(text) {
    if (ui.banner.textContent !== (text || "")) ui.banner.textContent = text || "";
  }

  /** The list item for one message: a label for screen readers, the parts, as text. */
  function messageItem(role, parts) {
    const cls = role === "visitor" ? "visitor" : role === "agent" ? "agent" : role === "system" ? "system" : "bot";
    const label = { visitor: t("you"), agent: t("agent"), system: t("notice") }[role] || t("bot");
    const bubble = h("div", { class: "bubble" });
    fillParts(bubble, parts);
    const li = h("li", { class: "msg " + cls });
    if (role === "agent") li.append(h("span", { class: "name", "aria-hidden": "true", text: label }));
    li.prepend(h("span", { class: "sr", text: label + ": " }));
    li.append(bubble);
    return li;
  }

  function fillParts(bubble, parts) {
    bubble.textContent = "";
    for (const p of parts || []) {
      const name = String(p.name || "");
      if (p.type === "text") bubble.append(linkified(String(p.text)));
      else if (p.type === "image") {
        const src = fileUrl(p.url, true);
        if (src) bubble.append(h("a", { href: src, target: "_blank", rel: "noopener noreferrer" }, h("img", { src, alt: name || t("image"), loading: "lazy" })));
      } else if (p.type === "audio") {
        const src = fileUrl(p.url);
        if (src) bubble.append(h("audio", { src, controls: true, preload: "metadata", "aria-label": name || "audio" }));
      } else if (p.type === "document") {
        const href = fileUrl(p.url);
        const label = name || "file";
        bubble.append(href ? h("a", { class: "doc", href, target: "_blank", rel: "noopener noreferrer" }, icon("doc"), label) : h("span", { class: "doc" }, icon("doc"), label));
      }
    }
  }

  /** A file's URL for <img>, <audio> or a link: Kefu's own files take the tenant in the query
   * (an element cannot send headers); the file id is what grants reading. */
  function fileUrl(url, image) {
    const safe = url && safeUrl(url, image);
    if (!safe) return null;
    const u = new URL(safe);
    if (u.origin === API && u.pathname.startsWith("/api/v1/attachments/")) {
      u.searchParams.set("tenant", TENANT);
      return u.href;
    }
    return safe;
  }

  /** The sources a bot's answer cites, under it: `[n]` as the answer shows it, the title
   * (linked when the source has an http(s) URL) and the section, all as text. */
  function setSources(li, citations) {
    li.querySelector(".sources")?.remove();
    if (!Array.isArray(citations) || !citations.length) return;
    const list = h("ul", { class: "sources", "aria-label": t("sources") });
    for (const c of citations.slice(0, 20)) {
      const title = String(c.title || c.source_id || "");
      const href = sourceUrl(c.url);
      list.append(h("li", {},
        h("span", { class: "src-n", text: `[${Number(c.number) || ""}]` }),
        href ? h("a", { href, target: "_blank", rel: "noopener noreferrer nofollow", text: title }) : h("span", { class: "src-t", text: title }),
        c.heading ? h("span", { class: "src-h", text: String(c.heading) }) : null));
    }
    li.append(list);
  }

  /** A source's link: only an absolute http(s) URL. */
  function sourceUrl(url) {
    try {
      const u = new URL(String(url || ""));
      return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
    } catch (_) {
      return null;
    }
  }

  const textOf = (parts) => (parts || []).filter((p) => p.type === "text").map((p) => p.text).join("\n");

  /** Puts a stored message in its place (by seq), once: live updates, catch-up, the
   * transcript and the chat answer may all bring the same message. `history` (the
   * transcript) neither counts as unread nor fires `message` for the page. */
  function upsert(m, history) {
    if (!m || typeof m.seq !== "number" || m.role === "note") return;
    if (state.rendered.has(m.seq)) return;
    let li = null;
    if (m.role === "visitor") {
      // Our own message, sent but not yet acknowledged: adopt its bubble.
      const text = textOf(m.parts);
      const item = state.outbox.find((o) => !o.seq && o.text === text && m.seq > o.after);
      if (item) {
        item.seq = m.seq;
        li = item.el;
        li.classList.remove("pending", "failed");
        li.querySelector(".state")?.remove();
        // The stored files in place of the local previews.
        if (item.files.length) {
          fillParts(li.querySelector(".bubble"), m.parts);
          for (const f of item.files) if (f.url) URL.revokeObjectURL(f.url);
        }
      }
    } else if (m.role === "bot" && state.stream && m.seq > state.stream.after) {
      // The reply being streamed, stored: adopt the streaming bubble.
      li = state.stream.el;
      if (li) {
        li.classList.remove("streaming");
        li.removeAttribute("aria-busy");
        fillParts(li.querySelector(".bubble"), m.parts);
      }
      state.stream.adopted = true;
    }
    if (!li) li = messageItem(m.role, m.parts);
    if (m.role === "bot") setSources(li, m.citations);
    li.dataset.seq = m.seq;
    state.rendered.set(m.seq, li);
    // In order: before the first rendered message with a larger seq, else before the
    // messages still being sent or streamed, else at the end.
    let before = null;
    for (const el of ui.log.children) {
      const seq = Number(el.dataset.seq || 0);
      const unsent = !seq && el !== li && /\b(pending|failed|streaming)\b/.test(el.className);
      if ((seq && seq > m.seq) || unsent) {
        before = el;
        break;
      }
    }
    if (li.parentNode !== ui.log || (before && li.nextSibling !== before)) ui.log.insertBefore(li, before);
    state.lastSeq = Math.max(state.lastSeq, m.seq);
    if (m.role === "agent") hideTyping();
    scrollToEnd();
    if (history) return;
    if (m.role !== "visitor" && !state.open) setUnread(state.unread + 1);
    emit("message", { seq: m.seq, role: m.role, text: textOf(m.parts), parts: m.parts, created_at: m.created_at });
  }

  function setUnread(n) {
    state.unread = n;
    ui.badge.hidden = n === 0;
    ui.badge.textContent = n > 9 ? "9+" : String(n);
    const label = state.open ? t("close") : n ? `${t("open")} (${t("unread", { n })})` : t("open");
    ui.launcher.setAttribute("aria-label", label);
  }

  function setStatus(s) {
    if (!s || !s.status) return;
    const changed = s.status !== state.status;
    state.status = s.status;
    ui.root.dataset.status = s.status;
    ui.sub.textContent = {
      waiting_for_agent: t("sub_waiting"),
      with_agent: t("sub_agent"),
      resolved: t("sub_resolved"),
    }[s.status] || t("sub_bot");
    ui.human.hidden = s.status !== "bot" || !state.conversation;
    const rated = state.conversation && store.get(ratedKey(state.conversation));
    ui.rating.hidden = s.status !== "resolved" || !!rated;
    if (s.status !== "with_agent") hideTyping();
    if (changed) emit("status", { status: s.status, assignee: s.assignee ?? null, queue: s.queue ?? null });
  }

  function showTyping(text, ms) {
    ui.typingText.textContent = text;
    ui.typing.hidden = false;
    clearTimeout(state.typingTimer);
    if (ms) state.typingTimer = setTimeout(hideTyping, ms);
  }
  function hideTyping() {
    clearTimeout(state.typingTimer);
    ui.typing.hidden = true;
  }

  // ---- Open / close / keyboard -----------------------------------------------------------

  function open() {
    if (state.open) return;
    state.open = true;
    ui.panel.hidden = false;
    ui.root.classList.add("open");
    ui.launcher.setAttribute("aria-expanded", "true");
    setUnread(0);
    scrollToEnd();
    ui.input.focus();
    probeAttachments();
    emit("open", {});
  }

  function close() {
    if (!state.open) return;
    // Focus goes back to the launcher only if it was in the widget (an API call from the
    // page must not pull the visitor's focus away from what they are doing).
    const focusInside = shadow.activeElement != null;
    state.open = false;
    ui.panel.hidden = true;
    ui.root.classList.remove("open");
    ui.launcher.setAttribute("aria-expanded", "false");
    setUnread(state.unread);
    if (focusInside) ui.launcher.focus();
    emit("close", {});
  }

  function onInputKey(e) {
    // Enter sends, Shift+Enter is a new line; never while an IME is composing (Chinese input).
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      ui.form.requestSubmit ? ui.form.requestSubmit() : onSubmit(e);
    }
  }

  function onInput() {
    ui.input.style.height = "auto";
    ui.input.style.height = Math.min(ui.input.scrollHeight + 2, 120) + "px";
    updateSend();
    announceTyping();
  }

  function updateSend() {
    ui.send.disabled = !ui.input.value.trim() && state.files.length === 0;
  }

  // ---- Sending ---------------------------------------------------------------------------

  function onSubmit(e) {
    e.preventDefault();
    const text = ui.input.value.trim();
    const files = state.files.splice(0);
    if (!text && files.length === 0) return;
    ui.input.value = "";
    ui.input.style.height = "";
    renderFiles();
    updateSend();
    send(text, files);
  }

  /** Queues a message (text, files or both); the outbox sends one at a time, so the
   * visitor's order is kept. Until it is stored the bubble shows local previews. */
  function send(text, files = []) {
    const parts = text ? [{ type: "text", text }] : [];
    for (const f of files) {
      const kind = f.type.startsWith("image/") ? "image" : f.type.startsWith("audio/") ? "audio" : "document";
      parts.push({ type: kind, url: kind === "document" ? null : f.url, name: f.file.name });
    }
    const el = messageItem("visitor", parts);
    el.classList.add("pending");
    ui.log.append(el);
    scrollToEnd();
    state.outbox.push({ text, files, el, after: state.lastSeq, tries: 0, seq: 0 });
    pump();
  }

  async function pump() {
    if (state.sending) return;
    // The first unsent message, always: while it waits (rate limit, offline), later ones wait
    // behind it, so they are never stored out of the order they were written in.
    const item = state.outbox.find((o) => !o.seq);
    if (!item || item.waiting) return;
    state.sending = true;
    try {
      await deliver(item);
    } finally {
      state.sending = false;
    }
    state.outbox = state.outbox.filter((o) => !o.seq && !o.dropped);
    pump();
  }

  /** Shows why a message is not sent; it is resent after `retryAfterMs`, when the visitor
   * says (Retry), or, if `final`, never. */
  function markFailed(item, text, retryAfterMs, final) {
    item.el.classList.remove("pending");
    item.el.classList.add("failed");
    item.el.querySelector(".state")?.remove();
    const again = () => {
      if (!item.waiting) return; // the timer, the network and the Retry button may all call
      clearTimeout(item.timer);
      item.waiting = false;
      item.el.classList.remove("failed");
      item.el.classList.add("pending");
      item.el.querySelector(".state")?.remove();
      pump();
    };
    const retry = retryAfterMs == null && !final ? h("button", { type: "button", onclick: again, text: t("retry") }) : null;
    item.el.append(h("div", { class: "state", role: "alert" }, h("span", { text }), retry));
    item.dropped = !!final;
    item.waiting = !final;
    if (retryAfterMs != null) item.timer = setTimeout(again, retryAfterMs);
    return again;
  }

  /** Sends one queued message and reads its streamed answer. */
  async function deliver(item) {
    item.tries++;
    // A retry after a lost connection: the message may have been stored before the
    // connection died. The transcript says; never send it twice.
    if (item.tries > 1 && state.conversation && (await catchUp()) && item.seq) return;
    if (!(await uploadFiles(item))) return;
    const ids = item.files.map((f) => f.id);
    if (!item.text && ids.length === 0) {
      // Every file was refused (and said why): there is nothing left to send.
      item.el.remove();
      item.dropped = true;
      return;
    }
    const body = { stream: true };
    if (item.text) body.message = item.text;
    if (ids.length) body.attachments = ids;
    if (state.conversation) body.conversation_id = state.conversation;
    if (state.identity) body.visitor = { id: state.identity.id, hash: state.identity.hash };
    let resp;
    try {
      resp = await fetch(`${API}/api/v1/chat`, { method: "POST", headers: headers(true), body: JSON.stringify(body) });
    } catch (_) {
      // Network down: wait for it to come back, then retry (after checking the transcript).
      setBanner(navigator.onLine === false ? t("offline") : t("reconnecting"));
      const again = markFailed(item, t("failed"));
      whenOnline(again);
      return;
    }
    if (!resp.ok) return refused(item, resp);
    await readStream(item, resp);
  }

  async function refused(item, resp) {
    const err = await errorOf(resp);
    const wait = Math.max(1, Number(resp.headers.get("Retry-After")) || 5);
    if (err.code === "rate_limited") {
      // Nothing was stored: keep the message and send it when the limit allows.
      markFailed(item, t("rate_limited", { s: wait }), wait * 1000);
      return;
    }
    if (err.code === "conversation_not_found" || err.code === "conversation_not_yours" || err.code === "conversation_full") {
      // The stored conversation is gone, not this visitor's, or full: start a new one.
      forgetConversation();
      item.tries = 0;
      return deliver(item);
    }
    if (err.body && err.body.message) {
      // Stored, but not answered (quota): the message stands; say why there is no reply.
      if (err.body.conversation_id) adoptConversation(err.body.conversation_id);
      upsert(err.body.message);
      systemNote(err.code === "quota_exceeded" ? t("busy", { s: wait }) : t("error", { msg: err.message }), true);
      return;
    }
    if (err.status >= 400 && err.status < 500) {
      // Sending it again would be refused again (too long, not signed in, …): say why, and
      // let the messages behind it go.
      const text = err.code === "identity_required" || err.code === "invalid_identity" ? t("identity") : t("error", { msg: err.message });
      markFailed(item, text, null, true);
      return;
    }
    markFailed(item, t("error", { msg: err.message }));
  }

  async function readStream(item, resp) {
    let acceptedSeq = 0;
    try {
      for await (const ev of sseEvents(resp)) {
        if (ev.event === "accepted") {
          adoptConversation(ev.data.conversation_id);
          acceptedSeq = ev.data.message.seq;
          upsert(ev.data.message);
          startStream(acceptedSeq);
        } else if (ev.event === "delta") {
          appendDelta(ev.data.text || "");
        } else if (ev.event === "done") {
          const d = ev.data;
          if (d.reply) upsert(d.reply);
          endStream();
          if (d.status) setStatus({ status: d.status });
        } else if (ev.event === "error") {
          endStream();
          systemNote(ev.data.error?.code === "provider_stream_interrupted" ? t("interrupted") : t("error", { msg: ev.data.error?.message || "" }), true);
        }
      }
    } catch (_) {
      // The connection broke mid-answer. The visitor's message is stored if it was
      // accepted; the reply, if the bot finished it, arrives through the live connection.
      endStream();
      if (!acceptedSeq) {
        const again = markFailed(item, t("failed"));
        whenOnline(again);
      }
      reconnectSoon();
    }
    if (!acceptedSeq && !item.seq && !item.waiting) markFailed(item, t("error", { msg: "no answer" }));
  }

  function startStream(after) {
    state.stream = { el: null, text: "", after, adopted: false };
    showTyping(t("thinking"));
  }

  function appendDelta(text) {
    const s = state.stream;
    if (!s || s.adopted) return;
    if (!s.el) {
      hideTyping();
      s.el = messageItem("bot", []);
      s.el.classList.add("streaming");
      s.el.setAttribute("aria-busy", "true");
      ui.log.append(s.el);
    }
    s.text += text;
    s.el.querySelector(".bubble").textContent = s.text;
    scrollToEnd();
  }

  function endStream() {
    const s = state.stream;
    state.stream = null;
    if (ui.typingText.textContent === t("thinking")) hideTyping();
    if (s && s.el && !s.adopted) s.el.remove(); // an answer that never finished is not shown
    if (s && s.el) s.el.removeAttribute("aria-busy");
  }

  function systemNote(text, error) {
    const li = messageItem("system", [{ type: "text", text }]);
    if (error) li.classList.add("error");
    ui.log.append(li);
    scrollToEnd();
  }

  /** Server-Sent Events from a fetch() response body, as {event, data} objects. */
  async function* sseEvents(resp) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (!line || line[0] === ":") continue;
          const c = line.indexOf(":");
          const field = c < 0 ? line : line.slice(0, c);
          const value = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
        }
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
      }
    }
  }

  function whenOnline(fn) {
    const go = () => {
      window.removeEventListener("online", go);
      clearTimeout(timer);
      fn();
    };
    window.addEventListener("online", go);
    // `online` does not fire when only the server was unreachable: also retry with backoff.
    const timer = setTimeout(go, nextBackoff());
  }

  function nextBackoff() {
    state.backoff = Math.min(30000, state.backoff ? state.backoff * 2 : 1000);
    return state.backoff / 2 + Math.random() * (state.backoff / 2);
  }

  // ---- The conversation: id, transcript, live updates ------------------------------------

  function adoptConversation(id) {
    if (!id || id === state.conversation) return;
    state.conversation = id;
    store.set(convKey(), id);
    ui.human.hidden = state.status !== "bot";
    connectLive();
  }

  function forgetConversation() {
    store.set(convKey(), null);
    disconnectLive();
    state.conversation = null;
    state.lastSeq = 0;
    state.rendered.clear();
    state.status = "bot";
    ui.log.textContent = "";
    greet();
    // Messages still on their way stay in view; they will start the new conversation.
    for (const o of state.outbox) if (!o.seq) ui.log.append(o.el);
    setStatus({ status: "bot" });
  }

  function greet() {
    if (ui.log.querySelector(".greeting")) return;
    const li = messageItem("bot", [{ type: "text", text: t("greeting") }]);
    li.classList.add("greeting");
    ui.log.append(li);
  }

  /** Loads what the conversation holds after our cursor; true when it answered. */
  async function catchUp() {
    if (!state.conversation) return false;
    let resp;
    try {
      resp = await fetch(convUrl(), { headers: headers(false) });
    } catch (_) {
      return false;
    }
    if (resp.status === 404 || resp.status === 403) {
      forgetConversation();
      return false;
    }
    if (!resp.ok) return false;
    const c = await resp.json();
    for (const m of c.messages || []) upsert(m, true);
    setStatus(c);
    return true;
  }

  function liveUrl(ws) {
    const q = new URLSearchParams({ tenant: TENANT, after: String(state.lastSeq) });
    if (state.identity) {
      q.set("visitor_id", state.identity.id);
      q.set("visitor_hash", state.identity.hash);
    }
    const base = ws ? API.replace(/^http/, "ws") : API;
    return `${base}/api/v1/conversations/${encodeURIComponent(state.conversation)}/events?${q}`;
  }

  /** Follows the conversation live: a WebSocket, or Server-Sent Events where sockets fail.
   * Each (re)connection starts from our cursor, so nothing is missed; `upsert` drops what
   * we already have, so nothing is shown twice. */
  function connectLive() {
    if (!state.conversation || state.live) return;
    clearTimeout(state.reconnectTimer);
    const onUpdate = (u) => {
      state.backoff = 0;
      if (u.event === "message") upsert(u.data);
      else if (u.event === "status") setStatus(u.data);
      else if (u.event === "typing" && u.data.who === "agent") {
        const left = Number(u.data.until_ms) - Date.now();
        // The expiry is the server's clock; with a skewed clock keep the default lifetime.
        showTyping(t("typing_agent"), left > 0 && left <= TYPING_MAX_MS ? left : TYPING_MAX_MS);
      }
    };
    const lost = (conn) => {
      if (state.live !== conn) return;
      state.live = null;
      reconnectSoon();
    };
    if (state.liveKind === "ws" && window.WebSocket) {
      const ws = new WebSocket(liveUrl(true));
      let opened = false;
      ws.onopen = () => {
        opened = true;
        state.wsFailures = 0;
        setBanner("");
      };
      ws.onmessage = (e) => {
        try {
          onUpdate(JSON.parse(e.data));
        } catch (err) {
          console.warn("Kefu: bad live update", err);
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
      const on = (name) =>
        es.addEventListener(name, (e) => {
          state.backoff = 0;
          setBanner("");
          onUpdate({ event: name, data: JSON.parse(e.data) });
        });
      ["message", "status", "typing"].forEach(on);
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
    if (conn) conn.close();
  }

  function reconnectSoon() {
    if (!state.conversation) return;
    clearTimeout(state.reconnectTimer);
    if (state.live) return;
    setBanner(navigator.onLine === false ? t("offline") : t("reconnecting"));
    state.reconnectTimer = setTimeout(connectLive, nextBackoff());
  }

  window.addEventListener("online", () => {
    // A socket that lived through the outage may be dead without knowing it: start over
    // from the cursor (catch-up drops what we already have).
    state.backoff = 0;
    disconnectLive();
    connectLive();
  });
  window.addEventListener("offline", () => setBanner(t("offline")));
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && !state.live) connectLive();
  });

  /** Tells the agent the visitor is typing, at most every few seconds. */
  function announceTyping() {
    const now = Date.now();
    if (!state.conversation || now - state.lastTyping < TYPING_EVERY_MS || !ui.input.value.trim()) return;
    // Only a human reads it: while the bot owns the chat there is no one to tell.
    if (state.status !== "with_agent" && state.status !== "waiting_for_agent") return;
    state.lastTyping = now;
    const ws = state.live;
    if (ws && ws instanceof WebSocket && ws.readyState === WebSocket.OPEN) ws.send('{"type":"typing"}');
    else fetch(convUrl("/typing"), { method: "POST", headers: headers(true), body: '{"who":"visitor"}' }).catch(() => {});
  }

  // ---- Actions: a person, a rating --------------------------------------------------------

  async function askForPerson() {
    if (!state.conversation) return;
    ui.human.disabled = true;
    try {
      const resp = await fetch(convUrl("/handoff"), { method: "POST", headers: headers(true), body: "{}" });
      if (resp.ok) {
        const c = await resp.json();
        for (const m of c.messages || []) upsert(m);
        setStatus(c);
      } else {
        const err = await errorOf(resp);
        if (err.code === "invalid_state") await catchUp();
        else systemNote(t("error", { msg: err.message }), true);
      }
    } catch (_) {
      systemNote(t("reconnecting"), true);
    } finally {
      ui.human.disabled = false;
    }
  }

  async function rate(score) {
    if (!state.conversation) return;
    [...ui.stars.children].forEach((b, i) => b.classList.toggle("on", i < score));
    try {
      const resp = await fetch(convUrl("/csat"), { method: "POST", headers: headers(true), body: JSON.stringify({ score }) });
      if (!resp.ok) throw new Error((await errorOf(resp)).message);
      store.set(ratedKey(state.conversation), String(score));
      ui.rateText.textContent = t("thanks");
      ui.stars.remove();
    } catch (e) {
      ui.rateText.textContent = t("error", { msg: e.message });
    }
  }

  // ---- Attachments ------------------------------------------------------------------------

  /** Shows the attach button only if this Kefu takes uploads. It asks with `OPTIONS`, which
   * calls nothing: a deployment without the route answers `404 not_found`. */
  async function probeAttachments() {
    if (state.attachments !== null) return;
    state.attachments = false;
    try {
      const resp = await fetch(`${API}/api/v1/attachments`, { method: "OPTIONS" });
      state.attachments = resp.status !== 404;
    } catch (_) {
      state.attachments = false;
    }
    ui.attach.hidden = !state.attachments;
  }

  const typeOf = (file) => file.type || FILE_EXT[(file.name.split(".").pop() || "").toLowerCase()] || "";

  function onPick() {
    const picked = [...ui.picker.files];
    ui.picker.value = "";
    const errors = [];
    for (const file of picked) {
      if (state.files.length >= MAX_FILES) {
        errors.push(t("too_many", { n: MAX_FILES }));
        break;
      }
      const type = typeOf(file);
      const limit = (FILE_KINDS.find(([re]) => re.test(type)) || [])[1];
      if (!limit) errors.push(t("bad_type", { name: file.name }));
      else if (file.size > limit * 1048576) errors.push(t("too_big", { name: file.name, mb: limit }));
      else state.files.push({ file, type, id: null, url: /^(image|audio)\//.test(type) ? URL.createObjectURL(file) : null });
    }
    ui.fileError.textContent = errors.join(" ");
    renderFiles();
    updateSend();
  }

  function renderFiles() {
    ui.files.textContent = "";
    state.files.forEach((f, i) => {
      const remove = () => {
        const [gone] = state.files.splice(i, 1);
        if (gone.url) URL.revokeObjectURL(gone.url);
        renderFiles();
        updateSend();
        ui.input.focus();
      };
      ui.files.append(
        h(
          "div",
          { class: "file" },
          f.url && f.type.startsWith("image/") ? h("img", { src: f.url, alt: "" }) : icon("doc"),
          h("span", { text: f.file.name }),
          h("button", { type: "button", "aria-label": t("remove", { name: f.file.name }), onclick: remove, text: "×" }),
        ),
      );
    });
  }

  /** Uploads the message's files not uploaded yet (`POST /api/v1/attachments?name=`, the raw
   * bytes). A refused file is dropped with the reason shown; false when the message must
   * wait (rate limit, network) and will be tried again. */
  async function uploadFiles(item) {
    for (const f of [...item.files]) {
      if (f.id) continue;
      let resp;
      try {
        const hd = headers(false);
        hd["Content-Type"] = f.type || "application/octet-stream";
        resp = await fetch(`${API}/api/v1/attachments?name=${encodeURIComponent(f.file.name)}`, { method: "POST", headers: hd, body: f.file });
      } catch (_) {
        setBanner(navigator.onLine === false ? t("offline") : t("reconnecting"));
        whenOnline(markFailed(item, t("failed")));
        return false;
      }
      if (resp.ok) {
        f.id = (await resp.json()).id;
        continue;
      }
      const err = await errorOf(resp);
      if (err.code === "rate_limited") {
        const wait = Math.max(1, Number(resp.headers.get("Retry-After")) || 5);
        markFailed(item, t("rate_limited", { s: wait }), wait * 1000);
        return false;
      }
      if (err.code === "attachments_disabled") {
        state.attachments = false;
        ui.attach.hidden = true;
      }
      systemNote(err.code === "attachments_disabled" ? t("files_off") : t("upload_failed", { name: f.file.name, msg: err.message }), true);
      item.files.splice(item.files.indexOf(f), 1);
    }
    return true;
  }

  // ---- Host page API ----------------------------------------------------------------------

  function identify(who) {
    let next = null;
    if (who != null) {
      if (typeof who !== "object" || typeof who.id !== "string" || !who.id || typeof who.hash !== "string" || !/^[0-9a-f]{64}$/i.test(who.hash)) {
        throw new TypeError("Kefu.identify({id, hash}): id is the site's user id (a non-empty string), hash is hex(HMAC-SHA256(secret, id)) from the site's server");
      }
      next = { id: who.id, hash: who.hash.toLowerCase() };
    }
    const same = (state.identity && state.identity.id) === (next && next.id);
    state.identity = next;
    if (same) return;
    // Another visitor: their own conversation (or none), never the previous visitor's.
    disconnectLive();
    state.conversation = null;
    forgetConversationView();
    resume();
  }

  function forgetConversationView() {
    state.lastSeq = 0;
    state.rendered.clear();
    ui.log.textContent = "";
    greet();
    setStatus({ status: "bot" });
  }

  function setAttributes(attrs) {
    if (!attrs || typeof attrs !== "object" || Array.isArray(attrs)) {
      throw new TypeError("Kefu.setAttributes(object): pass an object of attributes, e.g. {plan: 'pro'}");
    }
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null) delete state.attributes[k];
      else state.attributes[k] = typeof v === "object" ? JSON.stringify(v) : String(v);
    }
  }

  function on(event, fn) {
    if (!state.listeners[event]) throw new TypeError(`Kefu.on: unknown event ${JSON.stringify(event)}; use open, close, message or status`);
    if (typeof fn !== "function") throw new TypeError("Kefu.on(event, fn): fn must be a function");
    state.listeners[event].add(fn);
    return () => state.listeners[event].delete(fn);
  }

  function off(event, fn) {
    state.listeners[event] && state.listeners[event].delete(fn);
  }

  /** Continues this visitor's stored conversation, if any: transcript, then live updates. */
  async function resume() {
    const id = store.get(convKey());
    if (!id) return;
    state.conversation = id;
    if (await catchUp()) connectLive();
    else if (state.conversation) reconnectSoon();
  }

  const api = Object.freeze({
    version: VERSION,
    open,
    close,
    toggle: () => (state.open ? close() : open()),
    identify,
    setAttributes,
    getAttributes: () => ({ ...state.attributes }),
    on,
    off,
    get conversationId() {
      return state.conversation;
    },
    get status() {
      return state.status;
    },
  });

  // Calls the page made before this script loaded (`window.Kefu = window.Kefu || {q: []}`,
  // then `Kefu.q.push(["identify", {...}])`) run now, in order.
  const queued = window.Kefu && Array.isArray(window.Kefu.q) ? window.Kefu.q : [];
  window.Kefu = api;

  function start() {
    document.body.append(host);
    applyColor(opts.color); // needs the widget in the document to read the computed colour
    greet();
    for (const [method, ...args] of queued) {
      try {
        if (method === "on" || method === "off" || method === "identify" || method === "setAttributes" || method === "open" || method === "close") api[method](...args);
        else console.error(`Kefu: unknown queued call ${JSON.stringify(method)}; use identify, setAttributes, on, off, open or close`);
      } catch (e) {
        console.error(e);
      }
    }
    if (!state.identity) resume(); // identify() above already resumed that visitor's chat
    window.dispatchEvent(new CustomEvent("kefu:ready", { detail: api }));
  }
  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start, { once: true });
})();
