// Browser tests for the admin pages (web/admin/): Debian's Chromium (headless, via
// playwright-core) against Kefu on workerd with the mock provider. The operator signs in
// with the tenant key; what the pages claim is checked against the HTTP API.
//
//   node --test tests/browser/admin.test.mjs   (make test-browser builds what it needs first)
//

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { ROOT, keyHash, launchChromium, profileBase, startKefu } from "./harness.mjs";

const SHOTS = resolve(ROOT, process.env.KEFU_SCREENSHOTS || "target/browser-screenshots");
const ACME_KEY = "kf-acme.Kefu0Browser0Admin0Key0000001";
const QUIET_KEY = "kf-quiet.Kefu0Browser0Admin0Key0000002";
const XSS = `<img src=x onerror="window.__xss=1">`;
const XSS_BODY = `# Zeppelin <script>window.__xss=2</script>\n\nZeppelin deliveries are not offered. <img src=x onerror="window.__xss=3">`;
const SHIPPING = `# Shipping

Every parcel ships within two working days from our warehouse in Leipzig. Tracking links arrive by email.

## Returns

Return any parcel within 30 days for a full refund; the label is free inside the EU.

## International orders

We ship to 28 countries. Duties are included at checkout.`;
const FAQ_CSV = `question,answer
Do you sell gift cards?,"Yes, from 10 to 200 euros, delivered by email."
Can I change my order?,You can change it until it ships from the Orders page.
`;

let kefu;
let browser;

before(async () => {
  kefu = await startKefu((mock) => ({
    acme: {
      name: "Acme Outfitters",
      system_prompt: "You are Acme's helpful assistant.",
      provider: { base_url: profileBase(mock, "chunk_delay_ms=5"), model: "mock-gpt" },
      prices: { "mock-gpt": { input_per_mtok: 2.5, output_per_mtok: 10.0 } },
      api_keys: [{ id: "admin", sha256: keyHash(ACME_KEY) }],
      knowledge: { enabled: true, top_k: 3 },
      handoff: { default_queue: "support" },
    },
    // A tenant whose model never finds an answer in its knowledge base.
    quiet: {
      provider: { base_url: `${mock}/p/tool=kb_no_answer,args=%7B%22reason%22:%22not_covered%22%7D/v1`, model: "mock-gpt" },
      api_keys: [{ id: "admin", sha256: keyHash(QUIET_KEY) }],
      knowledge: { enabled: true },
    },
  }));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  kefu?.stop();
});

async function newPage() {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 }, locale: "en-US", colorScheme: "light" });
  const page = await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  page.on("console", (m) => m.type() === "error" && !/status of 40[019]/.test(m.text()) && errors.push(new Error(`${m.text()} (${m.location().url})`)));
  return { ctx, page, errors };
}

async function signIn(key) {
  const a = await newPage();
  await a.page.goto(kefu.base + "/admin/");
  await a.page.locator("#key-input").fill(key);
  await a.page.locator("#key-input").press("Enter");
  await a.page.locator("#app:not([hidden])").waitFor();
  return a;
}

async function shot(page, name, options = {}) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: resolve(SHOTS, name), ...options });
}

const apiGet = (path, key = ACME_KEY) => fetch(kefu.base + path, { headers: { authorization: `Bearer ${key}` } });
const configNow = async () => (await apiGet("/api/v1/config")).json();

/** Replaces the editor's text, as typing would. */
async function editJson(page, edit) {
  const text = await page.locator("#config-text").inputValue();
  const doc = edit(JSON.parse(text));
  await page.locator("#config-text").fill(JSON.stringify(doc, null, 2));
}

describe("admin pages", { concurrency: false }, () => {
  let a;

  test("sign in with the tenant key, kept in this tab only, behind a CSP", async () => {
    const resp = await fetch(kefu.base + "/admin/");
    assert.equal(resp.status, 200);
    const bare = await fetch(kefu.base + "/admin", { redirect: "manual" });
    assert.ok([200, 301, 307, 308].includes(bare.status), `/admin: ${bare.status}`);
    assert.match(resp.headers.get("content-security-policy") || "", /script-src 'self'/);
    assert.doesNotMatch(resp.headers.get("content-security-policy") || "", /unsafe-inline/);

    const bad = await newPage();
    await bad.page.goto(kefu.base + "/admin/");
    await bad.page.locator("#key-input").fill("kf-acme.wrong");
    await bad.page.locator("#key-input").press("Enter");
    await bad.page.locator("#signin-error").filter({ hasText: "not accepted" }).waitFor();
    await bad.ctx.close();

    a = await signIn(ACME_KEY);
    assert.equal(await a.page.locator("#tenant-name").textContent(), "acme");
    assert.equal(await a.page.evaluate(() => sessionStorage.getItem("kefu.admin.key")), ACME_KEY);
    assert.equal(await a.page.evaluate(() => localStorage.length), 0);
    assert.match(await a.page.locator("#config-text").inputValue(), /Acme's helpful assistant/);
    // A reload stays signed in (same tab); signing out forgets the key.
    await a.page.reload();
    await a.page.locator("#app:not([hidden])").waitFor();
    await a.page.locator("#signout").click();
    await a.page.locator("#signin:not([hidden])").waitFor();
    assert.equal(await a.page.evaluate(() => sessionStorage.getItem("kefu.admin.key")), null);
    await a.ctx.close();
    a = await signIn(ACME_KEY);
  });

  test("a good edit saves as the next version; rollback restores the one before", async () => {
    const before = await configNow();
    // The shortcut edits the JSON; the prompt carries markup that must stay text.
    await a.page.locator("#sc-prompt").fill(`Be brief. ${XSS}`);
    assert.match(await a.page.locator("#config-text").inputValue(), /Be brief\. <img src=x/);
    await a.page.locator("#config-save").click();
    await a.page.locator("#config-status").filter({ hasText: `Saved as version ${before.version + 1}` }).waitFor();
    const first = await configNow();
    assert.equal(first.version, before.version + 1);
    assert.equal(first.config.system_prompt, `Be brief. ${XSS}`);
    assert.equal(await a.page.locator("#sc-prompt").inputValue(), `Be brief. ${XSS}`);

    // A second edit: hand-offs off.
    await a.page.locator("#sc-handoff").uncheck();
    await a.page.locator("#config-save").click();
    await a.page.locator("#config-status").filter({ hasText: `Saved as version ${before.version + 2}` }).waitFor();
    const second = await configNow();
    assert.equal(second.config.handoff.enabled, false);

    // History lists both; roll back to the first (after confirming).
    const row = a.page.locator(`.versions li[data-version="${first.version}"]`);
    await row.getByRole("button", { name: "Roll back" }).click();
    await a.page.locator("#confirm[open]").waitFor();
    await a.page.locator("#confirm-ok").click();
    await a.page.locator("#config-status").filter({ hasText: `Rolled back to version ${first.version}` }).waitFor();
    const rolled = await configNow();
    assert.equal(rolled.version, before.version + 3);
    assert.deepEqual(rolled.config, first.config);
    assert.equal(await a.page.locator("#sc-handoff").isChecked(), true);
    assert.equal(await a.page.locator('.versions li.current').getAttribute("data-version"), String(rolled.version));
    assert.equal(await a.page.evaluate(() => window.__xss), undefined);
    assert.deepEqual(a.errors, []);
  });

  test("a bad configuration shows the server's error at its field and changes nothing", async () => {
    const before = await configNow();
    await a.page.locator("#sc-prompt").fill("You are Acme Outfitters' assistant. Answer briefly and kindly, in the visitor's language.");
    await editJson(a.page, (d) => ({ ...d, history_window: 1 }));
    await a.page.locator("#config-save").click();
    await a.page.locator("#config-error:not([hidden])").waitFor();
    assert.equal(await a.page.locator("#config-error-code").textContent(), "invalid_config");
    assert.equal(await a.page.locator("#config-error-field").textContent(), "history_window");
    // The offending line is marked and selected.
    const text = await a.page.locator("#config-text").inputValue();
    const line = text.split("\n").findIndex((l) => l.includes('"history_window"')) + 1;
    assert.ok(line > 0);
    assert.equal(await a.page.locator("#line-mark").getAttribute("data-line"), String(line));
    assert.equal(await a.page.locator("#line-mark").isVisible(), true);
    const selected = await a.page.evaluate(() => {
      const t = document.getElementById("config-text");
      return t.value.slice(t.selectionStart, t.selectionEnd);
    });
    assert.match(selected, /"history_window": 1/);
    await shot(a.page, "admin-config-error.png");
    const afterBad = await configNow();
    assert.equal(afterBad.version, before.version);
    assert.deepEqual(afterBad.config, before.config);
    // A nested field: its own key's line, not its parent's.
    await editJson(a.page, (d) => ({ ...d, history_window: 20, knowledge: { ...d.knowledge, top_k: 50 } }));
    await a.page.locator("#config-save").click();
    await a.page.locator("#config-error-field").filter({ hasText: "knowledge.top_k" }).waitFor();
    const lines = (await a.page.locator("#config-text").inputValue()).split("\n");
    assert.match(lines[Number(await a.page.locator("#line-mark").getAttribute("data-line")) - 1], /"top_k": 50/);
    // A misspelt key is a parse error of the whole document: the line it names is marked.
    await editJson(a.page, (d) => ({ ...d, knowledge: { ...d.knowledge, top_k: 3 }, histroy_window: 20 }));
    await a.page.locator("#config-save").click();
    await a.page.locator("#config-error-field").filter({ hasText: /^line \d+$/ }).waitFor();
    const text2 = (await a.page.locator("#config-text").inputValue()).split("\n");
    assert.match(text2[Number(await a.page.locator("#line-mark").getAttribute("data-line")) - 1], /histroy_window/);
    // Text that is not JSON is caught before it leaves the page.
    await a.page.locator("#config-text").fill('{\n  "name": "Acme",\n  "history_window": 20,,\n}');
    await a.page.locator("#config-save").click();
    await a.page.locator("#config-error-code").filter({ hasText: "invalid_json" }).waitFor();
    assert.equal(await a.page.locator("#line-mark").getAttribute("data-line"), "3");
    assert.equal((await configNow()).version, before.version);

    // Reload brings back what is stored (after confirming that the edits go).
    await a.page.locator("#config-reload").click();
    assert.equal(await a.page.locator("#confirm-title").textContent(), "Discard your edits?");
    await a.page.locator("#confirm-ok").click();
    await a.page.locator("#config-error").waitFor({ state: "hidden" });
    assert.equal(await a.page.locator("#line-mark").isVisible(), false);
    assert.deepEqual(JSON.parse(await a.page.locator("#config-text").inputValue()), before.config);
    assert.deepEqual(a.errors, []);
  });

  test("sources upload from a file or pasted text, are listed, found by search and deleted", async () => {
    await a.page.locator('.section-tab[data-section="knowledge"]').click();
    await a.page.locator("#sources-empty:not([hidden])").waitFor();
    await a.page.locator("#src-file").setInputFiles({ name: "Shipping and returns.md", mimeType: "text/markdown", buffer: Buffer.from(SHIPPING) });
    assert.equal(await a.page.locator("#src-kind").inputValue(), "markdown");
    assert.equal(await a.page.locator("#src-id").inputValue(), "shipping-and-returns");
    assert.equal(await a.page.locator("#src-title").inputValue(), "Shipping and returns");
    await a.page.locator("#source-save").click();
    const row = a.page.locator('#sources tr[data-id="shipping-and-returns"]');
    await row.waitFor();
    assert.ok(Number(await row.locator("td.num").first().textContent()) > 1);
    // FAQ CSV from a file: the kind follows the extension.
    await a.page.locator("#src-file").setInputFiles({ name: "faq.csv", mimeType: "text/csv", buffer: Buffer.from(FAQ_CSV) });
    assert.equal(await a.page.locator("#src-kind").inputValue(), "faq_csv");
    await a.page.locator("#src-title").fill("Frequently asked questions");
    await a.page.locator("#source-save").click();
    await a.page.locator('#sources tr[data-id="faq"]').waitFor();
    // Pasted text.
    await a.page.locator("#src-id").fill("hours");
    await a.page.locator("#src-title").fill("Opening hours");
    await a.page.locator("#src-kind").selectOption("text");
    await a.page.locator("#src-body").fill("Our support team answers Monday to Friday, 9:00 to 17:00 Berlin time.");
    await a.page.locator("#source-save").click();
    await a.page.locator('#sources tr[data-id="hours"]').waitFor();

    await a.page.locator("#search-q").fill("parcel refund");
    await a.page.locator("#search-q").press("Enter");
    await a.page.locator("#hits li .score").first().waitFor();
    const hits = await a.page.locator("#hits li").allTextContents();
    assert.ok(hits.some((h) => /parcel/.test(h)), hits.join("\n"));
    await a.page.locator("#search-q").blur();
    await shot(a.page, "admin-knowledge.png", { fullPage: true });

    // Delete (after confirming) takes it out of the list and the API.
    await a.page.locator('#sources tr[data-id="hours"]').getByRole("button", { name: "Delete" }).click();
    await a.page.locator("#confirm-ok").click();
    await a.page.locator('#sources tr[data-id="hours"]').waitFor({ state: "detached" });
    const { sources } = await (await apiGet("/api/v1/knowledge/sources")).json();
    assert.deepEqual(sources.map((s) => s.id).sort(), ["faq", "shipping-and-returns"]);
    assert.deepEqual(a.errors, []);
  });

  test("markup in a source's title and body stays text, in the list and in search results", async () => {
    await a.page.locator("#src-id").fill("xss");
    await a.page.locator("#src-title").fill(`Tricky ${XSS}`);
    await a.page.locator("#src-kind").selectOption("markdown");
    await a.page.locator("#src-body").fill(XSS_BODY);
    await a.page.locator("#source-save").click();
    const row = a.page.locator('#sources tr[data-id="xss"]');
    await row.waitFor();
    assert.match(await row.textContent(), /Tricky <img src=x onerror/);
    await a.page.locator("#search-q").fill("zeppelin");
    await a.page.locator("#search-q").press("Enter");
    await a.page.locator("#hits li").filter({ hasText: "Zeppelin deliveries" }).waitFor();
    assert.match(await a.page.locator("#hits").textContent(), /<script>window.__xss=2<\/script>|<img src=x onerror="window.__xss=3">/);
    assert.equal(await a.page.evaluate(() => window.__xss), undefined);
    assert.equal(await a.page.locator("#section-knowledge img, #section-knowledge script").count(), 0);
    await row.getByRole("button", { name: "Delete" }).click();
    await a.page.locator("#confirm-ok").click();
    await row.waitFor({ state: "detached" });
    assert.deepEqual(a.errors, []);
  });

  test("a question the knowledge base cannot answer appears in the unanswered list", async () => {
    const put = await fetch(kefu.base + "/api/v1/knowledge/sources/faq", {
      method: "PUT",
      headers: { authorization: `Bearer ${QUIET_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ id: "faq", kind: "text", body: "Refunds take five days." }),
    });
    assert.equal(put.status, 200, await put.text());
    const chat = await fetch(kefu.base + "/api/v1/chat", {
      method: "POST",
      headers: { "content-type": "application/json", "x-kefu-tenant": "quiet" },
      body: JSON.stringify({ message: `What is the airspeed of a laden swallow? ${XSS}` }),
    });
    assert.equal((await chat.json()).responder, "no_answer");
    const q = await signIn(QUIET_KEY);
    await q.page.locator('.section-tab[data-section="knowledge"]').click();
    const item = q.page.locator("#unanswered li").first();
    await item.waitFor();
    assert.match(await item.textContent(), /laden swallow\? <img src=x/);
    assert.equal(await q.page.evaluate(() => window.__xss), undefined);
    assert.deepEqual(q.errors, []);
    await q.ctx.close();
  });

  test("unanswered questions in groups: asked three times this week, answered once, then found", async () => {
    const ask = async (message) => {
      const r = await fetch(kefu.base + "/api/v1/chat", {
        method: "POST",
        headers: { "content-type": "application/json", "x-kefu-tenant": "quiet" },
        body: JSON.stringify({ message }),
      });
      assert.equal((await r.json()).responder, "no_answer");
    };
    for (const m of ["Do you ship parcels to Mars?", "can you ship parcels to mars please", "Do you deliver parcels to Mars", "寄到火星要几天？", "寄到火星需要几天"]) await ask(m);
    const q = await signIn(QUIET_KEY);
    await q.page.locator('.section-tab[data-section="knowledge"]').click();
    const mars = q.page.locator("#groups > li").filter({ hasText: "Do you ship parcels to Mars?" });
    await mars.waitFor();
    assert.match(await mars.textContent(), /Asked 3 times this week/);
    assert.match(await mars.locator(".wordings").textContent(), /can you ship parcels to mars please/);
    const chinese = q.page.locator("#groups > li").filter({ hasText: "寄到火星要几天？" });
    assert.match(await chinese.textContent(), /Asked twice this week/);
    const { groups } = await (await apiGet("/api/v1/knowledge/unanswered/groups", QUIET_KEY)).json();
    const key = groups.find((g) => g.question === "Do you ship parcels to Mars?").key;
    assert.equal(await mars.getAttribute("data-key"), key);

    // An empty answer is refused in the page; a written one closes the group.
    await mars.getByRole("button", { name: "Answer" }).click();
    await mars.getByRole("button", { name: "Save answer" }).click();
    assert.match(await mars.locator(".form-error").textContent(), /Write the answer/);
    await mars.getByLabel("Answer", { exact: true }).fill("Not yet: parcels go to Earth addresses only, within two days.");
    assert.equal(await mars.locator(".form-error").textContent(), "", "typing clears the refusal");
    mkdirSync(SHOTS, { recursive: true });
    await q.page.locator("#groups-card").screenshot({ path: resolve(SHOTS, "admin-unanswered-groups.png") });
    await mars.getByRole("button", { name: "Save answer" }).click();
    await q.page.locator(`#groups > li[data-key="${key}"]`).waitFor({ state: "detached" });
    assert.match(await q.page.locator("#groups-status").textContent(), new RegExp(`3 questions closed, saved as source unanswered-${key}`));
    assert.equal(await q.page.locator("#groups > li").filter({ hasText: "寄到火星要几天？" }).count(), 1, "the other group stays");
    await q.page.locator("#sources").getByText("Do you ship parcels to Mars?").first().waitFor();

    // The group's questions now find the answer.
    await q.page.locator("#search-q").fill("can you ship parcels to mars please");
    await q.page.locator("#search-q").press("Enter");
    const hit = q.page.locator("#hits li").first();
    await hit.waitFor();
    assert.match(await hit.textContent(), /Earth addresses only/);
    assert.equal(await q.page.evaluate(() => window.__xss), undefined, "a question in a group stays text");
    assert.deepEqual(q.errors, []);
    await q.ctx.close();
  });

  test("usage renders a bar for today after a chat turn, and tables by route and model", async () => {
    for (const message of ["Where is my parcel?", "Can I return shoes?", "Do you ship abroad?"]) {
      const r = await fetch(kefu.base + "/api/v1/chat", {
        method: "POST",
        headers: { "content-type": "application/json", "x-kefu-tenant": "acme" },
        body: JSON.stringify({ message }),
      });
      assert.equal(r.status, 200, await r.text());
    }
    // Successes reach the tenant's usage object in batches (a quarter second apart).
    let usage;
    for (let i = 0; i < 40; i++) {
      usage = await (await apiGet("/api/v1/usage")).json();
      if (usage.usage.length) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(usage.usage.length, JSON.stringify(usage));
    await a.page.locator('.section-tab[data-section="usage"]').click();
    const today = new Date().toISOString().slice(0, 10);
    const bar = a.page.locator(`#chart rect.bar[data-day="${today}"]`);
    await bar.waitFor();
    assert.ok(Number(await bar.getAttribute("data-value")) > 0, "cost today");
    assert.ok(Number(await bar.getAttribute("height")) > 0);
    assert.equal(await a.page.locator("#chart rect.bar").count(), 14);
    await a.page.locator('.seg-btn[data-metric="tokens"]').click();
    assert.equal(await a.page.locator("#chart-title").textContent(), "Tokens per day");
    assert.ok(Number(await a.page.locator(`#chart rect.bar[data-day="${today}"]`).getAttribute("data-value")) > 0);
    assert.match(await a.page.locator("#by-route").textContent(), /default/);
    assert.match(await a.page.locator("#by-model").textContent(), /mock-gpt/);
    await a.page.locator('.seg-btn[data-metric="cost"]').click();
    await shot(a.page, "admin-usage.png");
    assert.deepEqual(a.errors, []);
  });

  test("a minted agent token is shown once and its link signs in to the console", async () => {
    await a.page.locator('.section-tab[data-section="access"]').click();
    await a.page.locator("#agent-id").fill("sam");
    await a.page.locator("#agent-name").fill("Sam");
    await a.page.getByRole("button", { name: "Mint token" }).click();
    await a.page.locator("#token-out:not([hidden])").waitFor();
    const token = await a.page.locator("#token-value").textContent();
    assert.match(token, /^kfa\./);
    const href = await a.page.locator("#token-link").getAttribute("href");
    assert.equal(href, `/agent/#token=${encodeURIComponent(token)}`);
    const c = await newPage();
    await c.page.goto(kefu.base + href);
    await c.page.locator("#app:not([hidden])").waitFor();
    assert.match(await c.page.locator("#who-name").textContent(), /^Sam\b/);
    await c.ctx.close();
    await a.page.locator("#token-hide").click();
    assert.equal(await a.page.locator("#token-value").textContent(), "");
  });

  test("agents: added, validated at the field, given a token, disabled, signed out everywhere, removed", async () => {
    const inbox = async (token) => {
      const r = await fetch(kefu.base + "/api/v1/conversations", { headers: { authorization: `Bearer ${token}` } });
      return { status: r.status, code: r.ok ? null : (await r.json()).error.code };
    };
    const row = (id) => a.page.locator(`#agents tr[data-id="${id}"]`);
    const agentNow = async (id) => (await configNow()).config.agents?.find((x) => x.id === id);
    await a.page.locator("#agents").getByText("No agents listed").waitFor();

    // Added with a name that is markup: stored as given, shown as text.
    await a.page.locator("#af-id").fill("rio");
    await a.page.locator("#af-name").fill(XSS);
    await a.page.locator("#af-email").fill("rio@example.com");
    await a.page.locator("#af-role").selectOption("supervisor");
    await a.page.getByRole("button", { name: "Add agent" }).click();
    await row("rio").waitFor();
    assert.deepEqual(await agentNow("rio"), { id: "rio", name: XSS, email: "rio@example.com", role: "supervisor" });
    assert.equal(await row("rio").locator("td").nth(1).textContent(), XSS);
    assert.equal(await a.page.locator("#agents img").count(), 0);
    assert.equal(await a.page.evaluate(() => window.__xss), undefined);
    assert.equal(await a.page.locator("#af-id").inputValue(), "", "the form is cleared after adding");

    // The server's validation, shown at the field; nothing is stored.
    const before = await configNow();
    await a.page.locator("#af-id").fill("mo");
    await a.page.locator("#af-name").fill("Mo Okafor");
    await a.page.locator("#af-email").fill("not an email");
    await a.page.getByRole("button", { name: "Add agent" }).click();
    await a.page.locator("#af-email-error").filter({ hasText: "invalid_config" }).waitFor();
    assert.equal(await a.page.locator("#af-email").getAttribute("aria-invalid"), "true");
    assert.equal(await a.page.evaluate(() => document.activeElement.id), "af-email");
    assert.equal((await configNow()).version, before.version);
    await a.page.locator("#af-email").fill("mo@example.com");
    await a.page.getByRole("button", { name: "Add agent" }).click();
    await row("mo").waitFor();
    assert.equal(await a.page.locator("#af-email").getAttribute("aria-invalid"), null);

    // Edited: a new name, and what the form does not show is kept.
    await row("rio").getByRole("button", { name: /^Edit/ }).click();
    assert.equal(await a.page.locator("#af-id").isEditable(), false);
    await a.page.locator("#af-name").fill("Rio Tanaka");
    await a.page.getByRole("button", { name: "Save agent" }).click();
    await row("rio").getByText("Rio Tanaka").waitFor();
    assert.equal((await agentNow("rio")).role, "supervisor");

    // A sign-in token for a listed agent, shown once; it works.
    await row("rio").getByRole("button", { name: /^Sign-in token/ }).click();
    await a.page.locator("#token-out:not([hidden])").waitFor();
    const first = await a.page.locator("#token-value").textContent();
    assert.match(first, /^kfa\./);
    assert.deepEqual(await inbox(first), { status: 200, code: null });
    await a.page.evaluate(() => window.scrollTo(0, 0));
    await shot(a.page, "admin-access.png");

    // Disabled (from the keyboard): the token is refused with its code; enabled: it works again.
    await row("rio").getByRole("button", { name: /^Disable/ }).focus();
    await a.page.keyboard.press("Enter");
    await row("rio").locator(".pill.off").waitFor();
    assert.equal((await agentNow("rio")).disabled, true);
    assert.deepEqual(await inbox(first), { status: 401, code: "agent_disabled" });
    await row("rio").getByRole("button", { name: /^Enable/ }).click();
    await row("rio").locator(".pill.ok").waitFor();
    assert.deepEqual(await inbox(first), { status: 200, code: null });

    // Signed out everywhere: the old token is refused, a new one works — even when the
    // browser's clock is a year behind (the instant is Kefu's).
    await a.page.clock.setFixedTime(Date.now() - 365 * 86_400_000);
    await row("rio").getByRole("button", { name: /^Sign out everywhere/ }).click();
    await a.page.locator("#confirm-ok").click();
    await row("rio").getByText("Any unexpired token").waitFor({ state: "detached" });
    // Set by Kefu's clock (the configuration's `server_time`), not the browser's.
    const notBefore = (await agentNow("rio")).tokens_not_before;
    const serverNow = Date.parse((await configNow()).server_time);
    assert.ok(notBefore > 0 && notBefore <= serverNow && serverNow - notBefore < 60_000, `${notBefore} vs ${serverNow}`);
    assert.deepEqual(await inbox(first), { status: 401, code: "token_revoked" });
    await row("rio").getByRole("button", { name: /^Sign-in token/ }).click();
    await a.page.locator("#token-value").filter({ hasNotText: first }).waitFor();
    assert.deepEqual(await inbox(await a.page.locator("#token-value").textContent()), { status: 200, code: null });

    // With a roster, nobody off it gets a token.
    await a.page.locator("#agent-id").fill("stranger");
    await a.page.getByRole("button", { name: "Mint token" }).click();
    await a.page.locator("#token-error").filter({ hasText: "unknown_agent" }).waitFor();

    // Removed, after a confirmation.
    await row("mo").getByRole("button", { name: /^Remove/ }).click();
    await a.page.locator("#confirm-ok").click();
    await row("mo").waitFor({ state: "detached" });
    assert.equal(await agentNow("mo"), undefined);
    await a.page.locator("#token-hide").click();
    assert.deepEqual(a.errors, []);
  });

  test("plugins: the installed redactor is listed, enabled, tried on a prompt, turned off and removed", async () => {
    await a.page.locator('.section-tab[data-section="plugins"]').click();
    const card = a.page.locator("#installed-plugins .plugin").filter({ hasText: "pii-redactor" });
    await card.waitFor();
    assert.match(await card.textContent(), /before-model/);
    await card.getByRole("button", { name: "Enable pii-redactor" }).click();
    const row = a.page.locator('#tenant-plugins tr[data-id="pii-redactor"]');
    await row.locator(".pill").filter({ hasText: /^On$/ }).waitFor();
    const stored = (await configNow()).config.plugins;
    assert.deepEqual(stored, [{ id: "pii-redactor", plugin: "pii-redactor" }]);

    // Tried before a visitor meets it: the prompt comes back redacted, with Kefu's verdict.
    await a.page.locator("#try-id").selectOption("pii-redactor");
    await a.page.locator("#try-hook").selectOption("before_model");
    await a.page.locator("#try-user").fill(`Mail me at jane@example.com ${XSS}`);
    await a.page.locator("#try-run").click();
    await a.page.locator("#try-out:not([hidden])").waitFor();
    const answer = await a.page.locator("#try-answer").textContent();
    assert.match(answer, /\[email\]/);
    assert.doesNotMatch(answer, /jane@example\.com/);
    assert.match(await a.page.locator("#try-record").textContent(), /rewrote 1 of 2 messages/);
    assert.equal(await a.page.evaluate(() => window.__xss), undefined);
    await shot(a.page, "admin-plugins.png", { fullPage: true });

    await row.getByRole("button", { name: "Turn off: pii-redactor" }).click();
    await row.locator(".pill").filter({ hasText: /^Off$/ }).waitFor();
    assert.equal((await configNow()).config.plugins[0].enabled, false);
    await row.getByRole("button", { name: "Remove: pii-redactor" }).click();
    await a.page.locator("#confirm[open]").waitFor();
    await a.page.locator("#confirm-ok").click();
    await a.page.locator("#tenant-plugins").filter({ hasText: "No plugins enabled" }).waitFor();
    assert.deepEqual((await configNow()).config.plugins ?? [], []);
    assert.deepEqual(a.errors, []);
    await a.page.locator('.section-tab[data-section="access"]').click();
  });

  test("draft & tests: a failing test blocks publishing, shown per case; publish anyway records the reason", async () => {
    const before = await configNow();
    const section = await a.page.locator('.section-tab[aria-selected="true"]').getAttribute("data-section");
    await a.page.locator('.section-tab[data-section="draft"]').click();
    await a.page.locator("#draft-live").filter({ hasText: `live v${before.version}` }).waitFor();
    await a.page.locator("#draft-from-live").click();
    const draft = JSON.parse(await a.page.locator("#draft-text").inputValue());
    draft.system_prompt = "Draft: be brief.";
    await a.page.locator("#draft-text").fill(JSON.stringify(draft, null, 2));
    await a.page.locator("#draft-save").click();
    await a.page.locator("#draft-status").filter({ hasText: "saved" }).waitFor();

    const addTest = async (id, messages, expect) => {
      await a.page.locator("#test-id").fill(id);
      await a.page.locator("#test-messages").fill(messages.join("\n"));
      await a.page.locator("#test-expect").fill(JSON.stringify(expect));
      await a.page.locator("#test-save").click();
      await a.page.locator(`#tests tr[data-test="${id}"]`).waitFor();
    };
    await addTest("shipping", ["Where is my parcel? [mock reply=It_ships_within_2_days]"], [{ kind: "mentions", text: "2 days" }, { kind: "never_mentions", text: "refund" }]);
    await addTest("email-stays-out", ["Hi, I am ana@example.com", "Where is my order?"], [{ kind: "no_pii_to_model" }]);
    // A bad expectation is refused at its field.
    await a.page.locator("#test-id").fill("bad");
    await a.page.locator("#test-messages").fill("hello");
    await a.page.locator("#test-expect").fill('[{"kind": "guess"}]');
    await a.page.locator("#test-save").click();
    await a.page.locator("#test-error").filter({ hasText: "expect[0].kind" }).waitFor();

    // A source staged with the draft, and a staged removal dropped again.
    await a.page.locator("#stage-id").fill("gift-wrap");
    await a.page.locator("#stage-kind").selectOption("text");
    await a.page.locator("#stage-body").fill("Gift wrapping costs 3 euros.");
    await a.page.locator("#stage-save").click();
    await a.page.locator('#staged tr[data-staged="gift-wrap"] .pill').filter({ hasText: "add" }).waitFor();
    const live = await a.page.locator("#stage-remove-id option").first().getAttribute("value");
    await a.page.locator("#stage-remove").click();
    await a.page.locator(`#staged tr[data-staged="${live}"] .pill`).filter({ hasText: "remove" }).waitFor();
    await a.page.getByRole("button", { name: `Drop: ${live}` }).click();
    await a.page.locator(`#staged tr[data-staged="${live}"]`).waitFor({ state: "detached" });
    const liveSources = async () => (await (await apiGet("/api/v1/knowledge/sources")).json()).sources.map((s) => s.id);
    assert.ok(!(await liveSources()).includes("gift-wrap"), "a staged source went live");

    await a.page.locator("#suite-run").click();
    await a.page.locator("#suite-summary").filter({ hasText: "1 of 2 fail" }).waitFor();
    assert.equal(await a.page.locator('#tests tr[data-test="shipping"] .pill').textContent(), "pass");
    assert.equal(await a.page.locator('#tests tr[data-test="email-stays-out"] .pill').textContent(), "fail");
    assert.match(await a.page.locator('#tests tr[data-test="email-stays-out"] .expects .fail').textContent(), /e-mail address/);

    // Publish is refused; the failing case is shown; nothing went live.
    await a.page.locator("#draft-publish").click();
    await a.page.locator("#publish-blocked:not([hidden])").waitFor();
    assert.match(await a.page.locator("#publish-failing").textContent(), /email-stays-out/);
    assert.deepEqual((await configNow()).config, before.config);
    await shot(a.page, "admin-draft-tests.png", { fullPage: true });

    // Publish anyway needs a reason, which the history keeps.
    await a.page.locator("#publish-anyway").click();
    await a.page.locator("#override-error").filter({ hasText: "Say why" }).waitFor();
    await a.page.locator("#override-reason").fill("the redactor plugin is enabled tomorrow");
    await a.page.locator("#publish-anyway").click();
    await a.page.locator("#publish-blocked[hidden]").waitFor({ state: "attached" });
    await a.page.locator("#draft-status").filter({ hasText: "(override)" }).waitFor();
    const after = await configNow();
    assert.equal(after.version, before.version + 1);
    assert.equal(after.config.system_prompt, "Draft: be brief.");
    const history = await (await apiGet("/api/v1/config/versions")).json();
    assert.equal(history.history[0].publication.override, true);
    assert.equal(history.history[0].publication.reason, "the redactor plugin is enabled tomorrow");
    // The staged source went live with the draft, and the draft stages nothing now.
    assert.deepEqual(history.history[0].publication.sources, [{ id: "gift-wrap", change: "put" }]);
    assert.match(await a.page.locator("#draft-status").textContent(), /1 knowledge source/);
    await a.page.locator("#staged-empty:not([hidden])").waitFor();
    assert.ok((await liveSources()).includes("gift-wrap"));
    await a.page.locator('.section-tab[data-section="config"]').click();
    await a.page.locator(".versions li.current").filter({ hasText: "the redactor plugin is enabled tomorrow" }).waitFor();
    // Back where the tests before left the page.
    await a.page.locator(`.section-tab[data-section="${section}"]`).click();
    assert.deepEqual(a.errors, []);
  });

  test("a generated API key works once saved (hashed), and not after removal", async () => {
    await a.page.locator("#key-id").fill("backend");
    await a.page.getByRole("button", { name: "Generate key" }).click();
    await a.page.locator("#key-out:not([hidden])").waitFor();
    const key = await a.page.locator("#key-value").textContent();
    assert.match(key, /^kf-acme\.[A-Za-z0-9]{32}$/);
    const cfg = await configNow();
    assert.deepEqual(cfg.config.api_keys.find((k) => k.id === "backend"), { id: "backend", sha256: keyHash(key) });
    assert.doesNotMatch(JSON.stringify(cfg), new RegExp(key.split(".")[1]));
    assert.equal((await apiGet("/api/v1/config", key)).status, 200);
    await a.page.locator('#keys tr[data-id="backend"]').waitFor();
    // Done forgets it on the page.
    await a.page.locator("#key-hide").click();
    assert.equal(await a.page.evaluate((k) => document.body.innerHTML.includes(k.split(".")[1]), key), false);

    await a.page.locator('#keys tr[data-id="backend"]').getByRole("button", { name: "Remove" }).click();
    await a.page.locator("#confirm-ok").click();
    await a.page.locator('#keys tr[data-id="backend"]').waitFor({ state: "detached" });
    assert.equal((await apiGet("/api/v1/config", key)).status, 401);
    assert.equal((await apiGet("/api/v1/config")).status, 200);
    assert.deepEqual(a.errors, []);
  });

  test("removing the key one is signed in with signs out, after a warning", async () => {
    await a.page.locator('#keys tr[data-id="admin"]').getByRole("button", { name: "Remove" }).click();
    assert.match(await a.page.locator("#confirm-text").textContent(), /the key you are signed in with/);
    await a.page.locator("#confirm-ok").click();
    await a.page.locator("#signin:not([hidden])").waitFor();
    assert.match(await a.page.locator("#signin-error").textContent(), /“admin” you signed in with was removed/);
    assert.equal(await a.page.evaluate(() => sessionStorage.getItem("kefu.admin.key")), null);
    assert.equal(await a.page.locator("#sources tr, #keys tr, #versions li").count(), 0);
    assert.equal((await apiGet("/api/v1/config")).status, 401);
    assert.deepEqual(a.errors, []);
  });
});
