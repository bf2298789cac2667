// Kefu admin pages: the operator's configuration, knowledge base, usage and access.
// Hand-written, no framework. Everything the tenant wrote (configuration, sources, questions,
// key ids) goes into the page with textContent or DOM APIs, never as HTML. The tenant key
// lives in sessionStorage only: it is gone when the tab closes or on sign-out.
(() => {
  "use strict";

  const KEY_STORE = "kefu.admin.key";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  const state = { key: null, tenant: null, doc: null, version: null, dirty: false, section: "config", metric: "cost", usage: null };

  // ---- DOM helpers ------------------------------------------------------------------------

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }
  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }
  const clear = (node) => node.replaceChildren();

  /** An API failure, shown as text with its code. */
  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      Object.assign(this, { status, code, field });
    }
  }

  function showError(err, where) {
    if (!state.key) return; // signed out meanwhile (e.g. the key in use was removed): the sign-in says why
    const box = where || $("errors");
    const code = err instanceof ApiError ? err.code : "error";
    const row = el("div", { class: "error" }, el("code", { text: code }), el("p", { text: err.message || String(err) }),
      el("button", { type: "button", class: "btn ghost small", text: "Dismiss", onclick: () => row.remove() }));
    box.append(row);
  }

  async function api(path, { method = "GET", body, key = state.key } = {}) {
    const headers = { authorization: `Bearer ${key}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    // A string is sent as it is (the editor's text, so the server's line numbers are ours).
    const payload = body === undefined || typeof body === "string" ? body : JSON.stringify(body);
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: payload, cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, "network_error", `Kefu could not be reached (${e.message}).`);
    }
    let json = null;
    try {
      json = await resp.json();
    } catch (_) {
      /* not JSON */
    }
    if (!resp.ok) {
      const e = json && json.error ? json.error : {};
      if (resp.status === 401 && key === state.key) signOut("Your key was not accepted. Sign in again.");
      const err = new ApiError(resp.status, e.code || `http_${resp.status}`, e.message || `${resp.status} ${resp.statusText}`, e.field || e.param);
      err.body = json; // e.g. a refused publish's test results
      throw err;
    }
    return json;
  }

  const fmtInt = (n) => new Intl.NumberFormat("en-US").format(n || 0);
  const fmtCost = (micros) => {
    const usd = (micros || 0) / 1e6;
    return "$" + usd.toFixed(usd === 0 || usd >= 1 ? 2 : usd >= 0.01 ? 3 : 4);
  };
  const fmtWhen = (iso) => {
    const d = new Date(iso);
    return isNaN(d) ? String(iso ?? "") : d.toLocaleString("en-US", { dateStyle: "medium", timeStyle: "short" });
  };

  function confirmAction(title, text, ok = "OK") {
    const dlg = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = ok;
    return new Promise((resolveConfirm) => {
      const done = (v) => {
        $("confirm-ok").onclick = $("confirm-cancel").onclick = dlg.oncancel = null;
        dlg.close();
        resolveConfirm(v);
      };
      $("confirm-ok").onclick = () => done(true);
      $("confirm-cancel").onclick = () => done(false);
      dlg.oncancel = () => done(false);
      dlg.showModal();
    });
  }

  async function copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (_) {
      button.textContent = "Select and copy";
    }
    setTimeout(() => (button.textContent = "Copy"), 1600);
  }

  // ---- Sign-in ----------------------------------------------------------------------------

  const tenantOf = (key) => /^kf-([A-Za-z0-9_-]{1,64})\.[^.]+$/.exec(key)?.[1] || null;

  function showSignin(message) {
    $("app").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("key-input").focus();
  }

  async function signIn(key, { fromStorage = false } = {}) {
    const tenant = tenantOf(key);
    if (!tenant) {
      if (fromStorage) sessionStorage.removeItem(KEY_STORE);
      return showSignin("That is not a tenant key: it looks like kf-<tenant>.<secret>.");
    }
    $("signin-button").disabled = true;
    try {
      const cfg = await api("/api/v1/config", { key });
      state.key = key;
      state.tenant = tenant;
      try {
        sessionStorage.setItem(KEY_STORE, key);
      } catch (_) {
        /* no storage: this tab keeps it in memory */
      }
      $("tenant-name").textContent = cfg.tenant || tenant;
      $("signin").hidden = true;
      $("app").hidden = false;
      $("key-input").value = "";
      loadConfig(cfg);
      loadVersions();
      showSection(state.section);
    } catch (e) {
      if (fromStorage) sessionStorage.removeItem(KEY_STORE);
      showSignin(e.status === 401 || e.status === 403 ? `The key was not accepted (${e.code}).` : `${e.code}: ${e.message}`);
    } finally {
      $("signin-button").disabled = false;
    }
  }

  function signOut(message) {
    state.key = state.tenant = state.doc = null;
    state.dirty = false;
    try {
      sessionStorage.removeItem(KEY_STORE);
    } catch (_) {
      /* no storage */
    }
    clear($("errors"));
    $("token-out").hidden = $("key-out").hidden = true;
    $("token-value").textContent = $("key-value").textContent = "";
    $("config-text").value = $("draft-text").value = "";
    state.suite = null;
    // Nothing of this tenant's stays in the page for whoever signs in next.
    for (const id of ["versions", "tests", "staged", "stage-remove-id", "publish-failing", "draft-live-text", "sources", "hits", "groups", "unanswered", "today", "chart", "by-route", "by-model", "keys", "agents", "agent-ids", "tenant-plugins", "installed-plugins", "try-id", "try-answer", "try-record"]) clear($(id));
    $("try-out").hidden = true;
    $("groups-status").textContent = "";
    state.plugins = null;
    resetAgentForm();
    state.usage = null;
    showSignin(message);
  }

  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("key-input").value.trim());
  });
  $("signout").addEventListener("click", () => signOut(""));

  // ---- Sections ---------------------------------------------------------------------------

  function showSection(name) {
    state.section = name;
    for (const tab of document.querySelectorAll(".section-tab")) tab.setAttribute("aria-selected", String(tab.dataset.section === name));
    for (const sec of document.querySelectorAll("section.section")) sec.hidden = sec.dataset.section !== name;
    if (name === "knowledge") loadKnowledge();
    if (name === "draft") loadDraft();
    if (name === "usage") loadUsage();
    if (name === "plugins") loadPlugins();
    if (name === "access") {
      renderKeys();
      renderAgents();
    }
  }
  for (const tab of document.querySelectorAll(".section-tab")) tab.addEventListener("click", () => showSection(tab.dataset.section));

  // ---- Configuration ----------------------------------------------------------------------

  const text = $("config-text");
  const LINE_HEIGHT = 20; // px, as in admin.css (.editor textarea, .gutter)

  function renderGutter() {
    const lines = text.value.split("\n").length;
    const numbers = [];
    for (let i = 1; i <= lines; i++) numbers.push(i);
    $("gutter").textContent = numbers.join("\n");
    syncScroll();
  }
  function syncScroll() {
    $("gutter").scrollTop = text.scrollTop;
    const mark = $("line-mark");
    if (!mark.hidden) mark.style.transform = `translateY(${(Number(mark.dataset.line) - 1) * LINE_HEIGHT - text.scrollTop}px)`;
  }
  text.addEventListener("input", () => {
    renderGutter();
    markLine(null);
    setDirty(true);
    fillShortcuts();
  });
  text.addEventListener("scroll", syncScroll);

  function setDirty(dirty) {
    state.dirty = dirty;
    $("config-status").textContent = dirty ? "Unsaved changes" : "Saved";
  }
  // Unsaved edits are not lost to a stray reload or a closed tab without a question.
  window.addEventListener("beforeunload", (e) => {
    if (state.key && state.dirty) e.preventDefault();
  });

  function markLine(line) {
    const mark = $("line-mark");
    if (!line) {
      mark.hidden = true;
      return;
    }
    mark.dataset.line = String(line);
    mark.hidden = false;
    syncScroll();
  }

  function loadConfig(cfg) {
    state.doc = cfg.config ?? {};
    state.version = cfg.version;
    text.value = JSON.stringify(state.doc, null, 2);
    $("config-version").textContent = cfg.builtin_default ? "Built-in default" : `Version ${cfg.version}`;
    setDirty(false);
    $("config-error").hidden = true;
    markLine(null);
    renderGutter();
    fillShortcuts();
    renderKeys();
    renderAgents();
  }

  /** The editor's document, or null (with the parse error shown) when it is not JSON. */
  function currentDoc() {
    try {
      const doc = JSON.parse(text.value);
      if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw new Error("the configuration is a JSON object");
      return doc;
    } catch (e) {
      const at = /position (\d+)/.exec(e.message);
      showFieldError("invalid_json", e.message, null, at ? Number(at[1]) : null);
      return null;
    }
  }

  function setDoc(doc) {
    text.value = JSON.stringify(doc, null, 2);
    renderGutter();
    setDirty(true);
  }

  function fillShortcuts() {
    let doc;
    try {
      doc = JSON.parse(text.value);
    } catch (_) {
      return;
    }
    if (document.activeElement !== $("sc-prompt")) $("sc-prompt").value = doc.system_prompt ?? "";
    if (document.activeElement !== $("sc-tz")) $("sc-tz").value = doc.business_hours?.timezone ?? "";
    $("sc-handoff").checked = doc.handoff?.enabled !== false;
  }
  function shortcut(edit) {
    const doc = currentDoc();
    if (!doc) return;
    edit(doc);
    setDoc(doc);
  }
  $("sc-prompt").addEventListener("input", () => shortcut((d) => (d.system_prompt = $("sc-prompt").value)));
  $("sc-tz").addEventListener("input", () =>
    shortcut((d) => {
      const tz = $("sc-tz").value.trim();
      // A schedule without weekly hours is closed all week: a new one starts with weekday
      // office hours, for the operator to adjust in the document.
      const weekday = [["09:00", "17:00"]];
      const fresh = { weekly: { mon: weekday, tue: weekday, wed: weekday, thu: weekday, fri: weekday } };
      if (tz) d.business_hours = { ...(d.business_hours || fresh), timezone: tz };
      else if (d.business_hours) delete d.business_hours.timezone;
    })
  );
  $("sc-handoff").addEventListener("change", () => shortcut((d) => (d.handoff = { ...(d.handoff || {}), enabled: $("sc-handoff").checked })));

  /**
   * Where each value of a JSON text starts, by field path (`a.b[2].c`): for an object member,
   * the offset of its key. A small parser of its own, since JSON.parse keeps no positions.
   */
  function jsonPaths(src) {
    const at = new Map();
    let i = 0;
    const ws = () => {
      while (i < src.length && " \t\r\n".includes(src[i])) i++;
    };
    const str = () => {
      const start = i++;
      while (i < src.length && src[i] !== '"') i += src[i] === "\\" ? 2 : 1;
      i++;
      return JSON.parse(src.slice(start, i));
    };
    const value = (path) => {
      ws();
      const c = src[i];
      if (c === "{") {
        i++;
        ws();
        if (src[i] === "}") return i++;
        for (;;) {
          ws();
          const keyAt = i;
          const k = str();
          const p = path ? `${path}.${k}` : k;
          at.set(p, keyAt);
          ws();
          i++; // :
          value(p);
          ws();
          if (src[i++] !== ",") return;
        }
      } else if (c === "[") {
        i++;
        ws();
        if (src[i] === "]") return i++;
        for (let n = 0; ; n++) {
          ws();
          at.set(`${path}[${n}]`, i);
          value(`${path}[${n}]`);
          ws();
          if (src[i++] !== ",") return;
        }
      } else if (c === '"') str();
      else while (i < src.length && !",}] \t\r\n".includes(src[i])) i++;
    };
    try {
      value("");
    } catch (_) {
      /* partial map for text that is not JSON */
    }
    return at;
  }

  /** The offset of `field` in the editor, or of its nearest parent that is there. */
  function fieldOffset(field) {
    const paths = jsonPaths(text.value);
    let p = field;
    while (p) {
      if (paths.has(p)) return paths.get(p);
      const cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
      p = cut > 0 ? p.slice(0, cut) : "";
    }
    return null;
  }

  /** The offset where line `line` (1-based) of the editor's text starts its content. */
  function lineOffset(line) {
    const lines = text.value.split("\n");
    if (line < 1 || line > lines.length) return null;
    let offset = 0;
    for (let i = 0; i < line - 1; i++) offset += lines[i].length + 1;
    return offset + (lines[line - 1].length - lines[line - 1].trimStart().length);
  }

  function goToOffset(offset) {
    const line = text.value.slice(0, offset).split("\n").length;
    const lineEnd = text.value.indexOf("\n", offset);
    text.focus();
    text.setSelectionRange(offset, lineEnd < 0 ? text.value.length : lineEnd);
    text.scrollTop = Math.max(0, (line - 1) * LINE_HEIGHT - text.clientHeight / 3);
    markLine(line);
  }

  function showFieldError(code, message, field, offset = null) {
    let target = offset;
    let label = field || "";
    if (field && field !== "$") target = fieldOffset(field);
    else {
      // The whole document (`$`): a parse error names a line of the text that was sent.
      const line = /line (\d+)/.exec(message);
      if (line) {
        target = lineOffset(Number(line[1]));
        label = `line ${line[1]}`;
      } else if (target !== null) label = `line ${text.value.slice(0, target).split("\n").length}`;
    }
    $("config-error").hidden = false;
    $("config-error-code").textContent = code;
    $("config-error-message").textContent = message;
    $("config-error-field").textContent = label;
    $("config-error-goto").hidden = target === null;
    $("config-error-goto").onclick = () => target !== null && goToOffset(target);
    if (target !== null) goToOffset(target);
    else markLine(null);
  }

  async function saveConfig() {
    const doc = currentDoc();
    if (!doc) return;
    $("config-save").disabled = true;
    $("config-status").textContent = "Saving…";
    try {
      await api("/api/v1/config", { method: "PUT", body: text.value });
      loadConfig(await api("/api/v1/config"));
      $("config-status").textContent = `Saved as version ${state.version}`;
      loadVersions();
    } catch (e) {
      $("config-status").textContent = "Not saved: the stored configuration is unchanged";
      if (e.status === 400) showFieldError(e.code, e.message, e.field);
      else showError(e);
    } finally {
      $("config-save").disabled = false;
    }
  }
  $("config-save").addEventListener("click", saveConfig);
  $("config-reload").addEventListener("click", async () => {
    if (state.dirty && !(await confirmAction("Discard your edits?", "Reload shows the stored configuration; the edits in the editor are lost.", "Discard"))) return;
    try {
      loadConfig(await api("/api/v1/config"));
      loadVersions();
    } catch (e) {
      showError(e);
    }
  });
  text.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "s") {
      e.preventDefault();
      saveConfig();
    }
  });

  async function loadVersions() {
    const list = $("versions");
    try {
      const json = await api("/api/v1/config/versions");
      const versions = Array.isArray(json) ? json : json.history || json.versions || [];
      clear(list);
      if (!versions.length) list.append(el("li", { class: "muted", text: "No saved versions yet." }));
      for (const v of versions) {
        const current = v.version === state.version;
        list.append(
          el("li", { class: current ? "current" : "", "data-version": v.version },
            el("div", { class: "v-main" },
              el("strong", { text: `v${v.version}` }),
              current ? el("span", { class: "pill ok", text: "current" }) : null,
              el("span", { class: "muted small", text: fmtWhen(v.at) })),
            v.change ? el("div", { class: "v-change muted small", text: String(v.change) }) : null,
            v.publication && v.publication.override ? el("div", { class: "v-change small form-error", text: `Override: “${v.publication.reason}” (failing: ${(v.publication.failing || []).join(", ")})` }) : null,
            current ? null : el("button", { type: "button", class: "btn small", text: "Roll back", onclick: () => rollback(v.version) }))
        );
      }
    } catch (e) {
      clear(list);
      showError(e);
    }
  }

  async function rollback(version) {
    if (!(await confirmAction(`Roll back to version ${version}?`, "Its configuration becomes current again, saved as a new version. Unsaved edits in the editor are lost.", "Roll back"))) return;
    try {
      await api("/api/v1/config/rollback", { method: "POST", body: { version } });
      loadConfig(await api("/api/v1/config"));
      $("config-status").textContent = `Rolled back to version ${version} (now version ${state.version})`;
      loadVersions();
    } catch (e) {
      showError(e);
    }
  }

  // ---- Draft & tests ----------------------------------------------------------------------

  function describeExpectation(e) {
    const arg = e.source ?? e.text ?? e.rule;
    return arg === undefined ? e.kind : `${e.kind}: ${arg}`;
  }

  async function loadDraft() {
    $("draft-error").textContent = "";
    try {
      const [draft, live, tests] = await Promise.all([api("/api/v1/config/draft"), api("/api/v1/config"), api("/api/v1/config/tests")]);
      $("draft-live").textContent = `live v${live.version}`;
      $("draft-live-text").textContent = JSON.stringify(live.config, null, 2);
      if (!state.draftDirty) {
        $("draft-text").value = draft.draft ? JSON.stringify(draft.draft, null, 2) : "";
        $("draft-status").textContent = draft.draft ? "saved" : "none yet: copy the live configuration to start";
      }
      state.tests = tests.tests || [];
      renderTests();
      await loadStaged();
    } catch (e) {
      showError(e);
    }
  }

  // The draft's knowledge sources: staged beside the live ones, listed with a Drop each.
  async function loadStaged() {
    const [{ sources = [] }, live] = await Promise.all([api("/api/v1/config/draft/knowledge/sources"), api("/api/v1/knowledge/sources")]);
    const body = $("staged");
    clear(body);
    $("staged-empty").hidden = sources.length > 0;
    $("staged-table").hidden = sources.length === 0;
    for (const s of sources) {
      const change = s.change === "remove" ? "remove" : s.live ? "replace" : "add";
      body.append(el("tr", { "data-staged": s.id },
        el("td", {}, el("div", { class: "strong", text: s.title || s.id }), el("div", { class: "muted mono", text: s.id })),
        el("td", {}, el("span", { class: change === "remove" ? "pill off" : "pill ok", text: change })),
        el("td", { class: "num", text: change === "remove" ? "" : fmtInt(s.chunks) }),
        el("td", { class: "actions" }, el("button", { type: "button", class: "btn small danger-ghost", text: "Drop", "aria-label": `Drop: ${s.id}`, onclick: () => dropStaged(s.id) }))));
    }
    const select = $("stage-remove-id");
    clear(select);
    for (const s of live.sources || []) select.append(el("option", { value: s.id, text: s.title ? `${s.title} (${s.id})` : s.id }));
    $("stage-remove").disabled = select.options.length === 0;
  }

  async function stage(id, body) {
    $("stage-error").textContent = "";
    try {
      await api(`/api/v1/config/draft/knowledge/sources/${encodeURIComponent(id)}`, { method: "PUT", body });
      state.suite = null;
      renderTests();
      await loadStaged();
      return true;
    } catch (e) {
      $("stage-error").textContent = `${e.code}${e.field ? ` (${e.field})` : ""}: ${e.message}`;
      return false;
    }
  }

  async function dropStaged(id) {
    try {
      await api(`/api/v1/config/draft/knowledge/sources/${encodeURIComponent(id)}`, { method: "DELETE" });
      await loadStaged();
    } catch (e) {
      showError(e);
    }
  }

  $("stage-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = $("stage-id").value.trim();
    const source = { id, kind: $("stage-kind").value, body: $("stage-body").value };
    if ($("stage-title").value.trim()) source.title = $("stage-title").value.trim();
    if (!id || !source.body.trim()) {
      $("stage-error").textContent = "A source needs an id and some text.";
      return;
    }
    if (await stage(id, source)) $("stage-form").reset();
  });
  $("stage-remove").addEventListener("click", () => {
    const id = $("stage-remove-id").value;
    if (id) stage(id, { remove: true });
  });

  function renderTests() {
    const body = $("tests");
    clear(body);
    const results = new Map(((state.suite && state.suite.cases) || []).map((c) => [c.id, c]));
    $("tests-empty").hidden = state.tests.length > 0;
    for (const t of state.tests) {
      const r = results.get(t.id);
      const expects = el("ul", { class: "expects" });
      t.test.expect.forEach((e, i) => {
        const judged = r && r.expect[i];
        expects.append(el("li", { class: judged ? (judged.passed ? "pass" : "fail") : "" },
          (judged ? (judged.passed ? "✓ " : "✗ ") : "") + describeExpectation(e),
          judged && !judged.passed ? el("span", { class: "muted small", text: ` — ${judged.detail}` }) : null));
      });
      const result = r ? el("span", { class: r.passed ? "pill ok" : "pill off", text: r.passed ? "pass" : "fail" }) : el("span", { class: "muted small", text: "not run" });
      body.append(el("tr", { "data-test": t.id },
        el("td", {}, el("code", { text: t.id })),
        el("td", { text: t.test.messages.join(" ⏎ ") }),
        el("td", {}, expects),
        el("td", {}, result),
        el("td", { class: "actions" },
          el("button", { type: "button", class: "btn small ghost", text: "Edit", onclick: () => editTest(t) }),
          el("button", { type: "button", class: "btn small danger-ghost", text: "Delete", onclick: () => deleteTest(t.id) }))));
    }
    const summary = $("suite-summary");
    if (state.suite) {
      summary.hidden = false;
      summary.className = state.suite.passed ? "pill ok" : "pill off";
      summary.textContent = state.suite.passed ? `all ${state.suite.total} pass` : `${state.suite.failed} of ${state.suite.total} fail`;
    } else summary.hidden = true;
  }

  function editTest(t) {
    $("test-id").value = t.id;
    $("test-messages").value = t.test.messages.join("\n");
    $("test-expect").value = JSON.stringify(t.test.expect);
    $("test-id").focus();
  }

  async function deleteTest(id) {
    if (!(await confirmAction(`Delete test ${id}?`, "The test conversation is removed from the suite.", "Delete"))) return;
    try {
      await api(`/api/v1/config/tests/${encodeURIComponent(id)}`, { method: "DELETE" });
      await loadDraft();
    } catch (e) {
      showError(e);
    }
  }

  $("draft-text").addEventListener("input", () => {
    state.draftDirty = true;
    $("draft-status").textContent = "unsaved changes";
  });
  $("draft-from-live").addEventListener("click", () => {
    $("draft-text").value = $("draft-live-text").textContent;
    state.draftDirty = true;
    $("draft-status").textContent = "unsaved changes";
  });

  async function saveDraft() {
    $("draft-error").textContent = "";
    try {
      await api("/api/v1/config/draft", { method: "PUT", body: $("draft-text").value });
      state.draftDirty = false;
      $("draft-status").textContent = "saved";
      return true;
    } catch (e) {
      $("draft-error").textContent = `${e.code}${e.field ? ` (${e.field})` : ""}: ${e.message}`;
      return false;
    }
  }
  $("draft-save").addEventListener("click", saveDraft);

  $("test-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("test-error").textContent = "";
    const id = $("test-id").value.trim();
    let expect;
    try {
      expect = JSON.parse($("test-expect").value || "[]");
    } catch (_) {
      $("test-error").textContent = "The expectations are not valid JSON.";
      return;
    }
    const messages = $("test-messages").value.split("\n").map((m) => m.trim()).filter(Boolean);
    try {
      await api(`/api/v1/config/tests/${encodeURIComponent(id)}`, { method: "PUT", body: { messages, expect } });
      $("test-form").reset();
      await loadDraft();
    } catch (e) {
      $("test-error").textContent = `${e.code}${e.field ? ` (${e.field})` : ""}: ${e.message}`;
    }
  });

  async function runSuite() {
    if (state.draftDirty && !(await saveDraft())) return;
    $("suite-run").disabled = true;
    try {
      state.suite = await api("/api/v1/config/draft/test", { method: "POST" });
      renderTests();
    } catch (e) {
      showError(e);
    } finally {
      $("suite-run").disabled = false;
    }
  }
  $("suite-run").addEventListener("click", runSuite);

  async function publish(body) {
    if (state.draftDirty && !(await saveDraft())) return;
    $("draft-publish").disabled = $("publish-anyway").disabled = true;
    $("override-error").textContent = "";
    try {
      const out = await api("/api/v1/config/draft/publish", { method: "POST", body });
      state.suite = out.suite;
      $("publish-blocked").hidden = true;
      $("override-reason").value = "";
      renderTests();
      const cfg = await api("/api/v1/config");
      loadConfig(cfg);
      loadVersions();
      $("draft-live").textContent = `live v${out.version}`;
      $("draft-live-text").textContent = JSON.stringify(cfg.config, null, 2);
      const changed = (out.sources || []).length;
      const sources = changed ? `, ${changed} knowledge source${changed === 1 ? "" : "s"}` : "";
      $("draft-status").textContent = out.override ? `published as v${out.version}${sources} (override)` : `published as v${out.version}${sources}`;
      await loadStaged();
    } catch (e) {
      if (e.code === "suite_failed" && e.body && e.body.suite) {
        state.suite = e.body.suite;
        renderTests();
        $("publish-blocked-text").textContent = e.message;
        const list = $("publish-failing");
        clear(list);
        for (const c of state.suite.cases.filter((c) => !c.passed)) {
          const failed = c.expect.filter((x) => !x.passed).map((x) => `${describeExpectation(x)} — ${x.detail}`);
          list.append(el("li", {}, el("code", { text: c.id }), ` ${failed.join("; ") || c.stopped || ""}`));
        }
        $("publish-blocked").hidden = false;
      } else if (body && body.override) {
        $("override-error").textContent = `${e.code}: ${e.message}`;
      } else showError(e);
    } finally {
      $("draft-publish").disabled = $("publish-anyway").disabled = false;
    }
  }
  $("draft-publish").addEventListener("click", () => publish(undefined));
  $("publish-anyway").addEventListener("click", () => {
    const reason = $("override-reason").value.trim();
    if (!reason) {
      $("override-error").textContent = "Say why: the reason is kept in the version history.";
      return;
    }
    publish({ override: true, reason });
  });

  // ---- Knowledge base ---------------------------------------------------------------------

  function loadKnowledge() {
    loadSources();
    loadGroups();
    loadUnanswered();
  }

  async function loadSources() {
    try {
      const { sources = [] } = await api("/api/v1/knowledge/sources");
      const body = $("sources");
      clear(body);
      $("sources-empty").hidden = sources.length > 0;
      $("sources-table").hidden = sources.length === 0;
      for (const s of sources) {
        body.append(
          el("tr", { "data-id": s.id },
            el("td", {}, el("div", { class: "strong", text: s.title || s.id }), el("div", { class: "muted mono", text: s.id })),
            el("td", {}, el("span", { class: "pill", text: s.kind || "" })),
            el("td", { class: "num", text: fmtInt(s.chunks) }),
            el("td", { class: "num", text: fmtInt(s.embedded) }),
            el("td", { class: "actions" }, el("button", { type: "button", class: "btn small danger-ghost", text: "Delete", onclick: () => deleteSource(s) })))
        );
      }
    } catch (e) {
      showError(e);
    }
  }

  async function deleteSource(s) {
    if (!(await confirmAction(`Delete “${s.title || s.id}”?`, "Its chunks leave the knowledge base at once; chat turns stop citing it.", "Delete"))) return;
    try {
      await api(`/api/v1/knowledge/sources/${encodeURIComponent(s.id)}`, { method: "DELETE" });
      loadSources();
    } catch (e) {
      showError(e);
    }
  }

  const KINDS = { md: "markdown", markdown: "markdown", txt: "text", text: "text", html: "html", htm: "html", json: "faq_json", csv: "faq_csv" };
  $("src-file").addEventListener("change", async () => {
    const file = $("src-file").files[0];
    if (!file) return;
    const dot = file.name.lastIndexOf(".");
    const ext = dot >= 0 ? file.name.slice(dot + 1).toLowerCase() : "";
    const stem = dot > 0 ? file.name.slice(0, dot) : file.name;
    $("src-kind").value = KINDS[ext] || "text";
    if (!$("src-id").value) $("src-id").value = stem.toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 64) || "source";
    if (!$("src-title").value) $("src-title").value = stem;
    $("src-body").value = await file.text();
  });

  $("source-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = $("src-id").value.trim();
    const body = $("src-body").value;
    $("source-error").textContent = "";
    if (!id || !body.trim()) {
      $("source-error").textContent = "A source needs an id and some text.";
      return;
    }
    const source = { id, kind: $("src-kind").value, body };
    if ($("src-title").value.trim()) source.title = $("src-title").value.trim();
    $("source-save").disabled = true;
    try {
      const r = await api(`/api/v1/knowledge/sources/${encodeURIComponent(id)}`, { method: "PUT", body: source });
      $("source-form").reset();
      $("source-error").textContent = r.embedding_error ? `Saved without embeddings: ${r.embedding_error}` : "";
      loadSources();
    } catch (err) {
      $("source-error").textContent = `${err.code}: ${err.message}${err.field ? ` (${err.field})` : ""}`;
    } finally {
      $("source-save").disabled = false;
    }
  });

  $("search-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const q = $("search-q").value.trim();
    const list = $("hits");
    if (!q) return;
    clear(list);
    list.setAttribute("aria-busy", "true");
    try {
      const { results = [] } = await api(`/api/v1/knowledge/search?q=${encodeURIComponent(q)}&k=5`);
      clear(list);
      list.removeAttribute("aria-busy");
      if (!results.length) list.append(el("li", { class: "muted", text: "Nothing found: a chat turn would get no chunks for this." }));
      for (const r of results) {
        const c = r.chunk || r;
        const heading = Array.isArray(c.heading_path) ? c.heading_path.join(" › ") : "";
        list.append(
          el("li", {},
            el("div", { class: "hit-head" },
              el("span", { class: "strong", text: r.source_title || c.title || c.source_id || "" }),
              heading ? el("span", { class: "muted small", text: heading }) : null,
              // bm25 scores are negative (lower is better), fused ones positive: shown as a magnitude, best first.
              el("span", { class: "score", title: "Search score (bm25, or fused with vector search); only the order matters", text: Math.abs(Number(r.score ?? 0)).toFixed(3) })),
            el("p", { class: "hit-text", text: c.text || "" }))
        );
      }
    } catch (err) {
      showError(err);
    }
  });

  /** "asked 14 times this week, 20 in all", "asked once". */
  function askedText(g) {
    const times = (n) => (n === 1 ? "once" : n === 2 ? "twice" : `${n} times`);
    const all = Number(g.count || 0);
    const week = Number(g.last_7_days || 0);
    if (week === all) return `Asked ${times(all)}${week ? " this week" : ""}`;
    return week ? `Asked ${times(week)} this week, ${all} in all` : `Asked ${times(all)}, none this week`;
  }

  async function loadGroups() {
    try {
      const { groups = [], total_groups: total = 0 } = await api("/api/v1/knowledge/unanswered/groups");
      const list = $("groups");
      clear(list);
      $("groups-empty").hidden = groups.length > 0;
      for (const g of groups) list.append(groupItem(g));
      if (total > groups.length) list.append(el("li", { class: "muted small", text: `…and ${total - groups.length} more groups, asked less.` }));
    } catch (e) {
      showError(e);
    }
  }

  /** One group: its question, how often it was asked, its other wordings, and a form to answer it. */
  function groupItem(g) {
    const others = (g.examples || []).filter((q) => q !== g.question);
    const id = `group-${g.key}`;
    const answer = el("textarea", { id: `${id}-answer`, rows: "4", placeholder: "The answer visitors should get", required: true });
    const question = el("input", { id: `${id}-question`, type: "text", value: g.question || "" });
    const error = el("p", { class: "form-error", role: "alert" });
    const save = el("button", { type: "submit", class: "btn primary", text: "Save answer" });
    const form = el("form", { class: "group-form", hidden: true, novalidate: true },
      el("label", { class: "lbl", for: answer.id, text: "Answer" }), answer,
      el("label", { class: "lbl", for: question.id, text: "Filed under the question" }), question,
      others.length ? el("p", { class: "muted small", text: `Its other wordings are filed with it, so each finds the answer.` }) : null,
      error, save);
    const toggle = el("button", { type: "button", class: "btn", text: "Answer", "aria-expanded": "false", "aria-controls": `${id}-form` });
    form.id = `${id}-form`;
    answer.addEventListener("input", () => (error.textContent = ""));
    toggle.addEventListener("click", () => {
      form.hidden = !form.hidden;
      toggle.setAttribute("aria-expanded", String(!form.hidden));
      if (!form.hidden) answer.focus();
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.textContent = "";
      if (!answer.value.trim()) {
        error.textContent = "Write the answer first.";
        return;
      }
      const body = { answer: answer.value };
      if (question.value.trim() && question.value.trim() !== g.question) body.question = question.value.trim();
      save.disabled = true;
      try {
        const r = await api(`/api/v1/knowledge/unanswered/groups/${encodeURIComponent(g.key)}/answer`, { method: "POST", body });
        $("groups-status").textContent = `Answered “${r.question}”: ${r.answered} ${r.answered === 1 ? "question" : "questions"} closed, saved as source ${r.source}.${r.embedding_error ? ` (Without embeddings: ${r.embedding_error})` : ""}`;
        loadGroups();
        loadSources();
        loadUnanswered();
      } catch (err) {
        error.textContent = `${err.code}: ${err.message}${err.field ? ` (${err.field})` : ""}`;
        save.disabled = false;
      }
    });
    return el("li", { "data-key": g.key },
      el("div", { class: "group-head" },
        el("div", {},
          el("p", { class: "q", text: g.question || "" }),
          el("p", { class: "asked small" },
            el("span", { class: "pill", text: askedText(g) }),
            el("span", { class: "muted", text: ` · last ${fmtWhen(g.last_asked)}` }))),
        toggle),
      others.length ? el("ul", { class: "wordings muted small", "aria-label": "Also asked as" }, ...others.map((q) => el("li", { text: q }))) : null,
      form);
  }

  async function loadUnanswered() {
    try {
      const { unanswered = [] } = await api("/api/v1/knowledge/unanswered");
      const list = $("unanswered");
      clear(list);
      $("unanswered-empty").hidden = unanswered.length > 0;
      for (const q of unanswered) {
        list.append(
          el("li", {},
            el("p", { class: "q", text: q.question || "" }),
            el("div", { class: "muted small" }, el("span", { text: fmtWhen(q.at) }), q.reason ? el("span", { text: ` · ${q.reason}` }) : null,
              q.conversation_id ? el("span", { class: "mono", text: ` · ${q.conversation_id}` }) : null))
        );
      }
    } catch (e) {
      showError(e);
    }
  }

  // ---- Usage ------------------------------------------------------------------------------

  async function loadUsage() {
    try {
      state.usage = await api("/api/v1/usage");
      renderUsage();
    } catch (e) {
      showError(e);
    }
  }
  $("usage-reload").addEventListener("click", loadUsage);
  for (const b of document.querySelectorAll(".seg-btn"))
    b.addEventListener("click", () => {
      state.metric = b.dataset.metric;
      for (const o of document.querySelectorAll(".seg-btn")) o.setAttribute("aria-pressed", String(o === b));
      renderUsage();
    });

  /** A cost scale's labels, with as many decimals as its step needs (`$0.00025`). */
  function costTick(micros, stepMicros) {
    if (micros === 0) return "$0";
    const step = stepMicros / 1e6;
    let decimals = Math.max(2, Math.ceil(-Math.log10(step) - 1e-9));
    if (Math.abs(Math.round(step * 10 ** decimals) - step * 10 ** decimals) > 1e-9) decimals++;
    return "$" + (micros / 1e6).toFixed(Math.min(decimals, 6));
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => state.section === "usage" && state.usage && renderUsage(), 150);
  });

  const METRICS = {
    cost: { title: "Cost per day", of: (r) => r.cost_micros || 0, fmt: fmtCost, tick: costTick },
    tokens: { title: "Tokens per day", of: (r) => (r.prompt_tokens || 0) + (r.completion_tokens || 0), fmt: fmtInt, integer: true },
    requests: { title: "Requests per day", of: (r) => r.requests || 0, fmt: fmtInt, integer: true },
  };

  function renderUsage() {
    const u = state.usage || { usage: [] };
    const rows = u.usage || [];
    const today = new Date().toISOString().slice(0, 10);
    const sum = (rs, f) => rs.reduce((n, r) => n + f(r), 0);
    const todays = rows.filter((r) => r.day === today);
    const stats = $("today");
    clear(stats);
    for (const [label, value] of [
      ["Requests today", fmtInt(sum(todays, METRICS.requests.of))],
      ["Tokens today", fmtInt(sum(todays, METRICS.tokens.of))],
      ["Cost today", fmtCost(sum(todays, METRICS.cost.of))],
      ["Cost, all days shown", fmtCost(sum(rows, METRICS.cost.of))],
    ])
      stats.append(el("div", { class: "stat card" }, el("div", { class: "muted small", text: label }), el("div", { class: "stat-value", text: value })));

    const m = METRICS[state.metric];
    $("chart-title").textContent = m.title;
    drawChart(rows, m);
    renderBreakdown($("by-route"), "Route", rows, (r) => r.route || "—");
    renderBreakdown($("by-model"), "Model", rows, (r) => r.target || "—");
  }

  /** The last 14 days (7 on a narrow screen), UTC, ending today or at the newest day with usage, as bars. */
  function drawChart(rows, m) {
    const box = $("chart");
    clear(box);
    const perDay = new Map();
    for (const r of rows) perDay.set(r.day, (perDay.get(r.day) || 0) + m.of(r));
    const today = new Date().toISOString().slice(0, 10);
    const newest = [...perDay.keys(), today].sort().pop();
    // Drawn at the box's own width, so its text stays legible on a phone.
    const W = Math.max(300, Math.round(box.clientWidth || 840));
    const span = W < 600 ? 7 : 14;
    const days = [];
    for (let i = span - 1; i >= 0; i--) {
      const d = new Date(`${newest}T00:00:00Z`);
      d.setUTCDate(d.getUTCDate() - i);
      days.push(d.toISOString().slice(0, 10));
    }
    const values = days.map((d) => perDay.get(d) || 0);
    const max = Math.max(...values);
    // A round top for the scale: 4 steps of 1, 2, 2.5 or 5 × a power of ten.
    const raw = max / 4;
    const mag = raw > 0 ? 10 ** Math.floor(Math.log10(raw)) : 1;
    let stepV = [1, 2, 2.5, 5, 10].find((f) => f * mag >= raw) * mag;
    if (m.integer) stepV = Math.max(1, Math.ceil(stepV));
    const scaleMax = max > 0 ? stepV * 4 : 1;
    const H = 240, left = 64, bottom = 28, top = 22, right = 8;
    const plotH = H - top - bottom, plotW = W - left - right, step = plotW / days.length, barW = Math.min(36, step * 0.62);
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "bars", role: "img", "aria-label": `${m.title}, last ${span} days` });
    for (let g = 0; g <= 4; g++) {
      const y = top + plotH - (plotH * g) / 4;
      s.append(svg("line", { x1: left, x2: W - right, y1: y, y2: y, class: g ? "grid" : "axis" }));
      const label = svg("text", { x: left - 8, y: y + 4, class: "tick", "text-anchor": "end" });
      const tickValue = (scaleMax * g) / 4;
      label.textContent = max > 0 ? (m.tick ? m.tick(tickValue, stepV) : m.fmt(tickValue)) : g === 0 ? m.fmt(0) : "";
      s.append(label);
    }
    days.forEach((d, i) => {
      const v = values[i];
      const h = (plotH * v) / scaleMax;
      const x = left + step * i + (step - barW) / 2;
      const bar = svg("rect", { x, y: top + plotH - h, width: barW, height: Math.max(h, v > 0 ? 2 : 0), rx: 4, class: d === today ? "bar today" : "bar", "data-day": d, "data-value": v });
      const tip = svg("title");
      tip.textContent = `${d}: ${m.fmt(v)}`;
      bar.append(tip);
      s.append(bar);
      if (v > 0) {
        const value = svg("text", { x: x + barW / 2, y: top + plotH - h - 6, class: "value", "text-anchor": "middle" });
        value.textContent = m.fmt(v);
        s.append(value);
      }
      if (i % 2 === (span - 1) % 2) {
        const label = svg("text", { x: x + barW / 2, y: H - 8, class: "tick", "text-anchor": "middle" });
        label.textContent = new Date(`${d}T00:00:00Z`).toLocaleDateString("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
        s.append(label);
      }
    });
    box.append(s);
    if (max === 0) box.append(el("p", { class: "chart-empty muted", text: `No usage in these ${span} days yet.` }));
  }

  function renderBreakdown(table, label, rows, keyOf) {
    const groups = new Map();
    for (const r of rows) {
      const k = keyOf(r);
      const g = groups.get(k) || { requests: 0, prompt: 0, completion: 0, cost: 0 };
      g.requests += r.requests || 0;
      g.prompt += r.prompt_tokens || 0;
      g.completion += r.completion_tokens || 0;
      g.cost += r.cost_micros || 0;
      groups.set(k, g);
    }
    clear(table);
    table.append(el("thead", {}, el("tr", {}, ...[label, "Requests", "Prompt", "Completion", "Cost"].map((h, i) => el("th", { class: i ? "num" : "", text: h })))));
    const body = el("tbody");
    const sorted = [...groups].sort((a, b) => b[1].cost - a[1].cost || b[1].requests - a[1].requests);
    for (const [k, g] of sorted)
      body.append(el("tr", {}, el("td", { class: "mono", text: k }), el("td", { class: "num", text: fmtInt(g.requests) }), el("td", { class: "num", text: fmtInt(g.prompt) }),
        el("td", { class: "num", text: fmtInt(g.completion) }), el("td", { class: "num", text: fmtCost(g.cost) })));
    if (!sorted.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted", text: "No usage yet." })));
    table.append(body);
  }

  // ---- Agents & keys ----------------------------------------------------------------------

  $("token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const agent = $("agent-id").value.trim();
    $("token-error").textContent = "";
    if (!agent) {
      $("token-error").textContent = "An agent needs an id.";
      return;
    }
    try {
      await mintToken(agent, $("agent-name").value.trim());
    } catch (err) {
      $("token-error").textContent = `${err.code}: ${err.message}`;
    }
  });
  /** Mints a token for `agent` (with the chosen lifetime) and shows it once. */
  async function mintToken(agent, name) {
    const body = { agent, ttl_secs: Number($("agent-ttl").value) };
    if (name) body.name = name;
    const r = await api("/api/v1/agents/tokens", { method: "POST", body });
    $("token-value").textContent = r.token;
    $("token-link").href = `/agent/#token=${encodeURIComponent(r.token)}`;
    $("token-out").hidden = false;
    return r;
  }

  $("token-copy").addEventListener("click", () => copy($("token-value").textContent, $("token-copy")));
  $("token-hide").addEventListener("click", () => {
    $("token-out").hidden = true;
    $("token-value").textContent = "";
    $("token-link").removeAttribute("href");
  });

  function renderKeys() {
    const body = $("keys");
    if (!body) return;
    clear(body);
    const keys = (state.doc && Array.isArray(state.doc.api_keys) && state.doc.api_keys) || [];
    for (const k of keys)
      body.append(
        el("tr", { "data-id": k.id },
          el("td", { class: "strong", text: k.id }),
          el("td", { class: "mono muted", title: k.sha256, text: `${String(k.sha256).slice(0, 12)}…` }),
          el("td", { class: "actions" }, el("button", { type: "button", class: "btn small danger-ghost", text: "Remove", onclick: () => removeKey(k.id) })))
      );
    if (!keys.length) body.append(el("tr", {}, el("td", { colspan: 3, class: "muted", text: "No API keys." })));
  }

  // The roster (`agents` in the configuration). Every change goes through the config API, so
  // the server's validation decides; its errors are shown at the form's field.
  const agentsOf = (doc) => (doc && Array.isArray(doc.agents) ? doc.agents : []);
  let editing = null; // the id of the agent the form edits, or null when it adds one

  function renderAgents() {
    const body = $("agents");
    if (!body) return;
    clear(body);
    const agents = agentsOf(state.doc);
    $("agents-count").textContent = agents.length ? `${agents.length} listed` : "";
    const ids = $("agent-ids");
    clear(ids);
    for (const a of agents) ids.append(el("option", { value: String(a.id) }));
    for (const a of agents) {
      const since = a.tokens_not_before ? fmtWhen(Number(a.tokens_not_before)) : "Any unexpired token";
      const label = String(a.name || a.id);
      const btn = (text, onclick, cls = "btn small ghost") => el("button", { type: "button", class: cls, text, "aria-label": `${text}: ${label}`, onclick });
      body.append(
        el("tr", { "data-id": String(a.id) },
          el("td", { class: "mono", text: String(a.id) }),
          el("td", { class: "strong", text: label }),
          el("td", { class: a.email ? "nowrap" : "muted", text: a.email ? String(a.email) : "—" }),
          el("td", { class: "nowrap", text: a.role === "supervisor" ? "Supervisor" : "Agent" }),
          el("td", { class: "nowrap" }, el("span", { class: a.disabled ? "pill off" : "pill ok", text: a.disabled ? "Disabled" : "Active" })),
          el("td", { class: a.tokens_not_before ? "" : "muted", text: since }),
          el("td", { class: "actions" },
            btn("Sign-in token", () => mintFor(a), "btn small"),
            btn("Edit", () => editAgent(a)),
            btn(a.disabled ? "Enable" : "Disable", () => setDisabled(a, !a.disabled)),
            btn("Sign out everywhere", () => signOutEverywhere(a)),
            btn("Remove", () => removeAgent(a), "btn small danger-ghost")))
      );
    }
    if (!agents.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No agents listed: any agent id can be given a token." })));
  }

  const AGENT_FIELDS = ["id", "name", "email", "role"];
  function clearAgentErrors() {
    for (const f of AGENT_FIELDS) {
      $(`af-${f}-error`).textContent = "";
      $(`af-${f}`).removeAttribute("aria-invalid");
    }
    $("agent-form-error").textContent = "";
  }
  function resetAgentForm() {
    editing = null;
    for (const f of ["id", "name", "email"]) $(`af-${f}`).value = "";
    $("af-role").value = "agent";
    $("af-id").readOnly = false;
    $("agent-form-title").textContent = "Add an agent";
    $("af-submit").textContent = "Add agent";
    $("af-cancel").hidden = true;
    clearAgentErrors();
  }
  function editAgent(a) {
    clearAgentErrors();
    editing = String(a.id);
    $("af-id").value = String(a.id);
    // An agent's id is in its tokens and conversations: to change it, remove and add.
    $("af-id").readOnly = true;
    $("af-name").value = a.name ?? "";
    $("af-email").value = a.email ?? "";
    $("af-role").value = a.role === "supervisor" ? "supervisor" : "agent";
    $("agent-form-title").textContent = `Edit ${a.id}`;
    $("af-submit").textContent = "Save agent";
    $("af-cancel").hidden = false;
    $("af-name").focus();
  }
  $("af-cancel").addEventListener("click", resetAgentForm);

  /** Shows an error from saving the roster: at the form's field when it names one of the
   *  entry at `index` (`agents[3].email`), otherwise under the form. */
  function showAgentError(err, index) {
    const m = /^agents\[(\d+)\]\.(\w+)$/.exec(err.field || "");
    if (m && Number(m[1]) === index && AGENT_FIELDS.includes(m[2])) {
      $(`af-${m[2]}-error`).textContent = `${err.code}: ${err.message}`;
      $(`af-${m[2]}`).setAttribute("aria-invalid", "true");
      $(`af-${m[2]}`).focus();
    } else $("agent-form-error").textContent = `${err.code || "error"}: ${err.message}${err.field ? ` (${err.field})` : ""}`;
  }

  $("agent-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    clearAgentErrors();
    const entry = { id: $("af-id").value.trim(), name: $("af-name").value.trim() };
    if ($("af-email").value.trim()) entry.email = $("af-email").value.trim();
    if ($("af-role").value === "supervisor") entry.role = "supervisor";
    const was = editing;
    let index = -1;
    $("af-submit").disabled = true;
    try {
      await editStoredConfig((doc) => {
        const agents = agentsOf(doc).slice();
        index = was === null ? agents.length : agents.findIndex((a) => a.id === was);
        if (index < 0) throw new ApiError(409, "agent_not_found", `The agent “${was}” is no longer listed (changed elsewhere?).`);
        // An edit keeps what the form does not show (disabled, tokens_not_before).
        const kept = was === null ? {} : { ...agents[index] };
        delete kept.email;
        delete kept.role;
        agents[index] = { ...kept, ...entry };
        doc.agents = agents;
      });
      resetAgentForm();
    } catch (err) {
      showAgentError(err, index);
    } finally {
      $("af-submit").disabled = false;
    }
  });

  /** Saves a change to one listed agent (found fresh by id). */
  async function changeAgent(id, change) {
    await editStoredConfig((doc, cfg) => {
      const agents = agentsOf(doc).slice();
      const i = agents.findIndex((a) => a.id === id);
      if (i < 0) throw new ApiError(409, "agent_not_found", `The agent “${id}” is no longer listed (changed elsewhere?).`);
      agents[i] = change({ ...agents[i] }, cfg);
      doc.agents = agents;
    });
  }

  /** Keyboard focus back on a row's button after the table was drawn again. */
  const refocus = (id, nth) => $("agents").querySelector(`tr[data-id="${CSS.escape(String(id))}"] button:nth-child(${nth})`)?.focus();

  async function setDisabled(a, disabled) {
    try {
      await changeAgent(a.id, (x) => ({ ...x, disabled }));
      refocus(a.id, 3);
    } catch (err) {
      showError(err);
    }
  }

  async function signOutEverywhere(a) {
    const ok = await confirmAction(`Sign ${a.name || a.id} out everywhere?`,
      "Every sign-in token issued to this agent until now stops working at once. Tokens minted afterwards work.", "Sign out everywhere");
    if (!ok) return;
    try {
      // Kefu's clock, not this browser's (which may be off): the time the configuration was
      // just read at, which tokens' issue times are compared with.
      await changeAgent(a.id, (x, cfg) => {
        const now = Date.parse(cfg.server_time);
        if (!Number.isFinite(now)) throw new ApiError(0, "no_server_time", "Kefu did not say what time it is; nothing changed.");
        return { ...x, tokens_not_before: now };
      });
      refocus(a.id, 4);
    } catch (err) {
      showError(err);
    }
  }

  async function removeAgent(a) {
    if (!(await confirmAction(`Remove ${a.name || a.id}?`, "They can no longer sign in, and their tokens stop working at once.", "Remove"))) return;
    try {
      await editStoredConfig((doc) => (doc.agents = agentsOf(doc).filter((x) => x.id !== a.id)));
      if (editing === a.id) resetAgentForm();
    } catch (err) {
      showError(err);
    }
  }

  async function mintFor(a) {
    $("token-error").textContent = "";
    $("agent-id").value = String(a.id);
    $("agent-name").value = "";
    try {
      await mintToken(String(a.id), "");
      $("token-out").scrollIntoView({ block: "nearest" });
      $("token-copy").focus();
    } catch (err) {
      $("token-error").textContent = `${err.code}: ${err.message}`;
      $("token-error").scrollIntoView({ block: "nearest" });
    }
  }

  const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  function randomSecret(n = 32) {
    const out = [];
    while (out.length < n) {
      for (const b of crypto.getRandomValues(new Uint8Array(n * 2))) {
        if (b < 248 && out.length < n) out.push(ALNUM[b % 62]); // 248 = 4 × 62: no bias
      }
    }
    return out.join("");
  }
  async function sha256Hex(s) {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s));
    return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** Edits the stored configuration (fetched fresh) and saves it; the editor follows. */
  async function editStoredConfig(edit, { reload = true } = {}) {
    if (state.dirty && !(await confirmAction("Discard your edits?", "This saves a change to the stored configuration and reloads the editor; its unsaved edits are lost.", "Discard and continue")))
      throw new ApiError(0, "cancelled", "Nothing changed: the editor has unsaved edits.");
    const cfg = await api("/api/v1/config");
    const doc = cfg.config ?? {};
    edit(doc, cfg);
    await api("/api/v1/config", { method: "PUT", body: doc });
    if (!reload) return;
    loadConfig(await api("/api/v1/config"));
    loadVersions();
  }

  $("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = $("key-id").value.trim();
    $("key-error").textContent = "";
    if (!id) {
      $("key-error").textContent = "Name the key (e.g. backend) so you can tell keys apart.";
      return;
    }
    if ((state.doc?.api_keys || []).some((k) => k.id === id)) {
      $("key-error").textContent = `There is already a key named “${id}”.`;
      return;
    }
    let key = `kf-${state.tenant}.${randomSecret()}`;
    try {
      const sha256 = await sha256Hex(key);
      await editStoredConfig((doc) => (doc.api_keys = [...(doc.api_keys || []), { id, sha256 }]));
      $("key-value").textContent = key;
      $("key-out").hidden = false;
      $("key-id").value = "";
    } catch (err) {
      $("key-error").textContent = `${err.code || "error"}: ${err.message}${err.field ? ` (${err.field})` : ""}`;
    } finally {
      key = null;
    }
  });
  $("key-copy").addEventListener("click", () => copy($("key-value").textContent, $("key-copy")));
  $("key-hide").addEventListener("click", () => {
    $("key-out").hidden = true;
    $("key-value").textContent = "";
  });

  async function removeKey(id) {
    const self = await sha256Hex(state.key);
    const entry = (state.doc?.api_keys || []).find((k) => k.id === id);
    const own = Boolean(entry && entry.sha256 === self);
    const warn = own ? " This is the key you are signed in with: you will be signed out." : "";
    if (!(await confirmAction(`Remove the key “${id}”?`, `Anything using it gets 401 at once.${warn}`, "Remove"))) return;
    try {
      await editStoredConfig((doc) => (doc.api_keys = (doc.api_keys || []).filter((k) => k.id !== id)), { reload: !own });
      if (own) signOut(`The key “${id}” you signed in with was removed. Sign in with another key.`);
    } catch (err) {
      showError(err);
    }
  }

  // ---- Plugins ----------------------------------------------------------------------------

  // GET /api/v1/plugins: the installed plugins' manifests and the tenant's `plugins`. Enabling,
  // disabling and removing edit the stored configuration (the server validates); trying one
  // is POST /api/v1/plugins/{id}/test. Manifests and answers come from plugins: text only.
  async function loadPlugins() {
    try {
      state.plugins = await api("/api/v1/plugins");
    } catch (err) {
      showError(err);
      return;
    }
    renderPlugins();
  }

  const hookNames = (hooks) =>
    [["on_event", "on-event"], ["before_model", "before-model"], ["after_reply", "after-reply"]].filter(([k]) => hooks && hooks[k]).map(([, n]) => n);

  function renderPlugins() {
    const data = state.plugins || { installed: [], plugins: [] };
    const installed = Array.isArray(data.installed) ? data.installed : [];
    const mine = Array.isArray(data.plugins) ? data.plugins : [];
    const list = $("installed-plugins");
    clear(list);
    for (const p of installed) {
      const m = p.manifest;
      const item = el("li", { class: "plugin" },
        el("div", { class: "plugin-head" },
          el("strong", { text: String(p.name) }),
          m ? el("span", { class: "muted small", text: ` ${m.version}` }) : null,
          m ? null : el("span", { class: "pill off", text: "Unavailable" })));
      if (m) {
        item.append(el("p", { class: "small", text: String(m.description || "") }));
        const tags = el("p", { class: "plugin-hooks" });
        for (const h of hookNames(m.hooks)) tags.append(el("span", { class: "pill", text: h }));
        for (const t of m.tools || []) tags.append(el("span", { class: "pill ok", text: `tool: ${t.name}`, title: String(t.description || "") }));
        item.append(tags);
        if (!mine.some((q) => q.plugin === p.name)) {
          item.append(el("button", { type: "button", class: "btn small", text: "Enable for this tenant", "aria-label": `Enable ${p.name}`, onclick: () => addPlugin(p.name) }));
        }
      } else {
        item.append(el("p", { class: "form-error", text: `${p.error?.kind || "error"}: ${p.error?.message || ""}` }));
      }
      list.append(item);
    }
    if (!installed.length) list.append(el("li", { class: "muted", text: "No plugins are installed in this deployment." }));

    const body = $("tenant-plugins");
    clear(body);
    $("plugins-count").textContent = mine.length ? `${mine.filter((q) => q.enabled !== false).length} of ${mine.length} on` : "";
    for (const q of mine) {
      const known = installed.some((p) => p.name === q.plugin && p.manifest);
      const on = q.enabled !== false;
      const grants = [...(q.grants?.hosts || []), q.grants?.kv ? "key-value" : null].filter(Boolean).join(", ");
      const btn = (text, onclick, cls = "btn small ghost") => el("button", { type: "button", class: cls, text, "aria-label": `${text}: ${q.id}`, onclick });
      body.append(el("tr", { "data-id": String(q.id) },
        el("td", { class: "mono", text: String(q.id) }),
        el("td", { text: String(q.plugin) }),
        el("td", { class: "nowrap" }, el("span", { class: !known ? "pill off" : on ? "pill ok" : "pill", text: !known ? "Not installed" : on ? "On" : "Off" })),
        el("td", { class: grants ? "" : "muted", text: grants || "none" }),
        el("td", { class: "nowrap", text: `${q.budget_ms ?? 250} ms` }),
        el("td", { class: "actions" },
          btn(on ? "Turn off" : "Turn on", () => setPluginEnabled(q.id, !on)),
          btn("Remove", () => removePlugin(q.id), "btn small danger-ghost"))));
    }
    if (!mine.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No plugins enabled: visitors' turns run without any." })));

    const select = $("try-id");
    const before = select.value;
    clear(select);
    for (const q of mine) select.append(el("option", { value: String(q.id), text: `${q.id} (${q.plugin})` }));
    if (mine.some((q) => q.id === before)) select.value = before;
    $("try-run").disabled = !mine.length;
    renderTryFields();
  }

  async function changePlugins(edit) {
    try {
      await editStoredConfig((doc) => (doc.plugins = edit(Array.isArray(doc.plugins) ? doc.plugins : [])));
      await loadPlugins();
    } catch (err) {
      showError(err);
    }
  }
  function addPlugin(name) {
    const mine = state.plugins?.plugins || [];
    let id = name;
    for (let n = 2; mine.some((q) => q.id === id); n++) id = `${name}-${n}`;
    return changePlugins((list) => [...list, { id, plugin: name }]);
  }
  const setPluginEnabled = (id, enabled) => changePlugins((list) => list.map((q) => (q.id === id ? { ...q, enabled } : q)));
  async function removePlugin(id) {
    if (!(await confirmAction(`Remove the plugin “${id}”?`, "Its settings and grants leave the configuration; the next turn runs without it.", "Remove"))) return;
    return changePlugins((list) => list.filter((q) => q.id !== id));
  }
  $("plugins-reload").addEventListener("click", loadPlugins);
  $("plugins-edit").addEventListener("click", () => showSection("config"));

  const TRY_FIELDS = {
    before_model: [["try-user", "The visitor's message", "textarea", "I am jane@example.com, card 4111 1111 1111 1111"]],
    after_reply: [["try-question", "The visitor's question", "input", "Can I get a refund?"], ["try-reply", "The model's reply", "textarea", "Sure, I'll refund you right away."]],
    on_event: [["try-kind", "Event", "select", ["visitor_message", "bot_reply", "agent_message", "handoff_requested", "claimed", "resolved"]], ["try-text", "Its text", "input", "Where is my order?"]],
    call_tool: [["try-tool", "Tool", "input", "order_status"], ["try-args", "Arguments (JSON)", "textarea", '{"order_id": "KF-1001"}']],
  };
  function renderTryFields() {
    const box = $("try-fields");
    clear(box);
    for (const [id, label, kind, value] of TRY_FIELDS[$("try-hook").value] || []) {
      box.append(el("label", { class: "lbl", for: id, text: label }));
      if (kind === "select") {
        const sel = el("select", { id });
        for (const v of value) sel.append(el("option", { value: v, text: v.replace(/_/g, " ") }));
        box.append(sel);
      } else {
        const input = el(kind, { id, spellcheck: "false", rows: kind === "textarea" ? 3 : undefined });
        input.value = value;
        box.append(input);
      }
    }
  }
  $("try-hook").addEventListener("change", renderTryFields);

  function tryBody() {
    const hook = $("try-hook").value;
    const v = (id) => $(id).value;
    if (hook === "before_model")
      return { hook, request: { target: "preview/model", messages: [{ role: "system", text: state.doc?.system_prompt || "" }, { role: "user", text: v("try-user") }] } };
    if (hook === "after_reply") return { hook, question: v("try-question"), reply: v("try-reply") };
    if (hook === "on_event") {
      const text = v("try-text");
      return { hook, event: { kind: v("try-kind"), text, transcript: text ? [{ author: "visitor", text }] : [], tags: [] } };
    }
    return { hook, name: v("try-tool"), arguments: v("try-args") };
  }

  $("plugin-try").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("try-error").textContent = "";
    const id = $("try-id").value;
    if (!id) return;
    if ($("try-hook").value === "call_tool") {
      try {
        JSON.parse($("try-args").value);
      } catch (err) {
        $("try-error").textContent = `The arguments are not JSON: ${err.message}`;
        $("try-args").focus();
        return;
      }
    }
    $("try-run").disabled = true;
    try {
      const out = await api(`/api/v1/plugins/${encodeURIComponent(id)}/test`, { method: "POST", body: tryBody() });
      $("try-answer").textContent = out.answer === null ? "(no answer)" : JSON.stringify(out.answer, null, 2);
      const rec = $("try-record");
      clear(rec);
      const outcome = out.record?.outcome || {};
      const rows = [
        ["Plugin", `${out.record?.plugin_id} (${out.record?.plugin})`],
        ["Hook", String(out.record?.hook || "")],
        ["Time", `${out.record?.duration_ms ?? "?"} ms`],
        ["Outcome", outcome.kind === "ok" ? outcome.effect || "ok" : `${outcome.failure}: ${outcome.message}`],
      ];
      for (const [k, val] of rows) rec.append(el("dt", { text: k }), el("dd", { class: outcome.kind !== "ok" && k === "Outcome" ? "form-error" : "", text: val }));
      $("try-out").hidden = false;
    } catch (err) {
      $("try-error").textContent = `${err.code || "error"}: ${err.message}`;
    } finally {
      $("try-run").disabled = false;
    }
  });

  // ---- Start ------------------------------------------------------------------------------

  let stored = null;
  try {
    stored = sessionStorage.getItem(KEY_STORE);
  } catch (_) {
    /* no storage */
  }
  if (stored) signIn(stored, { fromStorage: true });
  else showSignin("");
})();
